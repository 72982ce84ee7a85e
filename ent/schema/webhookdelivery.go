package schema

import (
	"time"

	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// WebhookDelivery is the outbox of the notify module: a warning is written
// here in the same transaction that records it, and delivered from here, so
// none is lost to a crash or a receiver that is down.
type WebhookDelivery struct{ ent.Schema }

// Fields of the WebhookDelivery.
func (WebhookDelivery) Fields() []ent.Field {
	return []ent.Field{
		field.String("delivery_id").Unique().Immutable(),
		field.String("event").Immutable(),
		field.Bytes("payload").Immutable(),
		field.Int("customer_id").Immutable(),
		field.Time("created_at").Default(time.Now).Immutable(),
		field.Int("attempts").Default(0),
		field.Time("next_attempt_at"),
		field.Time("delivered_at").Optional().Nillable(),
		// abandoned_at is set when delivery is given up after its retry window.
		field.Time("abandoned_at").Optional().Nillable(),
		field.String("last_error").Default(""),
	}
}

// Indexes of the WebhookDelivery.
func (WebhookDelivery) Indexes() []ent.Index {
	return []ent.Index{index.Fields("delivered_at", "abandoned_at", "next_attempt_at")}
}

// Annotations of the WebhookDelivery.
func (WebhookDelivery) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}

// Policy of the WebhookDelivery: written and read by Orchard only.
func (WebhookDelivery) Policy() ent.Policy {
	return privacyPolicy(systemOnly())
}
