package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// cannedExec answers every operation with resp, or refuses it with opErr.
type cannedExec struct {
	resp  *graphql.Response
	opErr gqlerror.List
}

func (e cannedExec) CreateOperationContext(ctx context.Context, p *graphql.RawParams) (*graphql.OperationContext, gqlerror.List) {
	return &graphql.OperationContext{RawQuery: p.Query}, e.opErr
}

func (e cannedExec) DispatchOperation(ctx context.Context, _ *graphql.OperationContext) (graphql.ResponseHandler, context.Context) {
	return func(context.Context) *graphql.Response { return e.resp }, ctx
}

func (e cannedExec) DispatchError(_ context.Context, list gqlerror.List) *graphql.Response {
	return &graphql.Response{Errors: list}
}

// jsonPOST must answer every request exactly as gqlgen's transport.POST:
// status, headers and body, byte for byte.
func TestJSONPostAnswersAsGqlgen(t *testing.T) {
	yes := true
	protocol := gqlerror.List{{Message: "parse error"}}
	errcode.Set(protocol[0], errcode.ParseFailed)
	answers := map[string]cannedExec{
		"data":              {resp: &graphql.Response{Data: json.RawMessage(`{"customers":{"edges":[{"node":{"name":"A \"quoted\" name\\","n":1}}]}}`)}},
		"empty data":        {resp: &graphql.Response{}},
		"html in data":      {resp: &graphql.Response{Data: json.RawMessage(`{"name":"<b>R&D</b>"}`)}},
		"line separator":    {resp: &graphql.Response{Data: json.RawMessage("{\"name\":\"a\u2028b\"}")}},
		"spaces in data":    {resp: &graphql.Response{Data: json.RawMessage(`{"a": [1, 2]}`)}},
		"spaces in strings": {resp: &graphql.Response{Data: json.RawMessage(`{"a":"x y\tz"}`)}},
		"errors":            {resp: &graphql.Response{Data: json.RawMessage(`{"a":null}`), Errors: gqlerror.List{{Message: "nope", Path: ast.Path{ast.PathName("a")}}}}},
		"extensions":        {resp: &graphql.Response{Data: json.RawMessage(`{"a":1}`), Extensions: map[string]any{"cost": 3}}},
		"incremental":       {resp: &graphql.Response{Data: json.RawMessage(`{"a":1}`), Label: "l", HasNext: &yes}},
		"refused":           {opErr: gqlerror.List{{Message: "bad"}}},
		"protocol error":    {opErr: protocol},
	}
	requests := map[string]func() *http.Request{
		"plain": func() *http.Request { return post(`{"query":"{ a }"}`, "") },
		"accept graphql-response": func() *http.Request {
			return post(`{"query":"{ a }"}`, "application/graphql-response+json")
		},
		"accept any":        func() *http.Request { return post(`{"query":"{ a }"}`, "text/html, */*;q=0.8") },
		"accept other":      func() *http.Request { return post(`{"query":"{ a }"}`, "text/html") },
		"accept garbage":    func() *http.Request { return post(`{"query":"{ a }"}`, ";;, application/json") },
		"not json":          func() *http.Request { return post(`{"query":`, "") },
		"variables as text": func() *http.Request { return post(`{"query":"{ a }","variables":"x"}`, "") },
	}
	for an, exec := range answers {
		for rn, req := range requests {
			gqlgen, ours := httptest.NewRecorder(), httptest.NewRecorder()
			transport.POST{}.Do(gqlgen, req(), exec)
			jsonPOST{}.Do(ours, req(), exec)
			if gqlgen.Code != ours.Code || gqlgen.Header().Get("Content-Type") != ours.Header().Get("Content-Type") ||
				gqlgen.Body.String() != ours.Body.String() {
				t.Errorf("%s, %s: gqlgen answers %d %s\n%s\nOrchard answers %d %s\n%s", an, rn,
					gqlgen.Code, gqlgen.Header().Get("Content-Type"), gqlgen.Body, ours.Code, ours.Header().Get("Content-Type"), ours.Body)
			}
		}
	}
}

func post(body, accept string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if accept != "" {
		r.Header.Set("Accept", accept)
	}
	return r
}

func TestCompacted(t *testing.T) {
	for in, want := range map[string]bool{
		`{"a":"b"}`:                true,
		`{"a":"b c"}`:              true,
		`{"a":"\"<"}`:              false,
		`{"a":"\\"}`:               true,
		`{"a":"\\" }`:              false,
		`{"a":"\" "}`:              true,
		`{"a": 1}`:                 false,
		"{\"a\":1}\n":              false,
		`{"a":"x&y"}`:              false,
		"{\"a\":\"\u2029\"}":       false,
		"{\"a\":\"\u2020\"}":       true,
		`{"a":"unterminated}`:      false,
		`[{"a":[1,2,{"b":null}]}]`: true,
	} {
		if got := compacted([]byte(in)); got != want {
			t.Errorf("compacted(%s) = %v, want %v", in, got, want)
		}
		// The claim is about encoding/json: check it there too.
		if out, err := json.Marshal(json.RawMessage(in)); err == nil && (string(out) == in) != want {
			t.Errorf("encoding/json turns %s into %s; compacted says %v", in, out, want)
		}
	}
}

// BenchmarkCompacted scans an answer shaped like P2's: many short objects
// of names and numbers.
func BenchmarkCompacted(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteString(`{"apps":[`)
	for i := range 3000 {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, `{"node":{"adamID":"%d","name":"App \"%d\" for schools","totalCount":%d}}`, 400000000+i, i, 100+i)
	}
	buf.WriteString(`]}`)
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if !compacted(data) {
			b.Fatal("the answer is compact")
		}
	}
}
