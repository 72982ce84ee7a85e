package graph

import (
	"io"

	"github.com/99designs/gqlgen/graphql"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/graph/model"
	"github.com/orchard-msp/orchard/modules/fault"
)

// maxUploadRead bounds what a resolver reads of an upload; the transport's
// limit (ORCHARD_MAX_UPLOAD_BYTES) is lower and the parser checks it exactly.
const maxUploadRead = 1 << 20

func readUpload(up graphql.Upload) ([]byte, error) {
	if up.File == nil {
		return nil, fault.New(fault.InvalidTokenFile, "No file was uploaded. Choose the .vpptoken file downloaded from Apple Business Manager.")
	}
	data, err := io.ReadAll(io.LimitReader(up.File, maxUploadRead+1))
	if err != nil {
		return nil, fault.Wrap(err, fault.BadUserInput, "The upload could not be read. Try again.")
	}
	if len(data) > maxUploadRead {
		return nil, fault.New(fault.UploadTooLarge, "This file is far larger than a server token (a few KB). Choose the .vpptoken file downloaded from Apple Business Manager.")
	}
	return data, nil
}

func tokenPayload(t *ent.ServerToken, err error) (*model.ServerTokenPayload, error) {
	if err != nil {
		return nil, err
	}
	return &model.ServerTokenPayload{Token: detached(t)}, nil
}

// detached returns a token read inside a domain transaction bound to the
// client instead, so its edges (customer, apps) still resolve after the
// transaction has ended. ent's Unwrap panics on a token that was not read
// in a transaction; that one is returned as it is.
func detached(t *ent.ServerToken) (out *ent.ServerToken) {
	if t == nil {
		return nil
	}
	defer func() {
		if recover() != nil {
			out = t
		}
	}()
	return t.Unwrap()
}

func noder(n ent.Noder, err error) (ent.Noder, error) {
	if err != nil {
		if ent.IsNotFound(err) {
			return nil, fault.New(fault.NotFound, "Nothing with this ID is visible to this API key.")
		}
		return nil, err
	}
	return n, nil
}
