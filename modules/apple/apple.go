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
//
// # Licences
//
// Assigning licences is asynchronous at Apple. AssociateAssets,
// DisassociateAssets and RevokeAssets only hand Apple the work and return its
// eventId (an EventReceipt); the outcome arrives later, either as
// ASSET_MANAGEMENT notifications (see ParseNotification) or by asking
// EventStatus, which Apple wants no more often than every 30 seconds and only
// after 5 minutes without a notification. An event still PENDING after 10
// minutes should be sent again.
//
// A request Apple refuses outright (more serial numbers than the limit, an
// asset that is not device-assignable, duplicates…) does nothing at Apple;
// the error is an *Error whose Info names the assets, serial numbers and
// user IDs concerned, under a BAD_USER_INPUT fault. Failures of single
// pairs inside an accepted event (9709: no licence left) come back in
// EventStatus.Failures and in the notifications, grouped as Apple groups
// them: one Failure may name several assets and several devices or users,
// and applies to each asset × device and asset × user it names.
//
// Request sizes are bounded by ServiceConfig().Limits, which Apple may
// change at any time; implementations re-read them every 5 minutes.
//
// Assignments reads the location's assignments across all pages and
// returns the versionId to pass as SinceVersionID next time. An incremental
// read lists the assignments made since that version; Apple documents no
// marker for removed ones, so a removal made outside Orchard is only seen by
// a full read. When Apple no longer accepts the version (9721) the read
// falls back to a full one and says so (Assignments.Incremental is false).
//
// UpdateClientConfig registers the location's notification URL and secret;
// Apple sends a TEST_NOTIFICATION there at once and refuses (9728) a URL
// that does not answer it with 2xx.
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
	// NotificationURL and NotificationTypes are the location's notification
	// subscription; empty when none is registered. Apple also returns the
	// registered secret, which is deliberately not carried here.
	NotificationURL   string
	NotificationTypes []NotificationType
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

	// UpdateClientConfig writes mdmInfo and/or the notification
	// subscription (POST client/config) and returns the config Apple
	// answers with. Registering a URL makes Apple send TEST_NOTIFICATION
	// to it before answering.
	UpdateClientConfig(ctx context.Context, token []byte, update ClientConfigUpdate) (*ClientConfig, error)
	// ServiceConfig returns Apple's limits and notification types (GET
	// service/config, which needs no token), read at most every 5 minutes.
	ServiceConfig(ctx context.Context) (*ServiceConfig, error)
	// AssociateAssets assigns every asset to every serial number and user
	// (POST assets/associate).
	AssociateAssets(ctx context.Context, token []byte, req ManageAssets) (*EventReceipt, error)
	// DisassociateAssets takes every asset back from every serial number and
	// user (POST assets/disassociate).
	DisassociateAssets(ctx context.Context, token []byte, req ManageAssets) (*EventReceipt, error)
	// RevokeAssets takes every revocable asset back from the serial numbers
	// and users (POST assets/revoke).
	RevokeAssets(ctx context.Context, token []byte, req RevokeAssets) (*EventReceipt, error)
	// EventStatus reports how far an event has got (GET status).
	EventStatus(ctx context.Context, token []byte, eventID string) (*EventStatus, error)
	// Assignments reads every page of the location's assignments that match
	// q (GET assignments).
	Assignments(ctx context.Context, token []byte, q AssignmentQuery) (*Assignments, error)
}

// Error is an Apple error that has no meaning of its own to Orchard.
type Error struct {
	Number  int
	Message string
	Status  int
	// Info names what the error is about, when Apple says.
	Info ErrorInfo
}

// Error implements error.
func (e *Error) Error() string {
	return fmt.Sprintf("apple error %d (HTTP %d): %s", e.Number, e.Status, e.Message)
}
