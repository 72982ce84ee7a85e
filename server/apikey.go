package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/apikey"
	"github.com/orchard-msp/orchard/ent/customer"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph/relay"
	"github.com/orchard-msp/orchard/server/httpapi"
	"github.com/orchard-msp/orchard/server/store"
)

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// apikeyCreate declares `orchard apikey create`'s flags.
func apikeyCreate(fs *flag.FlagSet) action {
	var (
		name      = fs.String("name", "", "a `NAME` that says what the key is for (required)")
		role      = fs.String("role", "admin", "the key's `ROLE`: admin, technician or viewer")
		customers stringList
		expires   = fs.Duration("expires-in", 0, "make the key expire after this `DURATION` (for example 720h); default never")
	)
	fs.Var(&customers, "customer", "scope the key to this customer `ID` (repeatable); default every customer")
	return func(ctx context.Context, c *call) error {
		// Check what needs no database first, so a typo creates nothing.
		if strings.TrimSpace(*name) == "" {
			return usageErrorf("--name is required: say what the key is for")
		}
		r := viewer.Role(*role)
		if !r.Valid() {
			return usageErrorf("--role must be admin, technician or viewer, not %q", *role)
		}
		ids := []int{}
		for _, cu := range customers {
			id, err := relay.Decode(strings.TrimSpace(cu))
			if err != nil {
				return fmt.Errorf("--customer %q is not a customer ID (copy the id field from the customers query)", cu)
			}
			ids = append(ids, id)
		}
		db, err := store.Open(ctx, c.cfg.storeOptions())
		if err != nil {
			return err
		}
		defer db.Close()
		ctx = viewer.SystemContext(ctx)
		client := db.Client
		for i, id := range ids {
			if ok, err := client.Customer.Query().Where(customer.ID(id)).Exist(ctx); err != nil || !ok {
				return fmt.Errorf("--customer %q: no such customer", customers[i])
			}
		}
		key, hash := httpapi.NewAPIKey()
		create := client.APIKey.Create().SetName(strings.TrimSpace(*name)).SetRole(apikey.Role(r)).
			SetCustomerIds(ids).SetHash(hash).SetPrefix(key[:len(httpapi.KeyPrefix)+6])
		if *expires > 0 {
			create.SetExpiresAt(time.Now().Add(*expires))
		}
		if _, err := create.Save(ctx); err != nil {
			return fmt.Errorf("storing the key: %w", err)
		}
		fmt.Fprintln(c.stdout, key)
		return nil
	}
}

// apikeyList runs `orchard apikey list`.
func apikeyList(ctx context.Context, c *call) error {
	db, err := store.Open(ctx, c.cfg.storeOptions())
	if err != nil {
		return err
	}
	defer db.Close()
	ctx = viewer.SystemContext(ctx)
	client := db.Client
	stdout := c.stdout
	keys, err := client.APIKey.Query().Order(ent.Asc(apikey.FieldID)).All(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tROLE\tCUSTOMERS\tPREFIX\tCREATED\tLAST USED\tSTATUS")
	for _, k := range keys {
		scope := "all"
		if len(k.CustomerIds) > 0 {
			parts := make([]string, len(k.CustomerIds))
			for i, id := range k.CustomerIds {
				parts[i] = relay.Encode(id)
			}
			scope = strings.Join(parts, ",")
		}
		status := "active"
		switch {
		case k.RevokedAt != nil:
			status = "revoked " + k.RevokedAt.Format(time.RFC3339)
		case k.ExpiresAt != nil && k.ExpiresAt.Before(time.Now()):
			status = "expired"
		case k.ExpiresAt != nil:
			status = "expires " + k.ExpiresAt.Format(time.RFC3339)
		}
		used := "never"
		if k.LastUsedAt != nil {
			used = k.LastUsedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s…\t%s\t%s\t%s\n", k.ID, k.Name, k.Role, scope, k.Prefix, k.CreatedAt.Format(time.RFC3339), used, status)
	}
	return tw.Flush()
}

// apikeyRevoke runs `orchard apikey revoke ID`.
func apikeyRevoke(ctx context.Context, c *call) error {
	id, err := strconv.Atoi(c.args[0])
	if err != nil {
		return usageErrorf("%q is not a key ID: use the ID column of apikey list", c.args[0])
	}
	db, err := store.Open(ctx, c.cfg.storeOptions())
	if err != nil {
		return err
	}
	defer db.Close()
	ctx = viewer.SystemContext(ctx)
	client := db.Client
	n, err := client.APIKey.Update().Where(apikey.ID(id), apikey.RevokedAtIsNil()).SetRevokedAt(time.Now()).Save(ctx)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("no active key with ID %d", id)
	}
	fmt.Fprintf(c.stderr, "key %d revoked; requests with it are refused from now on\n", id)
	return nil
}
