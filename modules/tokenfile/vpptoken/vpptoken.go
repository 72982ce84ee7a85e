// Package vpptoken registers "tokenfile.vpptoken", the parser of Apple's
// Apps and Books server token files (.vpptoken, the "sToken").
//
// Settings (JSON): "maxBytes", the largest file accepted (default 65536).
//
// A .vpptoken file is standard base64 of a JSON object with "token",
// "expDate" and "orgName". The parser trims surrounding whitespace, checks
// every field and recognises the Automated Device Enrollment token
// (*_smime.p7m) that technicians often pick by mistake.
package vpptoken

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/fault"
	"github.com/orchard-msp/orchard/modules/tokenfile"
)

func init() { modules.Register(&Parser{}) }

// DefaultMaxBytes is the default size cap; real files are well under 2 KB.
const DefaultMaxBytes = 64 << 10

// Apple writes expDate as "2030-11-08T22:33:22+0000": an offset without a
// colon, which RFC 3339 does not allow.
const appleTimeLayout = "2006-01-02T15:04:05Z0700"

const download = "Download the server token from Apple Business Manager > Preferences > Payments and Billing > Apps and Books, and upload that .vpptoken file."

// Parser parses .vpptoken files.
type Parser struct {
	// MaxBytes is the largest file accepted.
	MaxBytes int `json:"maxBytes,omitempty"`
}

// Interface guards.
var (
	_ tokenfile.Parser  = (*Parser)(nil)
	_ modules.Validator = (*Parser)(nil)
)

// ModuleInfo implements modules.Module.
func (*Parser) ModuleInfo() modules.Info {
	return modules.Info{ID: "tokenfile.vpptoken", New: func() modules.Module { return new(Parser) }}
}

// Validate implements modules.Validator.
func (p *Parser) Validate() error {
	if p.MaxBytes < 0 {
		return fmt.Errorf("maxBytes must not be negative")
	}
	return nil
}

func (p *Parser) maxBytes() int {
	if p.MaxBytes > 0 {
		return p.MaxBytes
	}
	return DefaultMaxBytes
}

type payload struct {
	Token   *string `json:"token"`
	ExpDate *string `json:"expDate"`
	OrgName *string `json:"orgName"`
}

func invalid(format string, args ...any) error {
	return fault.New(fault.InvalidTokenFile, "%s %s", fmt.Sprintf(format, args...), download)
}

// Parse implements tokenfile.Parser.
func (p *Parser) Parse(data []byte) (*tokenfile.File, error) {
	if len(data) > p.maxBytes() {
		return nil, fault.New(fault.UploadTooLarge, "This file is %d bytes; a server token is at most %d. %s", len(data), p.maxBytes(), download)
	}
	text := bytes.TrimSpace(data)
	if len(text) == 0 {
		return nil, invalid("The file is empty.")
	}
	if isADEToken(text) {
		return nil, fault.New(fault.WrongTokenKind, "This is an Automated Device Enrollment token (a *_smime.p7m file), not an Apps and Books token. "+download)
	}
	raw, err := base64.StdEncoding.DecodeString(string(text))
	if err != nil {
		return nil, invalid("The file is not a server token: its content is not base64 text.")
	}
	if !utf8.Valid(raw) || !json.Valid(raw) {
		return nil, invalid("The file is not a server token: its decoded content is not JSON.")
	}
	var pl payload
	if err := json.Unmarshal(raw, &pl); err != nil {
		return nil, invalid("The file is not a server token: its JSON is not an object with token, expDate and orgName.")
	}
	var missing []string
	if pl.Token == nil || strings.TrimSpace(*pl.Token) == "" {
		missing = append(missing, "token")
	}
	if pl.ExpDate == nil || strings.TrimSpace(*pl.ExpDate) == "" {
		missing = append(missing, "expDate")
	}
	if pl.OrgName == nil || strings.TrimSpace(*pl.OrgName) == "" {
		missing = append(missing, "orgName")
	}
	if len(missing) > 0 {
		return nil, invalid("The server token is missing the %s field(s).", strings.Join(missing, ", "))
	}
	exp, err := parseExpDate(strings.TrimSpace(*pl.ExpDate))
	if err != nil {
		return nil, invalid("The server token's expiry date %q is not a date Apple writes.", truncate(*pl.ExpDate, 40))
	}
	return &tokenfile.File{
		OrgName:   strings.TrimSpace(*pl.OrgName),
		ExpiresAt: exp,
		Secret:    text,
	}, nil
}

func parseExpDate(s string) (time.Time, error) {
	t, err := time.Parse(appleTimeLayout, s)
	if err != nil {
		t, err = time.Parse(time.RFC3339, s)
	}
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// isADEToken recognises an Automated Device Enrollment server token: an
// S/MIME message (Content-Type: application/pkcs7-mime …) rather than base64 JSON.
func isADEToken(text []byte) bool {
	head := strings.ToLower(string(text[:min(len(text), 512)]))
	return strings.HasPrefix(head, "content-type:") ||
		strings.HasPrefix(head, "mime-version:") ||
		strings.Contains(head, "pkcs7-mime") ||
		strings.Contains(head, "smime.p7m") ||
		strings.Contains(head, "-----begin pkcs7-----")
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
