package apple

import (
	"context"
	"time"
)

// AssetID identifies an asset: Apple tells assets apart by the pair of
// adamId and pricingParam ("STDQ" or "PLUS").
type AssetID struct {
	AdamID       string
	PricingParam string
}

// ManageAssets asks for every asset to be assigned to (or taken from) every
// serial number and every user. Apple accepts both lists in one request.
type ManageAssets struct {
	Assets        []AssetID
	SerialNumbers []string
	ClientUserIDs []string
}

// Pairs is how many asset × device and asset × user pairs the request
// names, Apple's numRequested for it.
func (m ManageAssets) Pairs() int {
	return len(m.Assets) * (len(m.SerialNumbers) + len(m.ClientUserIDs))
}

// RevokeAssets names the devices and users whose revocable assets are all
// taken back.
type RevokeAssets struct {
	SerialNumbers []string
	ClientUserIDs []string
}

// EventReceipt is Apple's synchronous answer to a licence request: the work
// is accepted and runs under EventID.
type EventReceipt struct {
	EventID        string
	MDMInfo        *MDMInfo
	TokenExpiresAt time.Time
}

// EventState is Apple's eventStatus.
type EventState string

// The states of an event.
const (
	EventPending  EventState = "PENDING"
	EventComplete EventState = "COMPLETE"
	EventFailed   EventState = "FAILED"
)

// EventType is Apple's eventType.
type EventType string

// The event types Apple reports; Orchard starts the first three.
const (
	EventAssociate    EventType = "ASSOCIATE"
	EventDisassociate EventType = "DISASSOCIATE"
	EventRevoke       EventType = "REVOKE"
	EventCreate       EventType = "CREATE"
	EventUpdate       EventType = "UPDATE"
	EventRetire       EventType = "RETIRE"
)

// EventStatus is where an event stands.
type EventStatus struct {
	EventID string
	State   EventState
	Type    EventType
	// NumCompleted of NumRequested pairs are done (for a revoke, devices
	// and users).
	NumCompleted int
	NumRequested int
	// Failures are the pairs that did not succeed, with Apple's reasons.
	Failures       []Failure
	MDMInfo        *MDMInfo
	TokenExpiresAt time.Time
}

// Done reports whether Apple has finished with the event.
func (s *EventStatus) Done() bool { return s.State != EventPending }

// Failure is one of Apple's error answers about part of an event. It applies
// to each asset × serial number and asset × user it names; a failure that
// names devices or users but no asset applies to all of the event's assets.
type Failure struct {
	Number  int
	Message string
	ErrorInfo
}

// ErrorInfo is Apple's errorInfo: what an error is about.
type ErrorInfo struct {
	Assets        []AssetID
	SerialNumbers []string
	ClientUserIDs []string
}

// Empty reports whether the error names nothing.
func (i ErrorInfo) Empty() bool {
	return len(i.Assets) == 0 && len(i.SerialNumbers) == 0 && len(i.ClientUserIDs) == 0
}

// Assignment is one licence in use: an asset assigned to a device (by serial
// number) or to a user (Apple's clientUserId); exactly one of the two is set.
type Assignment struct {
	AdamID       string
	PricingParam string
	SerialNumber string
	ClientUserID string
}

// AssignmentQuery narrows an assignments read; every field is optional.
type AssignmentQuery struct {
	AdamID       string
	SerialNumber string
	ClientUserID string
	// SinceVersionID, when set, asks only for what changed since the
	// versionId an earlier read returned.
	SinceVersionID string
}

// Assignments is the answer to an assignments read, all pages together.
type Assignments struct {
	Assignments []Assignment
	// VersionID is the version to pass as SinceVersionID next time.
	VersionID string
	// Incremental is true when the answer lists only changes since
	// SinceVersionID; false when it is the full list (no version was given,
	// or Apple no longer knew it).
	Incremental    bool
	Pages          int
	MDMInfo        *MDMInfo
	TokenExpiresAt time.Time
}

// Limits are the request sizes Apple accepts, from service config.
type Limits struct {
	MaxAssets              int
	MaxSerialNumbers       int
	MaxClientUserIDs       int
	MaxRevokeSerialNumbers int
	MaxRevokeClientUserIDs int
	MaxNotificationLength  int
}

// DefaultLimits are the values of Apple's published example; they stand in
// for any limit service config leaves out.
var DefaultLimits = Limits{
	MaxAssets:              25,
	MaxSerialNumbers:       1000,
	MaxClientUserIDs:       1000,
	MaxRevokeSerialNumbers: 100,
	MaxRevokeClientUserIDs: 100,
	MaxNotificationLength:  512,
}

// LimitsFrom reads Apple's limits map; absent or non-positive values take
// DefaultLimits'.
func LimitsFrom(m map[string]int) Limits {
	pick := func(key string, def int) int {
		if v := m[key]; v > 0 {
			return v
		}
		return def
	}
	d := DefaultLimits
	return Limits{
		MaxAssets:              pick("maxAssets", d.MaxAssets),
		MaxSerialNumbers:       pick("maxSerialNumbers", d.MaxSerialNumbers),
		MaxClientUserIDs:       pick("maxClientUserIds", d.MaxClientUserIDs),
		MaxRevokeSerialNumbers: pick("maxRevokeSerialNumbers", d.MaxRevokeSerialNumbers),
		MaxRevokeClientUserIDs: pick("maxRevokeClientUserIds", d.MaxRevokeClientUserIDs),
		MaxNotificationLength:  pick("maxNotificationLength", d.MaxNotificationLength),
	}
}

// ServiceConfig is what Apple's service config says, as Orchard uses it.
type ServiceConfig struct {
	Limits Limits
	// NotificationTypes are the types a location can subscribe to.
	NotificationTypes []NotificationType
	// FetchedAt is when this copy was read from Apple.
	FetchedAt time.Time
}

// ServiceConfigRefresher is implemented by clients that cache service
// config. Apple may shrink its limits between two reads; a request it then
// refuses as too large (9700–9702) is worth cutting again by fresh limits
// rather than failing.
type ServiceConfigRefresher interface {
	// RefreshServiceConfig reads service config from Apple again unless the
	// copy held was read after olderThan (another caller refreshed it).
	RefreshServiceConfig(ctx context.Context, olderThan time.Time) (*ServiceConfig, error)
}

// ClientConfigUpdate is a POST client/config; nil parts are not sent.
type ClientConfigUpdate struct {
	// MDMInfo needs all three fields (Apple error 9723 otherwise).
	MDMInfo       *MDMInfo
	Notifications *NotificationSettings
}

// NotificationSettings subscribe a location to Apple's notifications.
type NotificationSettings struct {
	// URL is where Apple POSTs; Apple wants HTTPS, a host and a path.
	URL string
	// AuthToken is the secret Apple sends back as "Authorization: Bearer".
	AuthToken string
	// Types is the complete set subscribed to.
	Types []NotificationType
}

// String keeps the secret out of logs.
func (n NotificationSettings) String() string {
	return "notifications to " + n.URL
}
