package vpptoken

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/modules/fault"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// golden is what a parse is recorded as: the file's details or the error.
type golden struct {
	OrgName   string    `json:"orgName,omitempty"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	SecretLen int       `json:"secretLen,omitempty"`
	Code      string    `json:"code,omitempty"`
	Message   string    `json:"message,omitempty"`
}

func TestParseGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*")
	if err != nil {
		t.Fatal(err)
	}
	p := &Parser{}
	n := 0
	for _, in := range inputs {
		if strings.HasSuffix(in, ".golden") || strings.Contains(in, "fuzz") {
			continue
		}
		n++
		t.Run(filepath.Base(in), func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var got golden
			f, err := p.Parse(data)
			if err != nil {
				got.Code, got.Message = string(fault.CodeOf(err)), fault.MessageOf(err)
			} else {
				got.OrgName, got.ExpiresAt, got.SecretLen = f.OrgName, f.ExpiresAt, len(f.Secret)
				if !bytes.Equal(f.Secret, bytes.TrimSpace(data)) {
					t.Errorf("secret is not the trimmed file")
				}
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			if err := enc.Encode(got); err != nil {
				t.Fatal(err)
			}
			gotJSON := buf.Bytes()
			goldenPath := in + ".golden"
			if *update {
				if err := os.WriteFile(goldenPath, gotJSON, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(goldenPath)
			if err != nil {
				t.Fatalf("%v (run go test ./modules/tokenfile/vpptoken -update)", err)
			}
			if !bytes.Equal(gotJSON, want) {
				t.Errorf("parse of %s:\n got %s\nwant %s", in, gotJSON, want)
			}
		})
	}
	if n < 10 {
		t.Fatalf("only %d golden inputs found", n)
	}
}

func TestParseSizeCap(t *testing.T) {
	p := &Parser{MaxBytes: 100}
	_, err := p.Parse(bytes.Repeat([]byte("A"), 101))
	if fault.CodeOf(err) != fault.UploadTooLarge {
		t.Fatalf("got %v, want UPLOAD_TOO_LARGE", err)
	}
}

func TestErrorsNeverEchoTheSecret(t *testing.T) {
	data, err := os.ReadFile("testdata/bad_date.vpptoken")
	if err != nil {
		t.Fatal(err)
	}
	_, perr := (&Parser{}).Parse(data)
	if perr == nil || strings.Contains(perr.Error(), string(data)) || strings.Contains(perr.Error(), `"abc"`) {
		t.Fatalf("error %v leaks the file", perr)
	}
}

func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*")
	for _, s := range seeds {
		if strings.HasSuffix(s, ".golden") {
			continue
		}
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	p := &Parser{}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := p.Parse(data)
		if err != nil {
			if c := fault.CodeOf(err); c != fault.InvalidTokenFile && c != fault.WrongTokenKind && c != fault.UploadTooLarge {
				t.Fatalf("unexpected code %s: %v", c, err)
			}
			return
		}
		if file.OrgName == "" || file.ExpiresAt.IsZero() || len(file.Secret) == 0 {
			t.Fatalf("accepted an incomplete file: %+v", file)
		}
	})
}
