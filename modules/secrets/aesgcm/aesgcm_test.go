package aesgcm

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
)

func newSealer(t testing.TB, keys ...string) *Sealer {
	t.Helper()
	s := &Sealer{Keys: keys}
	if err := s.Provision(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealOpen(t *testing.T) {
	s := newSealer(t, NewKey())
	secret := []byte("the whole vpptoken file")
	sealed, err := s.Seal(secret, []byte("row 1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, secret) {
		t.Fatal("sealed value contains the plaintext")
	}
	t.Run("OK", func(t *testing.T) {
		got, err := s.Open(sealed, []byte("row 1"))
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("Open = %q, %v", got, err)
		}
	})
	t.Run("ErrOtherRow", func(t *testing.T) {
		if _, err := s.Open(sealed, []byte("row 2")); err == nil {
			t.Fatal("a ciphertext moved to another row opened")
		}
	})
	t.Run("ErrOtherKey", func(t *testing.T) {
		if _, err := newSealer(t, NewKey()).Open(sealed, []byte("row 1")); err == nil {
			t.Fatal("opened with another key")
		}
	})
	t.Run("ErrTampered", func(t *testing.T) {
		bad := bytes.Clone(sealed)
		bad[len(bad)-1] ^= 1
		if _, err := s.Open(bad, []byte("row 1")); err == nil {
			t.Fatal("tampered value opened")
		}
	})
}

func TestRotation(t *testing.T) {
	oldKey, newKey := NewKey(), NewKey()
	old := newSealer(t, oldKey)
	sealed, _ := old.Seal([]byte("x"), nil)
	both := newSealer(t, newKey, oldKey)
	if got, err := both.Open(sealed, nil); err != nil || string(got) != "x" {
		t.Fatalf("old value does not open during rotation: %v", err)
	}
	if !both.NeedsRotation(sealed) {
		t.Fatal("old value not flagged for rotation")
	}
	resealed, _ := both.Seal([]byte("x"), nil)
	if both.NeedsRotation(resealed) {
		t.Fatal("new value flagged for rotation")
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "secret.key")
	s := &Sealer{KeyFile: path}
	if err := s.Provision(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v; want 0600", st.Mode().Perm(), err)
	}
	sealed, _ := s.Seal([]byte("y"), nil)
	again := &Sealer{KeyFile: path}
	if err := again.Provision(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := again.Open(sealed, nil); err != nil {
		t.Fatal("reloaded key file does not open earlier values")
	}
}

func TestBadKeys(t *testing.T) {
	for name, k := range map[string]string{
		"short":     base64.StdEncoding.EncodeToString(make([]byte, 16)),
		"notbase64": "!!!",
	} {
		t.Run(name, func(t *testing.T) {
			if err := (&Sealer{Keys: []string{k}}).Provision(context.Background()); err == nil {
				t.Fatal("accepted a bad key")
			}
		})
	}
}

func FuzzOpen(f *testing.F) {
	s := newSealer(f, NewKey())
	good, _ := s.Seal([]byte("seed"), []byte("aad"))
	f.Add(good, []byte("aad"))
	f.Add([]byte{}, []byte{})
	f.Add([]byte{1, 2, 3}, []byte("aad"))
	f.Fuzz(func(t *testing.T, sealed, aad []byte) {
		pt, err := s.Open(sealed, aad)
		if err == nil && !(bytes.Equal(sealed, good) && bytes.Equal(aad, []byte("aad")) && string(pt) == "seed") {
			t.Fatalf("forged value opened: %q", pt)
		}
	})
}
