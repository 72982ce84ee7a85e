package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://orchard:s3cret@db.example:5432/orchard?sslmode=require":    "postgres://…@db.example:5432/orchard?sslmode=require",
		"postgres://orchard:p@ss@db.example/orchard":                           "postgres://…@db.example/orchard",
		"postgres://db.example/orchard?user=orchard&password=s3cret&x=1":       "postgres://db.example/orchard?user=orchard&password=…&x=1",
		"postgres://db.example/orchard?sslmode=disable&PASSWORD=s3cret":        "postgres://db.example/orchard?sslmode=disable&PASSWORD=…",
		"host=db.example user=orchard password=s3cret dbname=orchard":          "host=db.example user=orchard password=… dbname=orchard",
		"host=db.example password='se cret \\' x' dbname=orchard":              "host=db.example password=… dbname=orchard",
		"sqlite:///var/lib/orchard/orchard.db":                                 "sqlite:///var/lib/orchard/orchard.db",
		"postgres://db.example/orchard?sslmode=disable":                        "postgres://db.example/orchard?sslmode=disable",
		"postgres://orchard@db.example/orchard?sslmode=disable&password=x%20y": "postgres://…@db.example/orchard?sslmode=disable&password=…",
	} {
		got := redactURL(in)
		if got != want {
			t.Errorf("redactURL(%q) = %q; want %q", in, got, want)
		}
		for _, secret := range []string{"s3cret", "p@ss", "se cret", "x%20y"} {
			if strings.Contains(got, secret) {
				t.Errorf("redactURL(%q) = %q still shows %q", in, got, secret)
			}
		}
	}
}

// A stray word after serve is an error that says what to do, not ignored.
func TestServeRefusesArguments(t *testing.T) {
	var out, errb bytes.Buffer
	env := map[string]string{"ORCHARD_DATA_DIR": t.TempDir()}
	err := run(context.Background(), []string{"serve", "--listen", "127.0.0.1:0", "8080"}, func(k string) string { return env[k] }, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), `"8080"`) || !strings.Contains(err.Error(), "ORCHARD_") {
		t.Fatalf("orchard serve 8080: %v; want an error naming the argument and saying how to give settings", err)
	}
}
