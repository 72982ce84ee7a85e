package simulator_test

import (
	"context"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/apple/simulator"
	"github.com/orchard-msp/orchard/modules/fault"
)

func TestScenarios(t *testing.T) {
	c, err := modules.Load[apple.Client](context.Background(), "apple.simulator", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	year := time.Now().AddDate(1, 0, 0)

	other := simulator.ScenarioToken("N", year, "location=Northwind;uid=7;mdm=Jamf Pro;apps=12")
	cfg, err := c.ClientConfig(ctx, other)
	if err != nil || cfg.LocationUID != "7" || cfg.MDMInfo == nil || cfg.MDMInfo.Name != "Jamf Pro" {
		t.Fatalf("other MDM: %+v, %v", cfg, err)
	}
	if _, err := c.SetMDMInfo(ctx, other, apple.MDMInfo{ID: "o", Name: "Orchard", Metadata: "m"}); err != nil {
		t.Fatal(err)
	}
	if cfg, _ = c.ClientConfig(ctx, other); cfg.MDMInfo.Name != "Orchard" {
		t.Fatalf("claim did not stick: %+v", cfg.MDMInfo)
	}
	assets, err := c.Assets(ctx, other)
	if err != nil || len(assets.Assets) != 12 {
		t.Fatalf("assets: %v, %v", assets, err)
	}

	for state, code := range map[string]fault.Code{
		"revoked": fault.TokenRevoked, "expired": fault.TokenExpired, "invalid": fault.TokenInvalid,
		"ratelimited": fault.AppleRateLimited, "unavailable": fault.AppleUnavailable,
	} {
		_, err := c.ClientConfig(ctx, simulator.ScenarioToken("X", year, "uid=9;state="+state))
		if fault.CodeOf(err) != code {
			t.Errorf("state=%s: got %v, want %s", state, err, code)
		}
	}
	if _, err := c.ClientConfig(ctx, []byte("garbage")); fault.CodeOf(err) != fault.TokenInvalid {
		t.Errorf("garbage token: %v", err)
	}
}
