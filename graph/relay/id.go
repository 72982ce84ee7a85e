// Package relay marshals Orchard's node IDs as opaque Relay global IDs.
//
// ent numbers every row from one global ID space (each type owns a 2^32 range),
// so an int already names its type; on the wire it travels as base64url of
// "orchard:<int>" so clients treat it as an opaque string.
package relay

import (
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/99designs/gqlgen/graphql"

	"github.com/orchard-msp/orchard/modules/fault"
)

const prefix = "orchard:"

// Encode returns the opaque global ID of an ent ID.
func Encode(id int) string {
	return base64.RawURLEncoding.EncodeToString([]byte(prefix + strconv.Itoa(id)))
}

// Decode turns an opaque global ID back into an ent ID.
func Decode(s string) (int, error) {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || !strings.HasPrefix(string(raw), prefix) {
		return 0, fmt.Errorf("%q is not an Orchard ID", s)
	}
	id, err := strconv.Atoi(strings.TrimPrefix(string(raw), prefix))
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%q is not an Orchard ID", s)
	}
	return id, nil
}

// MarshalID writes an ent ID as a GraphQL ID.
func MarshalID(id int) graphql.Marshaler {
	return graphql.WriterFunc(func(w io.Writer) {
		_, _ = io.WriteString(w, strconv.Quote(Encode(id)))
	})
}

// UnmarshalID reads a GraphQL ID into an ent ID.
func UnmarshalID(v any) (int, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fault.New(fault.BadUserInput, "An ID must be a string.")
	}
	id, err := Decode(s)
	if err != nil {
		return 0, fault.New(fault.BadUserInput, "%q is not an Orchard ID: copy the id field of the object.", s)
	}
	return id, nil
}
