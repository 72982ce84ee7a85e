// Package orchard holds the code generation entry point. ent (with entgql) runs
// first because gqlgen reads the schema it writes, and migrategen reads the
// tables ent writes.
package orchard

//go:generate go run -mod=mod ./ent/entc.go
//go:generate go run -mod=mod ./ent/migrategen.go
//go:generate go run -mod=mod ./ent/gqlgen.go
