package graph

import (
	"log/slog"

	"github.com/99designs/gqlgen/graphql"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/graph/domain"
)

// Resolver is the one place dependencies enter the GraphQL layer.
type Resolver struct {
	client *ent.Client
	svc    *domain.Service
	hub    *domain.Hub
	log    *slog.Logger
}

// NewSchema returns Orchard's executable GraphQL schema.
func NewSchema(svc *domain.Service, hub *domain.Hub, log *slog.Logger) graphql.ExecutableSchema {
	return NewExecutableSchema(Config{
		Resolvers:  &Resolver{client: svc.Client(), svc: svc, hub: hub, log: log},
		Complexity: complexity(),
	})
}
