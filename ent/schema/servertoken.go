package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/orchard-msp/orchard/ent/schematype"
)

// ServerToken is one Apps and Books server token (.vpptoken) held for a customer.
type ServerToken struct{ ent.Schema }

// Mixin of the ServerToken.
func (ServerToken) Mixin() []ent.Mixin { return []ent.Mixin{TimeMixin{}} }

// Fields of the ServerToken.
func (ServerToken) Fields() []ent.Field {
	return []ent.Field{
		field.Int("customer_id").Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Enum("state").Values("PENDING", "CONFLICT", "ACTIVE", "REVOKED", "INVALID").
			Default("PENDING").
			Annotations(entgql.Type("ServerTokenState"), entgql.OrderField("STATE")),
		field.String("org_name").
			Annotations(entgql.OrderField("ORG_NAME")),
		field.String("location_name").Default("").
			Annotations(entgql.OrderField("LOCATION_NAME")),
		field.String("location_uid"),
		field.String("country_code").Default(""),
		field.String("default_platform").Default("").
			Annotations(entgql.Skip(entgql.SkipWhereInput)),
		field.String("website_url").Default("").
			Annotations(entgql.Skip(entgql.SkipWhereInput)),
		// expires_at is Apple's tokenExpirationDate when Apple reports one,
		// otherwise the file's expDate.
		field.Time("expires_at").
			Annotations(entgql.OrderField("EXPIRES_AT")),
		field.Time("file_expires_at").
			Annotations(entgql.Skip(entgql.SkipAll)),
		// sealed_token is the whole .vpptoken file sealed by the secrets module.
		// It never leaves the domain layer.
		field.Bytes("sealed_token").Sensitive().
			Annotations(entgql.Skip(entgql.SkipAll)),
		// mdm_id is the mdmInfo.id Orchard writes for this location.
		field.String("mdm_id").
			Annotations(entgql.Skip(entgql.SkipAll)),
		// managed_by is the mdmInfo Apple reported at the last check.
		field.JSON("managed_by", &schematype.MDMInfo{}).Optional().
			Annotations(entgql.Type("MDMInfo"), entgql.Skip(entgql.SkipWhereInput, entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput)),
		field.Time("last_synced_at").Optional().Nillable().
			Annotations(entgql.OrderField("LAST_SYNCED_AT")),
		// last_error_code and last_error describe the last failed check, empty after a good one.
		field.String("last_error_code").Default(""),
		field.String("last_error").Default("").
			Annotations(entgql.Skip(entgql.SkipWhereInput)),
		field.Time("last_error_at").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipWhereInput)),
		// warned_days is the smallest threshold (in days) already raised for
		// warned_expiry; a renewal changes expires_at and so starts afresh.
		field.Int("warned_days").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Time("warned_expiry").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		// warned_at is when the last warning was raised; a listener that lost
		// its broker connection catches up from it.
		field.Time("warned_at").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		// next_warn_at is when the next threshold will be crossed; the expiry
		// watcher reads only tokens whose time has come, through its index.
		field.Time("next_warn_at").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		// notification_secret is the bearer secret Apple sends with this
		// location's notifications, sealed like sealed_token; empty while
		// none is registered.
		field.Bytes("notification_secret").Optional().Sensitive().
			Annotations(entgql.Skip(entgql.SkipAll)),
		// notification_url is the URL registered with Apple for it.
		field.String("notification_url").Default("").
			Annotations(entgql.Skip(entgql.SkipAll)),
		// assignments_version is Apple's versionId of the last assignment
		// read; the next sync asks only for what changed since.
		field.String("assignments_version").Default("").
			Annotations(entgql.Skip(entgql.SkipAll)),
	}
}

// Edges of the ServerToken.
func (ServerToken) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("customer", Customer.Type).Ref("tokens").Field("customer_id").
			Unique().Required().Immutable(),
		edge.To("apps", App.Type).
			Annotations(entgql.RelayConnection(), entsql.OnDelete(entsql.Cascade)),
		edge.To("assignments", LicenceAssignment.Type).
			Annotations(entgql.RelayConnection(), entsql.OnDelete(entsql.Cascade)),
		edge.To("licence_operations", LicenceOperation.Type).
			Annotations(entgql.RelayConnection(), entsql.OnDelete(entsql.Cascade)),
	}
}

// Indexes of the ServerToken.
func (ServerToken) Indexes() []ent.Index {
	return []ent.Index{
		// One ACTIVE token per Apple location, whatever the customer: the
		// database, not luck, decides a race between two confirms.
		index.Fields("location_uid").Unique().
			Annotations(entsql.IndexWhere("state = 'ACTIVE'")).StorageKey("servertoken_active_location"),
		// Renewals and ownership checks look tokens up by location.
		index.Fields("location_uid", "state"),
		index.Fields("state", "expires_at"),
		// The expiry watcher's query: state = ACTIVE and next_warn_at <= now.
		index.Fields("state", "next_warn_at"),
		index.Fields("customer_id", "expires_at"),
	}
}

// Annotations of the ServerToken.
func (ServerToken) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.QueryField("tokens"),
		entgql.RelayConnection(),
	}
}
