// Package aesgcm registers "secrets.aesgcm", which seals server tokens with
// AES-256-GCM.
//
// Settings (JSON):
//   - "keys": base64 keys of exactly 32 bytes, newest first. The first seals;
//     all open, so old ciphertexts stay readable during a rotation.
//   - "keyFile": used when "keys" is empty: a file holding one base64 key per
//     line, newest first. It is created with mode 0600 and a fresh random
//     key if it does not exist.
//
// A sealed value is: version byte 1, a 4-byte key ID (the first bytes of
// SHA-256 of the key), a 12-byte random nonce, then the GCM ciphertext and tag.
// The caller's associated data binds it to its row.
package aesgcm

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/secrets"
)

func init() { modules.Register(&Sealer{}) }

const (
	format    = 1
	keyIDLen  = 4
	nonceLen  = 12
	headerLen = 1 + keyIDLen + nonceLen
	// KeySize is the size of an AES-256 key.
	KeySize = 32
)

// Sealer is an AES-256-GCM secrets.Sealer.
type Sealer struct {
	Keys    []string `json:"keys,omitempty"`
	KeyFile string   `json:"keyFile,omitempty"`

	mu      sync.RWMutex
	aeads   []keyed // newest first
	fileMod time.Time
	checked time.Time
}

type keyed struct {
	id   [keyIDLen]byte
	aead cipher.AEAD
}

// Interface guards.
var (
	_ secrets.Sealer      = (*Sealer)(nil)
	_ secrets.Rotator     = (*Sealer)(nil)
	_ modules.Provisioner = (*Sealer)(nil)
)

// ModuleInfo implements modules.Module.
func (*Sealer) ModuleInfo() modules.Info {
	return modules.Info{ID: "secrets.aesgcm", New: func() modules.Module { return new(Sealer) }}
}

// Provision reads or creates the keys.
func (s *Sealer) Provision(context.Context) error {
	keys := s.Keys
	if len(keys) == 0 {
		if s.KeyFile == "" {
			return errors.New("no key: set keys or keyFile")
		}
		var err error
		if keys, err = loadOrCreateKeyFile(s.KeyFile); err != nil {
			return err
		}
		if st, err := os.Stat(s.KeyFile); err == nil {
			s.fileMod = st.ModTime()
		}
	}
	aeads, err := parseKeys(keys)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.aeads = aeads
	s.mu.Unlock()
	return nil
}

// reloadEvery is how often a key file is checked for a rotation.
const reloadEvery = time.Second

// current returns the keys, first re-reading the key file if it changed,
// so `orchard secrets rotate` takes effect in running servers.
func (s *Sealer) current() []keyed {
	if s.KeyFile != "" {
		s.mu.Lock()
		if time.Since(s.checked) >= reloadEvery {
			s.checked = time.Now()
			if st, err := os.Stat(s.KeyFile); err == nil && !st.ModTime().Equal(s.fileMod) {
				if keys, err := loadOrCreateKeyFile(s.KeyFile); err == nil {
					if aeads, err := parseKeys(keys); err == nil {
						s.aeads, s.fileMod = aeads, st.ModTime()
					}
				}
			}
		}
		s.mu.Unlock()
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.aeads
}

func parseKeys(keys []string) ([]keyed, error) {
	var aeads []keyed
	for i, k := range keys {
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(k))
		if err != nil {
			return nil, fmt.Errorf("key %d is not base64", i+1)
		}
		if len(raw) != KeySize {
			return nil, fmt.Errorf("key %d is %d bytes; it must be exactly %d (make one with: openssl rand -base64 32)", i+1, len(raw), KeySize)
		}
		block, _ := aes.NewCipher(raw)
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		aeads = append(aeads, keyed{id: KeyID(raw), aead: aead})
	}
	return aeads, nil
}

// KeyID is the 4-byte identifier a sealed value carries for its key.
func KeyID(key []byte) [keyIDLen]byte {
	sum := sha256.Sum256(key)
	var kid [keyIDLen]byte
	copy(kid[:], sum[:keyIDLen])
	return kid
}

// NewKey returns a fresh random key in the form the settings take.
func NewKey() string {
	b := make([]byte, KeySize)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func loadOrCreateKeyFile(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		key := NewKey()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("creating key file: %w", err)
		}
		if _, err := f.WriteString(key + "\n"); err != nil {
			f.Close()
			return nil, err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, err
		}
		return []string{key}, f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("reading key file: %w", err)
	}
	var keys []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			keys = append(keys, line)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("key file %s holds no key", path)
	}
	return keys, nil
}

// Seal implements secrets.Sealer.
func (s *Sealer) Seal(plaintext, aad []byte) ([]byte, error) {
	keys := s.current()
	if len(keys) == 0 {
		return nil, errors.New("sealer has no key")
	}
	k := keys[0]
	out := make([]byte, headerLen, headerLen+len(plaintext)+k.aead.Overhead())
	out[0] = format
	copy(out[1:], k.id[:])
	if _, err := rand.Read(out[1+keyIDLen : headerLen]); err != nil {
		return nil, err
	}
	return k.aead.Seal(out, out[1+keyIDLen:headerLen], plaintext, aad), nil
}

// ErrOpen is returned for anything that does not open.
var ErrOpen = errors.New("sealed value does not open: wrong key, wrong row or damaged")

// Open implements secrets.Sealer.
func (s *Sealer) Open(sealed, aad []byte) ([]byte, error) {
	if len(sealed) < headerLen+16 || sealed[0] != format {
		return nil, ErrOpen
	}
	for _, k := range s.current() {
		if !bytes.Equal(k.id[:], sealed[1:1+keyIDLen]) {
			continue
		}
		pt, err := k.aead.Open(nil, sealed[1+keyIDLen:headerLen], sealed[headerLen:], aad)
		if err != nil {
			return nil, ErrOpen
		}
		return pt, nil
	}
	return nil, ErrOpen
}

// NeedsRotation implements secrets.Rotator.
func (s *Sealer) NeedsRotation(sealed []byte) bool {
	keys := s.current()
	return len(keys) > 0 && (len(sealed) < headerLen || !bytes.Equal(sealed[1:1+keyIDLen], keys[0].id[:]))
}

// WriteKeyFile replaces a key file atomically with keys, newest first, mode 0600.
func WriteKeyFile(path string, keys []string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".secret.key-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	content := "# Orchard's token sealing keys, newest first. Older keys only open what they sealed.\n" + strings.Join(keys, "\n") + "\n"
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ReadKeyFile returns the keys of a key file, newest first.
func ReadKeyFile(path string) ([]string, error) { return loadOrCreateKeyFile(path) }
