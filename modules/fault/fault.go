// Package fault is Orchard's one error type: a code from the public contract
// and a message written for the technician in front of the wizard.
//
// Modules, the domain and the data layer return *Error for anything a user can
// act on; every other error is internal, logged in full and shown as
// "internal error".
package fault

import (
	"errors"
	"fmt"
)

// Code is an error code from contract.md; it travels as extensions.code.
type Code string

// The codes of the public contract.
const (
	Unauthenticated           Code = "UNAUTHENTICATED"
	Forbidden                 Code = "FORBIDDEN"
	NotFound                  Code = "NOT_FOUND"
	BadUserInput              Code = "BAD_USER_INPUT"
	InvalidTokenFile          Code = "INVALID_TOKEN_FILE"
	WrongTokenKind            Code = "WRONG_TOKEN_KIND"
	UploadTooLarge            Code = "UPLOAD_TOO_LARGE"
	TokenExpired              Code = "TOKEN_EXPIRED"
	TokenRevoked              Code = "TOKEN_REVOKED"
	TokenInvalid              Code = "TOKEN_INVALID"
	TokenConflict             Code = "TOKEN_CONFLICT"
	TokenOwnedByOtherCustomer Code = "TOKEN_OWNED_BY_OTHER_CUSTOMER"
	InvalidState              Code = "INVALID_STATE"
	AppleRateLimited          Code = "APPLE_RATE_LIMITED"
	AppleUnavailable          Code = "APPLE_UNAVAILABLE"
	Internal                  Code = "INTERNAL"
)

// Error is an error a user can act on.
type Error struct {
	Code    Code
	Message string
	// Err is the cause, kept for logs; it is never shown to the user.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// New returns an *Error with a formatted message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error that keeps err as its cause.
func Wrap(err error, code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}

// CodeOf returns the code of the first *Error in err's chain, or Internal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// MessageOf returns the user-facing message of err: the message of its *Error,
// or "internal error" for anything else.
func MessageOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// Is reports whether err carries code.
func Is(err error, code Code) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// RateLimited is Orchard's addition to the contract's codes: too many
// requests; the HTTP answer is 429 with Retry-After.
const RateLimited Code = "RATE_LIMITED"

// Known reports whether code is one of Orchard's codes.
func Known(code string) bool {
	switch Code(code) {
	case Unauthenticated, Forbidden, NotFound, BadUserInput, InvalidTokenFile, WrongTokenKind,
		UploadTooLarge, TokenExpired, TokenRevoked, TokenInvalid, TokenConflict,
		TokenOwnedByOtherCustomer, InvalidState, AppleRateLimited, AppleUnavailable, Internal, RateLimited:
		return true
	}
	return false
}
