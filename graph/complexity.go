package graph

import (
	"entgo.io/contrib/entgql"

	"github.com/orchard-msp/orchard/ent"
)

type cursor = *entgql.Cursor[int]

// complexity prices every connection by its page size, so a query asking for
// 100 customers × 100 tokens × 100 apps costs what it would load.
func complexity() ComplexityRoot {
	var c ComplexityRoot
	c.Query.Customers = func(child int, _ cursor, first *int, _ cursor, last *int, _ *ent.CustomerOrder, _ *ent.CustomerWhereInput) int {
		return pageCost(child, first, last)
	}
	c.Query.Tokens = func(child int, _ cursor, first *int, _ cursor, last *int, _ *ent.ServerTokenOrder, _ *ent.ServerTokenWhereInput) int {
		return pageCost(child, first, last)
	}
	c.Query.Apps = func(child int, _ cursor, first *int, _ cursor, last *int, _ *ent.AppOrder, _ *ent.AppWhereInput) int {
		return pageCost(child, first, last)
	}
	c.Query.AuditEvents = func(child int, _ cursor, first *int, _ cursor, last *int, _ *ent.AuditEventOrder, _ *ent.AuditEventWhereInput) int {
		return pageCost(child, first, last)
	}
	c.Customer.Tokens = func(child int, _ cursor, first *int, _ cursor, last *int, _ *ent.ServerTokenOrder, _ *ent.ServerTokenWhereInput) int {
		return pageCost(child, first, last)
	}
	c.ServerToken.Apps = func(child int, _ cursor, first *int, _ cursor, last *int, _ *ent.AppOrder, _ *ent.AppWhereInput) int {
		return pageCost(child, first, last)
	}
	return c
}

// pageCost is one for the connection plus its children times the page size.
// Without first or last only totalCount can be asked (see PageLimit).
func pageCost(child int, first, last *int) int {
	n := 1
	switch {
	case first != nil:
		n = max(*first, 1)
	case last != nil:
		n = max(*last, 1)
	}
	return 1 + n*child
}
