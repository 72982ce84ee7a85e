// Package playground serves GraphiQL from files embedded in the binary, so the
// Playground works on a machine with no internet access.
package playground

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed index.html playground.js assets/*.js assets/*.css
var files embed.FS

// Handler serves the Playground page at "/playground" and its assets under "/playground/".
func Handler() http.Handler {
	assets, err := fs.Sub(files, "assets")
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	static := http.StripPrefix("/playground/", http.FileServerFS(assets))
	mux.Handle("GET /playground/playground.js", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		http.ServeFileFS(w, r, files, "playground.js")
	}))
	mux.Handle("GET /playground/", cached(static))
	mux.Handle("GET /playground", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'; font-src 'self' data:; img-src 'self' data:")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		http.ServeFileFS(w, r, files, "index.html")
	}))
	return mux
}

func cached(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=86400")
		h.ServeHTTP(w, r)
	})
}
