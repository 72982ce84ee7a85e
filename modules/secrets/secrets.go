// Package secrets defines the capability that seals server tokens at rest.
//
// Implementations live in subpackages and register as "secrets.<name>".
package secrets

import "github.com/orchard-msp/orchard/modules"

// Namespace is the module namespace of sealers.
const Namespace = "secrets"

// Sealer encrypts and authenticates small secrets.
type Sealer interface {
	modules.Module
	// Seal encrypts plaintext and binds it to aad (associated data that is
	// authenticated but not stored), under the current key version.
	Seal(plaintext, aad []byte) ([]byte, error)
	// Open reverses Seal. It returns an error, never panics, on any input
	// that was not sealed by a known key with the same aad.
	Open(sealed, aad []byte) ([]byte, error)
}

// Rotator is implemented by sealers that can move sealed values to a new key.
type Rotator interface {
	// NeedsRotation reports whether sealed is under an older key version.
	NeedsRotation(sealed []byte) bool
}
