// Package schematype holds the small value types that ent fields store as JSON.
// It imports nothing from ent so the schema, the generated code and the
// GraphQL layer can all share it.
package schematype

// MDMInfo is Apple's mdmInfo object: which device management service holds a
// location. All three fields are required when Orchard writes it (Apple error 9723).
type MDMInfo struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Metadata string `json:"metadata"`
}
