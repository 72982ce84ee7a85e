package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
)

// APIKey is a bearer key a frontend or a technician uses to call Orchard.
// Only the SHA-256 of the key is stored; the key itself is shown once.
type APIKey struct{ ent.Schema }

// Mixin of the APIKey.
func (APIKey) Mixin() []ent.Mixin { return []ent.Mixin{TimeMixin{}} }

// Fields of the APIKey.
func (APIKey) Fields() []ent.Field {
	return []ent.Field{
		field.String("name").NotEmpty().Validate(maxRunes(200)),
		field.Enum("role").Values("admin", "technician", "viewer").Default("admin"),
		// customer_ids scopes the key; empty means every customer.
		field.Ints("customer_ids").Default([]int{}),
		// prefix is the first characters of the key, safe to show in listings.
		field.String("prefix"),
		field.Bytes("hash").Unique().Sensitive(),
		field.Time("expires_at").Optional().Nillable(),
		field.Time("revoked_at").Optional().Nillable(),
		field.Time("last_used_at").Optional().Nillable(),
	}
}

// Annotations of the APIKey.
func (APIKey) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
