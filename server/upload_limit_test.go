package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// oversized is how much the clients below try to upload: far above the
// 64 KiB limit, as a wrong file picked in a browser would be.
const oversized = 20 << 20

// multipartHead is the start of an upload request whose file part is
// followed by size bytes of content and the closing boundary.
func multipartHead() (head, tail []byte, contentType string) {
	const boundary = "orchardtestboundary"
	var b bytes.Buffer
	fmt.Fprintf(&b, "--%s\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n", boundary)
	fmt.Fprintf(&b, `{"query":"mutation($f: Upload!) { uploadServerToken(input: {customerID: \"x\", file: $f}) { token { id } } }","variables":{"f":null}}`)
	fmt.Fprintf(&b, "\r\n--%s\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{\"0\":[\"variables.f\"]}", boundary)
	fmt.Fprintf(&b, "\r\n--%s\r\nContent-Disposition: form-data; name=\"0\"; filename=\"big.vpptoken\"\r\nContent-Type: application/octet-stream\r\n\r\n", boundary)
	return b.Bytes(), []byte("\r\n--" + boundary + "--\r\n"), "multipart/form-data; boundary=" + boundary
}

// rawUpload sends an oversized upload the way fetch and urllib do: the
// whole body at once, without "Expect: 100-continue", and only then reads
// the answer. chunked sends it without a Content-Length.
func rawUpload(t *testing.T, s *testServer, key string, chunked bool) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	head, tail, ct := multipartHead()
	w := bufio.NewWriterSize(conn, 64<<10)
	fmt.Fprintf(w, "POST /graphql HTTP/1.1\r\nHost: orchard.test\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\n", key, ct)
	chunk := bytes.Repeat([]byte("A"), 64<<10)
	var body io.Writer = w
	if chunked {
		fmt.Fprintf(w, "Transfer-Encoding: chunked\r\n\r\n")
		body = chunkWriter{w}
	} else {
		fmt.Fprintf(w, "Content-Length: %d\r\n\r\n", len(head)+oversized+len(tail))
	}
	if _, err := body.Write(head); err != nil {
		t.Fatalf("sending the upload: %v", err)
	}
	for sent := 0; sent < oversized; sent += len(chunk) {
		if _, err := body.Write(chunk); err != nil {
			t.Fatalf("the upload was cut after %d bytes, before its answer could be read: %v", sent, err)
		}
	}
	if _, err := body.Write(tail); err != nil {
		t.Fatalf("sending the upload: %v", err)
	}
	if chunked {
		_, _ = w.WriteString("0\r\n\r\n")
	}
	if err := w.Flush(); err != nil {
		t.Fatalf("the upload was cut before its answer could be read: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer's body: %v", err)
	}
	return resp, string(b)
}

type chunkWriter struct{ w *bufio.Writer }

func (c chunkWriter) Write(p []byte) (int, error) {
	fmt.Fprintf(c.w, "%x\r\n", len(p))
	n, err := c.w.Write(p)
	_, _ = c.w.WriteString("\r\n")
	return n, err
}

// Every client that streams an oversized upload without waiting for
// "100 Continue" reads the 413 and its code instead of a reset connection.
func TestOversizedUploadIsAnswered(t *testing.T) {
	s := startServer(t, nil)
	key := s.key()
	for _, chunked := range []bool{false, true} {
		name := "ContentLength"
		if chunked {
			name = "Chunked"
		}
		t.Run("Raw"+name, func(t *testing.T) {
			resp, body := rawUpload(t, s, key, chunked)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, `"UPLOAD_TOO_LARGE"`) {
				t.Fatalf("got HTTP %d %s; want 413 UPLOAD_TOO_LARGE", resp.StatusCode, body)
			}
		})
	}
	t.Run("NodeFetch", func(t *testing.T) {
		node, err := exec.LookPath("node")
		if err != nil {
			t.Skip("node is not installed")
		}
		ops := `{"query":"mutation($f: Upload!) { uploadServerToken(input: {customerID: \"x\", file: $f}) { token { id } } }","variables":{"f":null}}`
		out := runClient(t, node, []string{"-e", nodeUploadScript}, s, key, "OPS="+ops)
		if !strings.HasPrefix(out, "413 ") || !strings.Contains(out, `"UPLOAD_TOO_LARGE"`) {
			t.Fatalf("fetch got %s; want 413 UPLOAD_TOO_LARGE", out)
		}
	})
	t.Run("PythonUrllib", func(t *testing.T) {
		python, err := exec.LookPath("python3")
		if err != nil {
			t.Skip("python3 is not installed")
		}
		head, tail, ct := multipartHead()
		const script = `
import os, sys, urllib.request, urllib.error
body = open(os.environ["HEAD"], "rb").read() + b"A" * int(os.environ["SIZE"]) + open(os.environ["TAIL"], "rb").read()
req = urllib.request.Request(os.environ["URL"], data=body, method="POST",
    headers={"Authorization": "Bearer " + os.environ["KEY"], "Content-Type": os.environ["CT"]})
try:
    r = urllib.request.urlopen(req, timeout=30)
    print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except Exception as e:
    print("failed", repr(e))
    sys.exit(1)
`
		dir := t.TempDir()
		_ = os.WriteFile(dir+"/head", head, 0o600)
		_ = os.WriteFile(dir+"/tail", tail, 0o600)
		out := runClient(t, python, []string{"-c", script}, s, key, "HEAD="+dir+"/head", "TAIL="+dir+"/tail", "CT="+ct)
		if !strings.HasPrefix(out, "413 ") || !strings.Contains(out, `"UPLOAD_TOO_LARGE"`) {
			t.Fatalf("urllib got %s; want 413 UPLOAD_TOO_LARGE", out)
		}
	})
}

// nodeUploadScript posts a multipart upload with Node's fetch and FormData,
// as a browser would: the operations field is $OPS, the file $BLOB bytes
// (else $SIZE); it prints the status and the body.
const nodeUploadScript = `
const fd = new FormData();
fd.append('operations', process.env.OPS);
fd.append('map', JSON.stringify({'0': ['variables.f']}));
fd.append('0', new Blob([new Uint8Array(Number(process.env.BLOB || process.env.SIZE))]), 'token.vpptoken');
fetch(process.env.URL, {method: 'POST', body: fd, headers: {Authorization: 'Bearer ' + process.env.KEY}})
  .then(async r => console.log(r.status, await r.text()))
  .catch(e => { console.log('failed', e, e.cause); process.exit(1); });
`

func runClient(t *testing.T, bin string, args []string, s *testServer, key string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), append(env, "URL="+s.URL+"/graphql", "KEY="+key, fmt.Sprintf("SIZE=%d", oversized))...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", bin, err, out)
	}
	return strings.TrimSpace(string(out))
}

// An upload whose operations leave out "variables", or are null, while the
// map names variables.f is refused with what to send, not an internal
// error (gqlgen panics assigning the file into the missing variables).
func TestUploadWithoutVariablesIsBadUserInput(t *testing.T) {
	s := startServer(t, nil)
	key := s.key()
	for name, ops := range map[string]string{
		"NoVariables":    `{"query":"mutation($f: Upload!) { uploadServerToken(input: {customerID: \"x\", file: $f}) { token { id } } }"}`,
		"NullOperations": `null`,
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			mw := multipart.NewWriter(&buf)
			_ = mw.WriteField("operations", ops)
			_ = mw.WriteField("map", `{"0":["variables.f"]}`)
			fw, _ := mw.CreateFormFile("0", "token.vpptoken")
			_, _ = fw.Write([]byte("hello"))
			_ = mw.Close()
			req, _ := http.NewRequest(http.MethodPost, s.URL+"/graphql", &buf)
			req.Header.Set("Content-Type", mw.FormDataContentType())
			req.Header.Set("Authorization", "Bearer "+key)
			r := s.do(req)
			if r.Status != http.StatusBadRequest || r.code() != "BAD_USER_INPUT" || !strings.Contains(r.Raw, "must carry a variables object") {
				t.Fatalf("got HTTP %d %s; want 400 BAD_USER_INPUT saying to send the variables", r.Status, r.Raw)
			}
		})
	}
	t.Run("NodeFetch", func(t *testing.T) {
		node, err := exec.LookPath("node")
		if err != nil {
			t.Skip("node is not installed")
		}
		ops := `{"query":"mutation($f: Upload!) { uploadServerToken(input: {customerID: \"x\", file: $f}) { token { id } } }"}`
		out := runClient(t, node, []string{"-e", nodeUploadScript}, s, key, "OPS="+ops, "BLOB=5")
		if !strings.HasPrefix(out, "400 ") || !strings.Contains(out, `"BAD_USER_INPUT"`) {
			t.Fatalf("node got %s; want 400 BAD_USER_INPUT", out)
		}
	})
}
