package apple

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// NotificationType is Apple's notificationType.
type NotificationType string

// The notification types Apple documents.
const (
	NotifyTest                   NotificationType = "TEST_NOTIFICATION"
	NotifyAssetManagement        NotificationType = "ASSET_MANAGEMENT"
	NotifyAssetCount             NotificationType = "ASSET_COUNT"
	NotifyUserManagement         NotificationType = "USER_MANAGEMENT"
	NotifyUserAssociated         NotificationType = "USER_ASSOCIATED"
	NotifySubscriptionManagement NotificationType = "SUBSCRIPTION_MANAGEMENT"
	NotifySubscriptionCount      NotificationType = "SUBSCRIPTION_COUNT"
	NotifyUnlimitedAsset         NotificationType = "UNLIMITED_ASSET"
)

// AssetResult is an ASSET_MANAGEMENT notification's result.
type AssetResult string

// The results Apple reports.
const (
	ResultSuccess AssetResult = "SUCCESS"
	ResultFailure AssetResult = "FAILURE"
)

// Notification is one of Apple's notifications. Exactly one of the typed
// payloads is set for ASSET_MANAGEMENT and ASSET_COUNT; other types keep
// their payload in Raw.
type Notification struct {
	ID          string
	Type        NotificationType
	LocationUID string

	AssetManagement *AssetManagement
	AssetCount      *AssetCount
	// Raw is the "notification" object as Apple sent it.
	Raw json.RawMessage
}

// AssetManagement reports how part of an event ended: one result for up to
// 100 pairs. A large event arrives as many notifications, some of them
// duplicates, so count completions per pair, never per notification.
type AssetManagement struct {
	EventID string
	Type    EventType
	Result  AssetResult
	// Error is set when Result is FAILURE.
	Error       *Failure
	Assignments []Assignment
}

// AssetCount reports a change of an asset's count: a purchase, transfer or
// refund. CountDelta is positive for more licences.
type AssetCount struct {
	AdamID       string
	PricingParam string
	CountDelta   int
}

// Wire shapes of Apple's notifications.
type (
	wireNotification struct {
		Notification     json.RawMessage `json:"notification"`
		NotificationID   string          `json:"notificationId"`
		NotificationType string          `json:"notificationType"`
		UID              string          `json:"uId"`
	}
	wireAssignment struct {
		AdamID       string `json:"adamId"`
		PricingParam string `json:"pricingParam"`
		SerialNumber string `json:"serialNumber,omitempty"`
		ClientUserID string `json:"clientUserId,omitempty"`
	}
	wireAssetManagement struct {
		EventID     string           `json:"eventId"`
		Type        string           `json:"type"`
		Result      string           `json:"result"`
		Error       *wireError       `json:"error,omitempty"`
		Assignments []wireAssignment `json:"assignments"`
	}
	wireError struct {
		ErrorNumber  int    `json:"errorNumber"`
		ErrorMessage string `json:"errorMessage"`
	}
	wireAssetCount struct {
		AdamID       string `json:"adamId"`
		CountDelta   int    `json:"countDelta"`
		PricingParam string `json:"pricingParam"`
	}
)

// ParseNotification reads the body Apple POSTs. It checks the shape only;
// the caller checks the bearer secret first (NotificationAuthorized).
func ParseNotification(body []byte) (*Notification, error) {
	var w wireNotification
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("not an Apple notification: %w", err)
	}
	if w.NotificationType == "" {
		return nil, errors.New("not an Apple notification: notificationType is missing")
	}
	n := &Notification{ID: w.NotificationID, Type: NotificationType(w.NotificationType), LocationUID: w.UID, Raw: w.Notification}
	switch n.Type {
	case NotifyAssetManagement:
		var p wireAssetManagement
		if err := json.Unmarshal(w.Notification, &p); err != nil {
			return nil, fmt.Errorf("ASSET_MANAGEMENT payload: %w", err)
		}
		if p.EventID == "" {
			return nil, errors.New("ASSET_MANAGEMENT payload: eventId is missing")
		}
		am := &AssetManagement{EventID: p.EventID, Type: EventType(p.Type), Result: AssetResult(p.Result)}
		if p.Error != nil {
			am.Error = &Failure{Number: p.Error.ErrorNumber, Message: p.Error.ErrorMessage}
		}
		for _, a := range p.Assignments {
			am.Assignments = append(am.Assignments, Assignment(a))
		}
		n.AssetManagement = am
	case NotifyAssetCount:
		var p wireAssetCount
		if err := json.Unmarshal(w.Notification, &p); err != nil {
			return nil, fmt.Errorf("ASSET_COUNT payload: %w", err)
		}
		if p.AdamID == "" {
			return nil, errors.New("ASSET_COUNT payload: adamId is missing")
		}
		n.AssetCount = &AssetCount{AdamID: p.AdamID, PricingParam: p.PricingParam, CountDelta: p.CountDelta}
	}
	return n, nil
}

// MarshalJSON writes the notification as Apple sends it; the fakes use it.
func (n *Notification) MarshalJSON() ([]byte, error) {
	var payload any = json.RawMessage(`{}`)
	switch {
	case n.AssetManagement != nil:
		am := n.AssetManagement
		p := wireAssetManagement{EventID: am.EventID, Type: string(am.Type), Result: string(am.Result), Assignments: []wireAssignment{}}
		if am.Error != nil {
			p.Error = &wireError{ErrorNumber: am.Error.Number, ErrorMessage: am.Error.Message}
		}
		for _, a := range am.Assignments {
			p.Assignments = append(p.Assignments, wireAssignment(a))
		}
		payload = p
	case n.AssetCount != nil:
		payload = wireAssetCount{AdamID: n.AssetCount.AdamID, CountDelta: n.AssetCount.CountDelta, PricingParam: n.AssetCount.PricingParam}
	case len(n.Raw) > 0:
		payload = n.Raw
	}
	return json.Marshal(struct {
		Notification     any    `json:"notification"`
		NotificationID   string `json:"notificationId"`
		NotificationType string `json:"notificationType"`
		UID              string `json:"uId"`
	}{payload, n.ID, string(n.Type), n.LocationUID})
}

// NotificationAuthorized reports whether an Authorization header carries
// secret as a bearer token, in time that does not depend on where they
// differ.
func NotificationAuthorized(header, secret string) bool {
	got, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || secret == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(secret)) == 1
}

// MaxNotificationPairs is how many assignments Apple puts in one
// notification at most.
const MaxNotificationPairs = 100
