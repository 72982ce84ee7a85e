// Package model holds the GraphQL types that gqlgen generates for the hand-written schema.
package model
