package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// A stray word after serve is an error that says what to do, not ignored.
func TestServeRefusesArguments(t *testing.T) {
	var out, errb bytes.Buffer
	env := map[string]string{"ORCHARD_DATA_DIR": t.TempDir()}
	err := run(context.Background(), []string{"serve", "--listen", "127.0.0.1:0", "8080"}, func(k string) string { return env[k] }, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), `"8080"`) || !strings.Contains(err.Error(), "ORCHARD_") {
		t.Fatalf("orchard serve 8080: %v; want an error naming the argument and saying how to give settings", err)
	}
}
