// Package console serves Orchard's web console: static files embedded in the
// binary, served at "/" and "/console/", that talk only to /graphql like any
// other client. Every response carries a Content-Security-Policy with no
// unsafe-inline or unsafe-eval, and assets are sent gzipped (compressed once,
// at start) to clients that accept it.
package console

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"
)

//go:embed static
var files embed.FS

// Options are the settings the page needs before it can ask the API anything.
type Options struct {
	// MaxUploadBytes lets the wizard refuse an oversized file before sending it.
	MaxUploadBytes int64
}

type asset struct {
	body, gz    []byte
	contentType string
	etag        string
}

// importMap matches the page's one inline script, the import map that lets
// the vendored modules import "preact" by name. The CSP allows exactly that
// script by its hash, so no other inline script can run.
var importMap = regexp.MustCompile(`(?s)<script type="importmap">(.*?)</script>`)

// Handler serves the console page at "/" and its files under "/console/".
func Handler(opts Options) http.Handler {
	assets := map[string]*asset{}
	err := fs.WalkDir(files, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "static/")
		if name == "index.html" {
			b = bytes.ReplaceAll(b, []byte("{{MAX_UPLOAD_BYTES}}"), []byte(strconv.FormatInt(opts.MaxUploadBytes, 10)))
		}
		assets[name] = newAsset(name, b)
		return nil
	})
	if err != nil {
		panic(err) // the files are compiled in: this cannot fail at run time
	}
	page := assets["index.html"]
	m := importMap.FindSubmatch(page.body)
	if m == nil {
		panic("console: index.html has no import map")
	}
	sum := sha256.Sum256(m[1])
	csp := strings.Join([]string{
		"default-src 'none'",
		"script-src 'self' 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'",
		"style-src 'self'",
		// App icons come from Apple's CDN.
		"img-src 'self' https: data:",
		"connect-src 'self'",
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		name := "index.html"
		if r.URL.Path != "/" {
			name = strings.TrimPrefix(r.URL.Path, "/console/")
		}
		a, ok := assets[name]
		if !ok || strings.HasPrefix(name, ".") {
			http.NotFound(w, r)
			return
		}
		// Revalidated on each load (cheap with the ETag), so an upgraded
		// binary's console never runs against stale modules.
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		h.Set("Vary", "Accept-Encoding")
		h.Set("Content-Type", a.contentType)
		if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, a.etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		body := a.body
		if a.gz != nil && acceptsGzip(r.Header.Get("Accept-Encoding")) {
			h.Set("Content-Encoding", "gzip")
			body = a.gz
		}
		h.Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(body)
	})
}

func newAsset(name string, b []byte) *asset {
	ct := mime.TypeByExtension(path.Ext(name))
	switch path.Ext(name) {
	case ".js":
		ct = "text/javascript; charset=utf-8"
	case "":
		ct = "text/plain; charset=utf-8" // the licence files
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	sum := sha256.Sum256(b)
	a := &asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(b)
	_ = zw.Close()
	if buf.Len() < len(b) {
		a.gz = buf.Bytes()
	}
	return a
}

// acceptsGzip reads Accept-Encoding, honouring an explicit q=0.
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") && strings.TrimSpace(coding) != "*" {
			continue
		}
		q := strings.ReplaceAll(params, " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}
