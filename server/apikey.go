package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/apikey"
	"github.com/orchard-msp/orchard/ent/customer"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph/relay"
)

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// apikeyCommand runs `orchard apikey create|list|revoke`.
func apikeyCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: orchard apikey create|list|revoke [flags]")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("apikey "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		name      = fs.String("name", "", "what the key is for (required for create)")
		role      = fs.String("role", "admin", "admin, technician or viewer")
		customers stringList
		expires   = fs.Duration("expires-in", 0, "make the key expire after this long (for example 720h); default never")
	)
	fs.Var(&customers, "customer", "scope the key to this customer ID (repeatable); default every customer")
	cfgArgs, rest := splitFlags(args, fs)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	cfg, _, err := loadConfig("apikey", cfgArgs, getenv, stderr)
	if err != nil {
		return err
	}
	db, err := openDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx = viewer.SystemContext(ctx)
	client := db.Client

	switch sub {
	case "create":
		if strings.TrimSpace(*name) == "" {
			return errors.New("--name is required: say what the key is for")
		}
		r := viewer.Role(*role)
		if !r.Valid() {
			return fmt.Errorf("--role must be admin, technician or viewer, not %q", *role)
		}
		ids := []int{}
		for _, c := range customers {
			id, err := relay.Decode(strings.TrimSpace(c))
			if err != nil {
				return fmt.Errorf("--customer %q is not a customer ID (copy the id field from the customers query)", c)
			}
			if ok, err := client.Customer.Query().Where(customer.ID(id)).Exist(ctx); err != nil || !ok {
				return fmt.Errorf("--customer %q: no such customer", c)
			}
			ids = append(ids, id)
		}
		key, hash := newAPIKey()
		create := client.APIKey.Create().SetName(strings.TrimSpace(*name)).SetRole(apikey.Role(r)).
			SetCustomerIds(ids).SetHash(hash).SetPrefix(key[:len(keyPrefix)+6])
		if *expires > 0 {
			create.SetExpiresAt(time.Now().Add(*expires))
		}
		if _, err := create.Save(ctx); err != nil {
			return fmt.Errorf("storing the key: %w", err)
		}
		fmt.Fprintln(stdout, key)
		return nil
	case "list":
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
	case "revoke":
		extra := fs.Args()
		if len(extra) != 1 {
			return errors.New("usage: orchard apikey revoke ID (the ID column of apikey list)")
		}
		id, err := strconv.Atoi(extra[0])
		if err != nil {
			return fmt.Errorf("%q is not a key ID from apikey list", extra[0])
		}
		n, err := client.APIKey.Update().Where(apikey.ID(id), apikey.RevokedAtIsNil()).SetRevokedAt(time.Now()).Save(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("no active key with ID %d", id)
		}
		fmt.Fprintf(stderr, "key %d revoked; requests with it are refused from now on\n", id)
		return nil
	}
	return fmt.Errorf("unknown apikey command %q: use create, list or revoke", sub)
}

// splitFlags separates the configuration flags (shared with serve) from the
// command's own, so `apikey create --data-dir X --name Y` works in any order.
func splitFlags(args []string, own *flag.FlagSet) (cfgArgs, rest []string) {
	isCfg := map[string]bool{}
	for _, s := range settings {
		isCfg[s.flag] = true
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name := strings.TrimLeft(a, "-")
		name, _, hasValue := strings.Cut(name, "=")
		if strings.HasPrefix(a, "-") && isCfg[name] && own.Lookup(name) == nil {
			cfgArgs = append(cfgArgs, a)
			if !hasValue && i+1 < len(args) {
				i++
				cfgArgs = append(cfgArgs, args[i])
			}
			continue
		}
		rest = append(rest, a)
	}
	return cfgArgs, rest
}
