package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/orchard-msp/orchard/graph"
)

// jsonPOST is gqlgen's POST transport (transport.POST, whose Supports it
// keeps) with a cheaper way of writing an answer that is only data.
// gqlgen encodes every answer with json.Marshal, which runs the
// already-marshalled data through encoding/json's compactor again: for a
// list of a few thousand nodes that was a tenth of the request's CPU
// (issue 15, P2). Data that the compactor would leave unchanged (no
// whitespace outside strings, nothing it escapes for HTML) is written as it
// is; anything else, and every answer with errors or extensions, goes
// through json.Marshal as before, so the bytes are the same either way.
type jsonPOST struct{ transport.POST }

const (
	mediaJSON            = "application/json"
	mediaGraphQLResponse = "application/graphql-response+json"
)

func (h jsonPOST) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	ctx := r.Context()
	contentType := responseContentType(r)
	w.Header().Add("Content-Type", contentType)
	start := graphql.Now()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeResponse(w, exec.DispatchError(ctx, gqlerror.List{gqlerror.Errorf("could not read request body: %+v", err)}))
		return
	}
	params := &graphql.RawParams{}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(params); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		writeResponse(w, exec.DispatchError(ctx, gqlerror.List{gqlerror.Errorf("json request body could not be decoded: %+v body:%s", err, body)}))
		return
	}
	params.Headers = r.Header
	params.ReadTime = graphql.TraceTiming{Start: start, End: graphql.Now()}
	rc, opErr := exec.CreateOperationContext(ctx, params)
	if opErr != nil {
		w.WriteHeader(statusFor(opErr, contentType))
		writeResponse(w, exec.DispatchError(graphql.WithOperationContext(ctx, rc), opErr))
		return
	}
	responses, ctx := exec.DispatchOperation(ctx, rc)
	resp := responses(ctx)
	writeResponse(w, resp)
	if resp != nil {
		// Written out (or copied by json.Marshal): its buffer can serve the
		// next answer.
		graph.ReleaseResponseData(resp.Data)
	}
}

// responseContentType picks the answer's media type from Accept the way
// transport.POST does without ResponseHeaders: application/json unless the
// client asks for application/graphql-response+json, or names neither.
func responseContentType(r *http.Request) string {
	accept := r.Header.Get("Accept")
	if accept == "" {
		return mediaJSON
	}
	for part := range strings.SplitSeq(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "*/*", "application/*", mediaJSON:
			return mediaJSON
		case mediaGraphQLResponse:
			return mediaGraphQLResponse
		}
	}
	return mediaGraphQLResponse
}

// statusFor is the status of an operation refused before it ran, as
// transport.POST answers it.
func statusFor(errs gqlerror.List, contentType string) int {
	if errcode.GetErrorKind(errs) != errcode.KindProtocol {
		return http.StatusOK
	}
	if contentType == mediaGraphQLResponse {
		return http.StatusBadRequest
	}
	return http.StatusUnprocessableEntity
}

var (
	dataOpen  = []byte(`{"data":`)
	dataClose = []byte(`}`)
	jsonNull  = []byte(`null`)
)

// writeResponse writes resp as json.Marshal would.
func writeResponse(w io.Writer, resp *graphql.Response) {
	if resp != nil && len(resp.Errors) == 0 && resp.Label == "" && resp.Path == nil && resp.HasNext == nil &&
		len(resp.Extensions) == 0 && compacted(resp.Data) {
		data := []byte(resp.Data)
		if len(data) == 0 {
			data = jsonNull
		}
		_, _ = w.Write(dataOpen)
		_, _ = w.Write(data)
		_, _ = w.Write(dataClose)
		return
	}
	b, err := json.Marshal(resp)
	if err != nil {
		panic(fmt.Errorf("unable to marshal %s: %w", resp.Data, err))
	}
	_, _ = w.Write(b)
}

// compacted reports whether encoding/json's compactor would return b
// unchanged: no whitespace between tokens, and none of the characters it
// escapes for HTML (<, >, &, U+2028, U+2029). b is JSON gqlgen wrote.
// Most bytes of an answer are none of these: one table lookup passes them.
func compacted(b []byte) bool {
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !compactStop[c] {
			continue
		}
		switch {
		case c == '<' || c == '>' || c == '&':
			return false
		case c == 0xE2:
			if i+2 < len(b) && b[i+1] == 0x80 && (b[i+2] == 0xA8 || b[i+2] == 0xA9) {
				return false
			}
		case inString:
			switch c {
			case '\\':
				i++ // the escaped character cannot end the string
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			return false
		}
	}
	return !inString
}

// compactStop marks the bytes compacted must look at.
var compactStop = func() (t [256]bool) {
	for _, c := range []byte("<>&\"\\ \t\n\r\xE2") {
		t[c] = true
	}
	return t
}()
