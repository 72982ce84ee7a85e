package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// App is one asset (app or book) bought under a server token, with its licence counts.
type App struct{ ent.Schema }

// Mixin of the App.
func (App) Mixin() []ent.Mixin { return []ent.Mixin{TimeMixin{}} }

// Fields of the App.
func (App) Fields() []ent.Field {
	return []ent.Field{
		field.Int("token_id").Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		// customer_id copies the token's customer so scope checks need no join.
		field.Int("customer_id").Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("adam_id").
			Annotations(entgql.OrderField("ADAM_ID")),
		field.String("pricing_param"),
		field.Enum("product_type").Values("APP", "BOOK").
			Annotations(entgql.Type("ProductType"), entgql.OrderField("PRODUCT_TYPE")),
		field.String("name").Optional().Nillable().
			Annotations(entgql.OrderField("NAME")),
		field.String("bundle_id").Optional().Nillable(),
		field.String("icon_url").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipWhereInput)),
		field.Int("total_count").Default(0).
			Annotations(entgql.OrderField("TOTAL_COUNT")),
		field.Int("assigned_count").Default(0).
			Annotations(entgql.OrderField("ASSIGNED_COUNT")),
		field.Int("available_count").Default(0).
			Annotations(entgql.OrderField("AVAILABLE_COUNT")),
		field.Int("retired_count").Default(0),
		field.Bool("unlimited").Default(false),
		field.Strings("supported_platforms").Default([]string{}).
			Annotations(entgql.Skip(entgql.SkipWhereInput)),
		// metadata_at is when name, bundle ID and icon were last looked up;
		// the lookup is repeated rarely, and not at all for fresh rows.
		field.Time("metadata_at").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		// low_licence_threshold overrides ORCHARD_LICENCE_WARN_AVAILABLE for
		// this app; null: the default.
		field.Int("low_licence_threshold").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipWhereInput)),
		// licence_warned lists the warning levels (LOW, EXHAUSTED) raised
		// since the app was last above its threshold: once per crossing.
		// The SQL default lets the migration add the column to a table
		// that already has rows.
		field.Strings("licence_warned").Default([]string{}).
			Annotations(entgql.Skip(entgql.SkipAll), entsql.Default("[]")),
	}
}

// Edges of the App.
func (App) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("token", ServerToken.Type).Ref("apps").Field("token_id").
			Unique().Required().Immutable(),
		edge.To("assignments", LicenceAssignment.Type).
			Annotations(entgql.Skip(entgql.SkipAll)),
	}
}

// Indexes of the App.
func (App) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("token_id", "adam_id", "pricing_param").Unique(),
		index.Fields("customer_id"),
	}
}

// Annotations of the App.
func (App) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.QueryField(),
		entgql.RelayConnection(),
	}
}
