package graph

import (
	"context"
	"errors"
	"log/slog"

	"entgo.io/ent/privacy"
	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/modules/fault"
)

// ErrorPresenter maps every error to a code from the contract. Errors a user
// can act on keep their message; everything else is logged in full and shown
// as "internal error".
func ErrorPresenter(log *slog.Logger) graphql.ErrorPresenterFunc {
	return func(ctx context.Context, err error) *gqlerror.Error {
		gerr := graphql.DefaultErrorPresenter(ctx, err)
		code, msg := classify(err, gerr)
		if code == fault.Internal {
			log.ErrorContext(ctx, "graphql internal error", "path", gerr.Path.String(), "err", err)
			msg = "internal error"
		}
		if gerr.Extensions == nil {
			gerr.Extensions = map[string]any{}
		}
		if prev, ok := gerr.Extensions["code"].(string); ok && prev != string(code) {
			gerr.Extensions["reason"] = prev
		}
		gerr.Extensions["code"] = string(code)
		gerr.Message = msg
		return gerr
	}
}

func classify(err error, gerr *gqlerror.Error) (fault.Code, string) {
	var fe *fault.Error
	switch {
	case errors.As(err, &fe):
		return fe.Code, fe.Message
	case errors.Is(err, privacy.Deny):
		return fault.Forbidden, "This API key may not do this."
	case ent.IsNotFound(err):
		return fault.NotFound, "No such object is visible to this API key."
	case ent.IsValidationError(err):
		return fault.BadUserInput, err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return fault.Internal, ""
	}
	// Errors from parsing, validating and decoding the request itself.
	code, _ := gerr.Extensions["code"].(string)
	if fault.Known(code) && code != string(fault.Internal) {
		return fault.Code(code), gerr.Message // set by one of Orchard's extensions
	}
	switch code {
	case "GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT", "COMPLEXITY_LIMIT_EXCEEDED", "PERSISTED_QUERY_NOT_FOUND":
		return fault.BadUserInput, gerr.Message
	}
	var ge *gqlerror.Error
	if errors.As(err, &ge) && ge.Unwrap() == nil && len(ge.Path) == 0 {
		// An error gqlgen raised about the request (unknown operation, bad
		// variables), not one a resolver returned.
		return fault.BadUserInput, ge.Message
	}
	return fault.Internal, ""
}

// Recover turns a panic in a resolver into an internal error, logged with its value.
func Recover(log *slog.Logger) graphql.RecoverFunc {
	return func(ctx context.Context, v any) error {
		log.ErrorContext(ctx, "graphql resolver panic", "panic", v)
		return errors.New("internal error")
	}
}
