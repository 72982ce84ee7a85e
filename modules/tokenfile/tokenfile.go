// Package tokenfile defines the token-file capability: turning the bytes a
// technician uploads into a server token Orchard can use.
//
// Implementations live in subpackages and register as "tokenfile.<name>".
package tokenfile

import (
	"time"

	"github.com/orchard-msp/orchard/modules"
)

// Namespace is the module namespace of token-file parsers.
const Namespace = "tokenfile"

// File is a parsed server token file.
type File struct {
	// OrgName is the organisation the token was issued to.
	OrgName string `json:"orgName"`
	// ExpiresAt is the expiry date written in the file, in UTC.
	ExpiresAt time.Time `json:"expiresAt"`
	// Secret is the credential sent to Apple: the whole file, trimmed.
	// It must never be logged, returned or written unsealed.
	Secret []byte `json:"-"`
}

// Parser parses token files.
type Parser interface {
	modules.Module
	// Parse checks and decodes a token file. Errors are *fault.Error with
	// code INVALID_TOKEN_FILE, WRONG_TOKEN_KIND or UPLOAD_TOO_LARGE and a
	// message that says what to do next.
	Parse(data []byte) (*File, error)
}
