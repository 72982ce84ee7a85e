package domain

import (
	"context"
	"strings"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/customer"
	"github.com/orchard-msp/orchard/modules/fault"
)

// CreateCustomer creates a customer. Names are trimmed, 1–200 characters and
// unique regardless of case.
func (s *Service) CreateCustomer(ctx context.Context, name string) (c *ent.Customer, err error) {
	defer func() { s.audit(ctx, "customer.create", idOf(c), nil, err, name) }()
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	name, err = trimName(name)
	if err != nil {
		return nil, err
	}
	c, err = s.client.Customer.Create().SetName(name).SetNameKey(strings.ToLower(name)).Save(ctx)
	if ent.IsConstraintError(err) {
		return nil, fault.New(fault.BadUserInput, "A customer named %q already exists. Pick another name or use the existing customer.", name)
	}
	return c, err
}

// UpdateCustomer renames a customer.
func (s *Service) UpdateCustomer(ctx context.Context, id int, name *string) (c *ent.Customer, err error) {
	defer func() { s.audit(ctx, "customer.update", &id, nil, err, "") }()
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	upd := s.client.Customer.UpdateOneID(id)
	if name != nil {
		n, err := trimName(*name)
		if err != nil {
			return nil, err
		}
		upd.SetName(n).SetNameKey(strings.ToLower(n))
	}
	c, err = upd.Save(ctx)
	switch {
	case ent.IsConstraintError(err):
		return nil, fault.New(fault.BadUserInput, "A customer named %q already exists.", *name)
	case err != nil:
		return nil, notFound(err, "customer")
	}
	return c, nil
}

// DeleteCustomer deletes a customer that has no server tokens left.
func (s *Service) DeleteCustomer(ctx context.Context, id int) (err error) {
	defer func() { s.audit(ctx, "customer.delete", &id, nil, err, "") }()
	if _, err := caller(ctx); err != nil {
		return err
	}
	return withTx(ctx, s.client, func(tx *ent.Tx) error {
		c, err := tx.Customer.Get(ctx, id)
		if err != nil {
			return notFound(err, "customer")
		}
		n, err := c.QueryTokens().Count(ctx)
		if err != nil {
			return err
		}
		if n > 0 {
			return fault.New(fault.InvalidState, "%s still has %d server token(s). Delete or cancel them first, then delete the customer.", c.Name, n)
		}
		if err := tx.Customer.DeleteOneID(id).Where(customer.ID(id)).Exec(ctx); err != nil {
			return notFound(err, "customer")
		}
		return nil
	})
}

func idOf(c *ent.Customer) *int {
	if c == nil {
		return nil
	}
	return &c.ID
}
