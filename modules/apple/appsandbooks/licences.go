package appsandbooks

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/fault"
)

// Wire types of the licence endpoints, as Apple documents them.
type (
	assetRef struct {
		AdamID       string `json:"adamId"`
		PricingParam string `json:"pricingParam"`
	}
	errorInfo struct {
		Assets        []assetRef `json:"assets"`
		ClientUserIDs []string   `json:"clientUserIds"`
		SerialNumbers []string   `json:"serialNumbers"`
	}
	manageAssetsRequest struct {
		Assets        []assetRef `json:"assets"`
		ClientUserIDs []string   `json:"clientUserIds,omitempty"`
		SerialNumbers []string   `json:"serialNumbers,omitempty"`
	}
	revokeAssetsRequest struct {
		ClientUserIDs []string `json:"clientUserIds,omitempty"`
		SerialNumbers []string `json:"serialNumbers,omitempty"`
	}
	eventResponse struct {
		EventID             string   `json:"eventId"`
		MDMInfo             *mdmInfo `json:"mdmInfo"`
		TokenExpirationDate string   `json:"tokenExpirationDate"`
		UID                 string   `json:"uId"`
	}
	statusResponse struct {
		EventStatus  string `json:"eventStatus"`
		EventType    string `json:"eventType"`
		NumCompleted int    `json:"numCompleted"`
		NumRequested int    `json:"numRequested"`
		Failures     []struct {
			ErrorNumber  int        `json:"errorNumber"`
			ErrorMessage string     `json:"errorMessage"`
			ErrorInfo    *errorInfo `json:"errorInfo"`
		} `json:"failures"`
		MDMInfo             *mdmInfo `json:"mdmInfo"`
		TokenExpirationDate string   `json:"tokenExpirationDate"`
	}
	responseAssignment struct {
		AdamID       string `json:"adamId"`
		PricingParam string `json:"pricingParam"`
		SerialNumber string `json:"serialNumber"`
		ClientUserID string `json:"clientUserId"`
	}
	assignmentsResponse struct {
		Assignments         []responseAssignment `json:"assignments"`
		CurrentPageIndex    int                  `json:"currentPageIndex"`
		NextPageIndex       *int                 `json:"nextPageIndex"`
		TotalPages          int                  `json:"totalPages"`
		VersionID           string               `json:"versionId"`
		MDMInfo             *mdmInfo             `json:"mdmInfo"`
		TokenExpirationDate string               `json:"tokenExpirationDate"`
	}
	serviceConfig struct {
		Limits            map[string]int    `json:"limits"`
		NotificationTypes []string          `json:"notificationTypes"`
		URLs              map[string]string `json:"urls"`
	}
	clientConfigRequest struct {
		MDMInfo               *mdmInfo `json:"mdmInfo,omitempty"`
		NotificationURL       string   `json:"notificationUrl,omitempty"`
		NotificationAuthToken string   `json:"notificationAuthToken,omitempty"`
		NotificationTypes     []string `json:"notificationTypes,omitempty"`
	}
)

func (i *errorInfo) domain() apple.ErrorInfo {
	if i == nil {
		return apple.ErrorInfo{}
	}
	out := apple.ErrorInfo{SerialNumbers: i.SerialNumbers, ClientUserIDs: i.ClientUserIDs}
	for _, a := range i.Assets {
		out.Assets = append(out.Assets, apple.AssetID(a))
	}
	return out
}

func notificationTypes(in []string) []apple.NotificationType {
	if len(in) == 0 {
		return nil
	}
	out := make([]apple.NotificationType, len(in))
	for i, t := range in {
		out[i] = apple.NotificationType(t)
	}
	return out
}

// UpdateClientConfig implements apple.Client.
func (c *Client) UpdateClientConfig(ctx context.Context, token []byte, u apple.ClientConfigUpdate) (*apple.ClientConfig, error) {
	var body clientConfigRequest
	if m := u.MDMInfo; m != nil {
		body.MDMInfo = &mdmInfo{ID: m.ID, Name: m.Name, Metadata: m.Metadata}
	}
	if n := u.Notifications; n != nil {
		body.NotificationURL, body.NotificationAuthToken = n.URL, n.AuthToken
		for _, t := range n.Types {
			body.NotificationTypes = append(body.NotificationTypes, string(t))
		}
	}
	var resp clientConfigResponse
	if err := c.call(ctx, http.MethodPost, c.endpoint("client/config", nil), token, body, &resp); err != nil {
		return nil, refused(err)
	}
	return resp.domain(), nil
}

// serviceConfigTTL follows Apple's advice to re-read service config every 5 minutes.
const serviceConfigTTL = 5 * time.Minute

// serviceCache holds the last service config read; one reader at a time
// refreshes it, the others wait for that read rather than send their own.
type serviceCache struct {
	mu      sync.Mutex
	raw     *serviceConfig
	fetched time.Time
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) serviceConfig(ctx context.Context) (*serviceConfig, error) {
	sc, _, err := c.serviceConfigAt(ctx)
	return sc, err
}

// serviceConfigAt also says when the config was read from Apple.
func (c *Client) serviceConfigAt(ctx context.Context) (*serviceConfig, time.Time, error) {
	c.svc.mu.Lock()
	defer c.svc.mu.Unlock()
	now := c.now()
	if c.svc.raw != nil && now.Sub(c.svc.fetched) < serviceConfigTTL && !now.Before(c.svc.fetched) {
		return c.svc.raw, c.svc.fetched, nil
	}
	var sc serviceConfig
	if err := c.call(ctx, http.MethodGet, c.endpoint("service/config", nil), nil, nil, &sc); err != nil {
		return nil, time.Time{}, err
	}
	c.svc.raw, c.svc.fetched = &sc, now
	return &sc, now, nil
}

// RefreshServiceConfig implements apple.ServiceConfigRefresher.
func (c *Client) RefreshServiceConfig(ctx context.Context, olderThan time.Time) (*apple.ServiceConfig, error) {
	c.svc.mu.Lock()
	if c.svc.raw != nil && !c.svc.fetched.After(olderThan) {
		c.svc.raw = nil
	}
	c.svc.mu.Unlock()
	return c.ServiceConfig(ctx)
}

// ServiceConfig implements apple.Client.
func (c *Client) ServiceConfig(ctx context.Context) (*apple.ServiceConfig, error) {
	sc, at, err := c.serviceConfigAt(ctx)
	if err != nil {
		return nil, err
	}
	return &apple.ServiceConfig{
		Limits:            apple.LimitsFrom(sc.Limits),
		NotificationTypes: notificationTypes(sc.NotificationTypes),
		FetchedAt:         at,
	}, nil
}

func assetRefs(in []apple.AssetID) []assetRef {
	out := make([]assetRef, len(in))
	for i, a := range in {
		out[i] = assetRef(a)
	}
	return out
}

func manageRequest(req apple.ManageAssets) manageAssetsRequest {
	return manageAssetsRequest{Assets: assetRefs(req.Assets), ClientUserIDs: req.ClientUserIDs, SerialNumbers: req.SerialNumbers}
}

// AssociateAssets implements apple.Client.
func (c *Client) AssociateAssets(ctx context.Context, token []byte, req apple.ManageAssets) (*apple.EventReceipt, error) {
	return c.event(ctx, token, "assets/associate", manageRequest(req))
}

// DisassociateAssets implements apple.Client.
func (c *Client) DisassociateAssets(ctx context.Context, token []byte, req apple.ManageAssets) (*apple.EventReceipt, error) {
	return c.event(ctx, token, "assets/disassociate", manageRequest(req))
}

// RevokeAssets implements apple.Client.
func (c *Client) RevokeAssets(ctx context.Context, token []byte, req apple.RevokeAssets) (*apple.EventReceipt, error) {
	return c.event(ctx, token, "assets/revoke", revokeAssetsRequest{ClientUserIDs: req.ClientUserIDs, SerialNumbers: req.SerialNumbers})
}

// event sends a licence request. It is retried like any call: Apple
// processes nothing for a request it answered with 429 or an error, and a
// request that was processed though its answer was lost leaves an event
// nobody follows, which changes nothing a second, followed one does not.
func (c *Client) event(ctx context.Context, token []byte, path string, body any) (*apple.EventReceipt, error) {
	var resp eventResponse
	if err := c.call(ctx, http.MethodPost, c.endpoint(path, nil), token, body, &resp); err != nil {
		return nil, refused(err)
	}
	if resp.EventID == "" {
		return nil, fault.New(fault.AppleUnavailable, "Apple accepted the request but named no event to follow. Check the assignments in Apple Business Manager before trying again.")
	}
	return &apple.EventReceipt{EventID: resp.EventID, MDMInfo: resp.MDMInfo.domain(), TokenExpiresAt: parseAppleTime(resp.TokenExpirationDate)}, nil
}

// refusals are the errors by which Apple turns down a request as a whole
// because of what it asks, with what to do about each.
var refusals = map[int]string{
	9700: "The request names more assets than Apple accepts at once (service config maxAssets). Send fewer assets per request.",
	9701: "The request names more users than Apple accepts at once (service config maxClientUserIds). Send fewer users per request.",
	9702: "The request names more serial numbers than Apple accepts at once (service config maxSerialNumbers). Send fewer serial numbers per request.",
	9703: "The request names an asset twice. Name each asset once.",
	9704: "The request names a user twice. Name each user once.",
	9705: "The request names a serial number twice. Name each serial number once.",
	9706: "The asset cannot be revoked. Leave it out of the request.",
	9707: "The asset cannot be assigned to devices. Assign it to users instead.",
	9708: "Apple does not know this event. Check the assignments in Apple Business Manager.",
	9609: "Apple does not know this user. Register the user first.",
	9710: "A notification URL needs a secret, and a secret needs a URL. Send both.",
	9711: "The notification URL is too long for Apple (service config maxNotificationLength). Use a shorter public URL.",
	9712: "Apple sends notifications only to HTTPS URLs. Set a public https:// URL.",
	9713: "The MDM metadata is too long for Apple. Shorten it.",
	9718: "The request names no asset. Name at least one.",
	9719: "The request names no serial number and no user. Name at least one.",
	9723: "Apple needs a name, ID and metadata in mdmInfo. Send all three.",
	9724: "The MDM ID is too long for Apple. Shorten it.",
	9725: "The MDM name is too long for Apple. Shorten it.",
	9728: "Apple could not reach the notification URL or it did not answer Apple's test notification with 2xx. Check that the URL is reachable from the internet and answers.",
}

// refused turns Apple's refusal of a request into BAD_USER_INPUT with a
// message that says what to do; the *apple.Error, with the assets, serial
// numbers and users it names, stays in the chain.
func refused(err error) error {
	var ae *apple.Error
	if !errors.As(err, &ae) {
		return err
	}
	msg, ok := refusals[ae.Number]
	if !ok {
		return err
	}
	if names := describe(ae.Info); names != "" {
		msg += " Concerned: " + names + "."
	}
	return fault.Wrap(ae, fault.BadUserInput, "Apple refused the request (error %d). %s", ae.Number, msg)
}

// describe lists what an errorInfo names, shortened for a message.
func describe(i apple.ErrorInfo) string {
	var parts []string
	add := func(kind string, items []string) {
		if len(items) == 0 {
			return
		}
		shown := items[:min(len(items), 5)]
		s := kind + " " + strings.Join(shown, ", ")
		if len(items) > len(shown) {
			s += " and " + strconv.Itoa(len(items)-len(shown)) + " more"
		}
		parts = append(parts, s)
	}
	var assets []string
	for _, a := range i.Assets {
		assets = append(assets, a.AdamID+"/"+a.PricingParam)
	}
	add("assets", assets)
	add("serial numbers", i.SerialNumbers)
	add("users", i.ClientUserIDs)
	return strings.Join(parts, "; ")
}

// EventStatus implements apple.Client.
func (c *Client) EventStatus(ctx context.Context, token []byte, eventID string) (*apple.EventStatus, error) {
	if eventID == "" {
		return nil, fault.New(fault.BadUserInput, "An event ID is needed to ask Apple for its status.")
	}
	var resp statusResponse
	if err := c.call(ctx, http.MethodGet, c.endpoint("status", url.Values{"eventId": {eventID}}), token, nil, &resp); err != nil {
		return nil, refused(err)
	}
	out := &apple.EventStatus{
		EventID: eventID, State: apple.EventState(resp.EventStatus), Type: apple.EventType(resp.EventType),
		NumCompleted: resp.NumCompleted, NumRequested: resp.NumRequested,
		MDMInfo: resp.MDMInfo.domain(), TokenExpiresAt: parseAppleTime(resp.TokenExpirationDate),
	}
	for _, f := range resp.Failures {
		out.Failures = append(out.Failures, apple.Failure{Number: f.ErrorNumber, Message: f.ErrorMessage, ErrorInfo: f.ErrorInfo.domain()})
	}
	switch out.State {
	case apple.EventPending, apple.EventComplete, apple.EventFailed:
	default:
		return nil, fault.New(fault.AppleUnavailable, "Apple reported the event in an unknown state %q. Try again later.", truncate(resp.EventStatus, 40))
	}
	return out, nil
}

// Assignments implements apple.Client. Pages after the first are read at
// most MaxInFlight at once; when Apple's versionId changes between pages
// the read starts over, and an incremental read whose version Apple no
// longer accepts (9721) becomes a full one.
func (c *Client) Assignments(ctx context.Context, token []byte, q apple.AssignmentQuery) (*apple.Assignments, error) {
	var lastErr error
	for range maxRestarts + 1 {
		out, err := c.assignmentsOnce(ctx, token, q)
		var ae *apple.Error
		if q.SinceVersionID != "" && errors.As(err, &ae) && ae.Number == 9721 {
			q.SinceVersionID = ""
			out, err = c.assignmentsOnce(ctx, token, q)
		}
		if !errors.Is(err, errVersionChanged) {
			return out, err
		}
		lastErr = err
	}
	return nil, fault.Wrap(lastErr, fault.AppleUnavailable, "Apple's assignments kept changing while Orchard read them. Try again in a few minutes.")
}

func (c *Client) assignmentsPage(ctx context.Context, token []byte, q apple.AssignmentQuery, index int) (*assignmentsResponse, error) {
	v := url.Values{}
	set := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	set("adamId", q.AdamID)
	set("serialNumber", q.SerialNumber)
	set("clientUserId", q.ClientUserID)
	set("sinceVersionId", q.SinceVersionID)
	if index > 0 {
		v.Set("pageIndex", strconv.Itoa(index))
	}
	var resp assignmentsResponse
	if err := c.call(ctx, http.MethodGet, c.endpoint("assignments", v), token, nil, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

func (c *Client) assignmentsOnce(ctx context.Context, token []byte, q apple.AssignmentQuery) (*apple.Assignments, error) {
	first, err := c.assignmentsPage(ctx, token, q, 0)
	if err != nil {
		return nil, err
	}
	pages := []*assignmentsResponse{first}
	switch {
	case first.NextPageIndex == nil:
	case first.TotalPages > 1:
		rest := make([]*assignmentsResponse, first.TotalPages-1)
		ctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		sem := make(chan struct{}, c.MaxInFlight)
		var wg sync.WaitGroup
		for i := 1; i < first.TotalPages && ctx.Err() == nil; i++ {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				p, err := c.assignmentsPage(ctx, token, q, i)
				if err != nil {
					cancel(err)
					return
				}
				rest[i-1] = p
			}()
		}
		wg.Wait()
		if err := context.Cause(ctx); err != nil {
			return nil, err
		}
		pages = append(pages, rest...)
	default:
		// No page count: follow nextPageIndex one page at a time.
		for next := first.NextPageIndex; next != nil; {
			p, err := c.assignmentsPage(ctx, token, q, *next)
			if err != nil {
				return nil, err
			}
			pages = append(pages, p)
			if len(pages) > 100000 {
				return nil, fault.New(fault.AppleUnavailable, "Apple's assignment list does not end. Try again later.")
			}
			next = p.NextPageIndex
		}
	}
	out := &apple.Assignments{
		VersionID: first.VersionID, Incremental: q.SinceVersionID != "", Pages: len(pages),
		MDMInfo: first.MDMInfo.domain(), TokenExpiresAt: parseAppleTime(first.TokenExpirationDate),
	}
	for _, p := range pages {
		if p.VersionID != first.VersionID {
			return nil, errVersionChanged
		}
		for _, a := range p.Assignments {
			out.Assignments = append(out.Assignments, apple.Assignment(a))
		}
	}
	return out, nil
}
