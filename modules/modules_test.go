package modules_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/orchard-msp/orchard/modules"
)

type greeter interface {
	modules.Module
	Greet() string
}

type hello struct {
	Word        string `json:"word"`
	provisioned bool
}

func (*hello) ModuleInfo() modules.Info {
	return modules.Info{ID: "greeter.hello", New: func() modules.Module { return new(hello) }}
}
func (h *hello) Provision(context.Context) error { h.provisioned = true; return nil }
func (h *hello) Validate() error {
	if h.Word == "bad" {
		return errors.New("word must not be bad")
	}
	return nil
}
func (h *hello) Greet() string { return h.Word }

var (
	_ greeter             = (*hello)(nil)
	_ modules.Provisioner = (*hello)(nil)
	_ modules.Validator   = (*hello)(nil)
)

type other struct{}

func (other) ModuleInfo() modules.Info {
	return modules.Info{ID: "greeter.other", New: func() modules.Module { return other{} }}
}

func init() {
	modules.Register(&hello{})
	modules.Register(other{})
}

func TestLoad(t *testing.T) {
	ctx := context.Background()
	t.Run("OK", func(t *testing.T) {
		g, err := modules.Load[greeter](ctx, "greeter.hello", json.RawMessage(`{"word":"hi"}`))
		if err != nil {
			t.Fatal(err)
		}
		if g.Greet() != "hi" || !g.(*hello).provisioned {
			t.Fatalf("got %+v, want a provisioned module greeting hi", g)
		}
	})
	t.Run("ErrUnknownListsKnown", func(t *testing.T) {
		_, err := modules.Load[greeter](ctx, "greeter.nope", nil)
		if err == nil || !strings.Contains(err.Error(), "greeter.hello, greeter.other") {
			t.Fatalf("got %v, want the known IDs listed", err)
		}
	})
	t.Run("ErrUnknownNamespace", func(t *testing.T) {
		_, err := modules.Load[greeter](ctx, "nothing.here", nil)
		if err == nil || !strings.Contains(err.Error(), "forgotten import") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("ErrUnknownConfigKey", func(t *testing.T) {
		_, err := modules.Load[greeter](ctx, "greeter.hello", json.RawMessage(`{"wrod":"hi"}`))
		if err == nil || !strings.Contains(err.Error(), "wrod") {
			t.Fatalf("got %v, want the typo named", err)
		}
	})
	t.Run("ErrValidate", func(t *testing.T) {
		_, err := modules.Load[greeter](ctx, "greeter.hello", json.RawMessage(`{"word":"bad"}`))
		if err == nil || !strings.Contains(err.Error(), "must not be bad") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("ErrWrongCapability", func(t *testing.T) {
		_, err := modules.Load[greeter](ctx, "greeter.other", nil)
		if err == nil || !strings.Contains(err.Error(), "not a") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestRegisterPanics(t *testing.T) {
	for name, m := range map[string]modules.Module{
		"duplicate": &hello{},
		"malformed": badID{},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("Register did not panic")
				}
			}()
			modules.Register(m)
		})
	}
}

type badID struct{}

func (badID) ModuleInfo() modules.Info {
	return modules.Info{ID: "NoDot", New: func() modules.Module { return badID{} }}
}

func TestIDs(t *testing.T) {
	ids := modules.IDs("greeter")
	if len(ids) != 2 || ids[0] != "greeter.hello" || ids[0].Namespace() != "greeter" || ids[0].Name() != "hello" {
		t.Fatalf("IDs = %v", ids)
	}
}
