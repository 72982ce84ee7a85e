package schema

import (
	"time"

	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/orchard-msp/orchard/ent/schematype"
)

// LicenceOperation is one assignLicences, unassignLicences or revokeLicences
// as the technician asked for it. Apple does the work asynchronously in one
// or more events (LicenceEvent); the operation ends when they all have.
type LicenceOperation struct{ ent.Schema }

// Fields of the LicenceOperation.
func (LicenceOperation) Fields() []ent.Field {
	return []ent.Field{
		field.Int("token_id").Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		// customer_id copies the token's customer so scope checks need no join.
		field.Int("customer_id").Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Enum("kind").Values("ASSIGN", "UNASSIGN", "REVOKE").Immutable().
			Annotations(entgql.Type("LicenceOperationKind")),
		field.Enum("status").Values("PENDING", "COMPLETE", "PARTIAL", "FAILED").Default("PENDING").
			Annotations(entgql.Type("LicenceOperationStatus")),
		// requested counts asset × (device or user) pairs; for a revoke the
		// devices and users named.
		field.Int("requested").Immutable(),
		field.Int("completed").Default(0),
		field.JSON("failures", []schematype.LicenceFailure{}).Default([]schematype.LicenceFailure{}).
			Annotations(entgql.Type("[LicenceFailure!]"), entgql.Skip(entgql.SkipWhereInput)),
		// The request as asked, kept so the audit and the console can show it.
		field.JSON("assets", []schematype.AssetRef{}).Default([]schematype.AssetRef{}).Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Strings("serial_numbers").Default([]string{}).Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Strings("client_user_ids").Default([]string{}).Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Time("created_at").Default(time.Now).Immutable().
			Annotations(entgql.OrderField("CREATED_AT")),
		field.Time("completed_at").Optional().Nillable(),
	}
}

// Edges of the LicenceOperation.
func (LicenceOperation) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("token", ServerToken.Type).Ref("licence_operations").Field("token_id").
			Unique().Required().Immutable(),
		edge.To("events", LicenceEvent.Type).
			Annotations(entgql.Skip(entgql.SkipAll), entsql.OnDelete(entsql.Cascade)),
	}
}

// Indexes of the LicenceOperation.
func (LicenceOperation) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("token_id", "created_at"),
		index.Fields("customer_id"),
	}
}

// Annotations of the LicenceOperation.
func (LicenceOperation) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection()}
}

// LicenceEvent is one request of an operation sent to Apple (associate,
// disassociate or revoke, cut to Apple's size limits) and how far Apple got
// with it. It is followed to its end by notification and by polling, by
// whichever instance leads the jobs, so it survives a restart.
type LicenceEvent struct{ ent.Schema }

// Fields of the LicenceEvent.
func (LicenceEvent) Fields() []ent.Field {
	return []ent.Field{
		field.Int("operation_id").Immutable(),
		field.Int("token_id").Immutable(),
		field.Int("customer_id").Immutable(),
		field.JSON("assets", []schematype.AssetRef{}).Default([]schematype.AssetRef{}).Immutable(),
		field.Strings("serial_numbers").Default([]string{}).Immutable(),
		field.Strings("client_user_ids").Default([]string{}).Immutable(),
		field.Int("requested").Immutable(),
		// state: UNSENT until Apple accepted the request, PENDING until it
		// ended, then COMPLETE (something succeeded) or FAILED.
		field.Enum("state").Values("UNSENT", "PENDING", "COMPLETE", "FAILED").Default("UNSENT"),
		// event_id is Apple's eventId; a resend replaces it.
		field.String("event_id").Default(""),
		field.Int("completed").Default(0),
		// results holds each pair Apple has reported on, "adamId|pricing|s:serial"
		// → errorNumber (0: done), so a notification repeated or split
		// counts each pair once.
		field.JSON("results", map[string]int{}).Default(map[string]int{}),
		field.JSON("failures", []schematype.LicenceFailure{}).Default([]schematype.LicenceFailure{}),
		field.Time("sent_at").Optional().Nillable(),
		// next_check_at is when the job looks at the event again: sends it,
		// asks Apple's status, or resends it. It is also the lease: an
		// instance moves it forward before acting.
		field.Time("next_check_at"),
		field.Int("checks").Default(0),
		field.Int("resends").Default(0),
		field.Int("send_failures").Default(0),
		field.Time("notified_at").Optional().Nillable(),
	}
}

// Edges of the LicenceEvent.
func (LicenceEvent) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("operation", LicenceOperation.Type).Ref("events").Field("operation_id").
			Unique().Required().Immutable(),
	}
}

// Indexes of the LicenceEvent.
func (LicenceEvent) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("state", "next_check_at"),
		index.Fields("event_id"),
		index.Fields("operation_id"),
	}
}

// Annotations of the LicenceEvent.
func (LicenceEvent) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}

// LicenceAssignment is one licence in use at Apple: an asset assigned to a
// device (serial number) or a user (clientUserId), as the token's last
// assignment sync and Orchard's own operations left it.
type LicenceAssignment struct{ ent.Schema }

// Fields of the LicenceAssignment.
func (LicenceAssignment) Fields() []ent.Field {
	return []ent.Field{
		field.Int("token_id").Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int("customer_id").Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		// app_id is null while Orchard has not synced the asset.
		field.Int("app_id").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("adam_id").Immutable().
			Annotations(entgql.OrderField("ADAM_ID")),
		field.String("pricing_param").Immutable(),
		field.String("serial_number").Optional().Nillable().Immutable().
			Annotations(entgql.OrderField("SERIAL_NUMBER")),
		field.String("client_user_id").Optional().Nillable().Immutable().
			Annotations(entgql.OrderField("CLIENT_USER_ID")),
		// target is "s:SERIAL" or "u:USER": one column for the unique index,
		// as NULLs never collide in one.
		field.String("target").Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Time("created_at").Default(time.Now).Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
	}
}

// Edges of the LicenceAssignment.
func (LicenceAssignment) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("token", ServerToken.Type).Ref("assignments").Field("token_id").
			Unique().Required().Immutable(),
		edge.From("app", App.Type).Ref("assignments").Field("app_id").Unique(),
	}
}

// Indexes of the LicenceAssignment.
func (LicenceAssignment) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("token_id", "adam_id", "pricing_param", "target").Unique(),
		index.Fields("token_id", "serial_number"),
		index.Fields("token_id", "client_user_id"),
		index.Fields("customer_id"),
	}
}

// Annotations of the LicenceAssignment.
func (LicenceAssignment) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection()}
}

// AppleNotification records each notification Apple delivered, by its
// notificationId, so a repeated delivery changes nothing the second time.
type AppleNotification struct{ ent.Schema }

// Fields of the AppleNotification.
func (AppleNotification) Fields() []ent.Field {
	return []ent.Field{
		field.String("notification_id").Unique().Immutable(),
		field.String("type").Immutable(),
		field.Int("token_id").Optional().Nillable().Immutable(),
		field.Time("received_at").Default(time.Now).Immutable(),
	}
}

// Indexes of the AppleNotification.
func (AppleNotification) Indexes() []ent.Index {
	return []ent.Index{index.Fields("received_at")}
}

// Annotations of the AppleNotification.
func (AppleNotification) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
