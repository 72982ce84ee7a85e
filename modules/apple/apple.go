// Package apple defines the capability that talks to Apple's Apps and Books
// (App and Book Management) API in Orchard's terms.
//
// Implementations live in subpackages and register as "apple.<name>":
// "apple.appsandbooks" is the real API over HTTPS, "apple.simulator" an
// in-process fake for demos and offline work.
//
// Errors are *fault.Error: TOKEN_EXPIRED (Apple 9621), TOKEN_INVALID (9622,
// 9722, 9601), TOKEN_REVOKED (9625), APPLE_RATE_LIMITED and APPLE_UNAVAILABLE
// (after retries); other Apple errors are wrapped in *Error.
package apple

import (
	"context"
	"fmt"
	"time"

	"github.com/orchard-msp/orchard/modules"
)

// Namespace is the module namespace of Apple clients.
const Namespace = "apple"

// MDMInfo is Apple's mdmInfo: which MDM manages a location.
type MDMInfo struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Metadata string `json:"metadata"`
}

// ClientConfig is what Apple says about the location a token belongs to.
type ClientConfig struct {
	LocationUID     string
	LocationName    string
	CountryCode     string
	DefaultPlatform string
	WebsiteURL      string
	// MDMInfo is nil when no MDM has claimed the location.
	MDMInfo *MDMInfo
	// TokenExpiresAt is zero when Apple did not report it.
	TokenExpiresAt time.Time
}

// Asset is one app or book bought for a location.
type Asset struct {
	AdamID             string
	PricingParam       string
	ProductType        string // "App" or "Book"
	TotalCount         int
	AssignedCount      int
	AvailableCount     int
	RetiredCount       int
	Unlimited          bool
	SupportedPlatforms []string
}

// Assets is every asset of a location, read across all pages.
type Assets struct {
	Assets    []Asset
	VersionID string
	// MDMInfo and TokenExpiresAt are from the response envelope.
	MDMInfo        *MDMInfo
	TokenExpiresAt time.Time
	Pages          int
}

// Metadata is the store's description of an asset.
type Metadata struct {
	Name     string
	BundleID string
	IconURL  string
}

// Client is the Apps and Books API as Orchard uses it. token is the whole
// .vpptoken file (Apple's sToken).
type Client interface {
	modules.Module
	// ClientConfig reads the location's client config (GET client/config).
	ClientConfig(ctx context.Context, token []byte) (*ClientConfig, error)
	// SetMDMInfo writes Orchard's mdmInfo (POST client/config) and returns
	// the config Apple answers with.
	SetMDMInfo(ctx context.Context, token []byte, info MDMInfo) (*ClientConfig, error)
	// Assets reads every page of the location's assets (GET assets).
	Assets(ctx context.Context, token []byte) (*Assets, error)
	// Metadata looks up names, bundle IDs and icons for adamIDs in a storefront.
	// Missing IDs are absent from the result.
	Metadata(ctx context.Context, token []byte, storefront, platform string, adamIDs []string) (map[string]Metadata, error)
}

// Error is an Apple error that has no meaning of its own to Orchard.
type Error struct {
	Number  int
	Message string
	Status  int
}

// Error implements error.
func (e *Error) Error() string {
	return fmt.Sprintf("apple error %d (HTTP %d): %s", e.Number, e.Status, e.Message)
}
