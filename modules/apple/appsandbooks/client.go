// Package appsandbooks registers "apple.appsandbooks", the client of Apple's
// App and Book Management API v2 (https://vpp.itunes.apple.com/mdm/v2).
//
// Settings (JSON):
//   - "baseURL": the API's base URL (ORCHARD_APPLE_URL); default Apple's.
//   - "timeout": the limit of one HTTP attempt, a Go duration; default "20s".
//   - "retryBudget": the total time a call may spend retrying; default "60s".
//   - "minBackoff", "maxBackoff": the first and largest wait between
//     attempts; default "500ms" and "30s". A Retry-After from Apple is
//     honoured up to the budget.
//
// A caller with a person waiting shortens the budget with apple.WithBudget;
// one attempt never runs past what is left of it.
//   - "maxInFlight": asset pages of one token fetched at once, however many
//     fetches of it run, at most 5 (Apple's limit).
//
// Every response body is read: a JSON body with an errorNumber is an error
// whatever the HTTP status, because Apple answers some errors (9622 for a
// bad token) with HTTP 200. 9621, 9622, 9722, 9601 and 9625 describe the
// token and are never retried.
package appsandbooks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	fastjson "github.com/segmentio/encoding/json"

	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/fault"
)

func init() { modules.Register(&Client{}) }

// DefaultBaseURL is Apple's App and Book Management API.
const DefaultBaseURL = "https://vpp.itunes.apple.com/mdm/v2"

// maxBody bounds what is read of one response; an asset page of several
// hundred assets is well under 1 MB.
const maxBody = 16 << 20

// Duration is a time.Duration that reads from JSON as "20s".
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a string like \"20s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Client is the real Apple client.
type Client struct {
	BaseURL     string   `json:"baseURL,omitempty"`
	Timeout     Duration `json:"timeout,omitempty"`
	RetryBudget Duration `json:"retryBudget,omitempty"`
	MinBackoff  Duration `json:"minBackoff,omitempty"`
	MaxBackoff  Duration `json:"maxBackoff,omitempty"`
	MaxInFlight int      `json:"maxInFlight,omitempty"`

	// HTTP is the transport; tests point it at an httptest server.
	HTTP *http.Client `json:"-"`

	base *url.URL

	// Now is the clock of the service-config cache; tests move it.
	Now func() time.Time `json:"-"`

	svc serviceCache

	// pageCounts remembers how many asset pages each token had last time,
	// keyed by the token's SHA-256 (the token itself is never kept).
	pageCounts sync.Map
	// pageSlots holds each token's MaxInFlight request slots for asset
	// pages, under the same key: two fetches of one token at once (a
	// scheduled sync and a technician's) share Apple's five.
	pageSlots sync.Map
}

// Interface guards.
var (
	_ apple.Client                 = (*Client)(nil)
	_ apple.ServiceConfigRefresher = (*Client)(nil)
	_ modules.Provisioner          = (*Client)(nil)
	_ modules.Validator            = (*Client)(nil)
)

// ModuleInfo implements modules.Module.
func (*Client) ModuleInfo() modules.Info {
	return modules.Info{ID: "apple.appsandbooks", New: func() modules.Module { return new(Client) }}
}

// Provision fills in defaults.
func (c *Client) Provision(context.Context) error {
	if c.BaseURL == "" {
		c.BaseURL = DefaultBaseURL
	}
	u, err := url.Parse(strings.TrimRight(c.BaseURL, "/"))
	if err != nil {
		return fmt.Errorf("baseURL: %w", err)
	}
	c.base = u
	def := func(d *Duration, v time.Duration) {
		if *d <= 0 {
			*d = Duration(v)
		}
	}
	def(&c.Timeout, 20*time.Second)
	def(&c.RetryBudget, 60*time.Second)
	def(&c.MinBackoff, 500*time.Millisecond)
	def(&c.MaxBackoff, 30*time.Second)
	if c.MaxInFlight <= 0 || c.MaxInFlight > 5 {
		c.MaxInFlight = 5
	}
	if c.HTTP == nil {
		c.HTTP = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 8,
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   true,
		}}
	}
	return nil
}

// Validate implements modules.Validator.
func (c *Client) Validate() error {
	if c.base.Scheme != "https" && c.base.Scheme != "http" {
		return fmt.Errorf("baseURL must be an http(s) URL, got %q", c.BaseURL)
	}
	return nil
}

// wire types, as Apple documents them.
type mdmInfo struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Metadata string `json:"metadata"`
}

type errorBody struct {
	ErrorNumber  int        `json:"errorNumber"`
	ErrorMessage string     `json:"errorMessage"`
	ErrorInfo    *errorInfo `json:"errorInfo"`
}

type clientConfigResponse struct {
	CountryISO2ACode    string   `json:"countryISO2ACode"`
	DefaultPlatform     string   `json:"defaultPlatform"`
	LocationName        string   `json:"locationName"`
	MDMInfo             *mdmInfo `json:"mdmInfo"`
	TokenExpirationDate string   `json:"tokenExpirationDate"`
	UID                 string   `json:"uId"`
	WebsiteURL          string   `json:"websiteURL"`

	NotificationURL             string   `json:"notificationUrl"`
	SubscribedNotificationTypes []string `json:"subscribedNotificationTypes"`
}

type responseAsset struct {
	AdamID             string   `json:"adamId"`
	PricingParam       string   `json:"pricingParam"`
	ProductType        string   `json:"productType"`
	AvailableCount     int      `json:"availableCount"`
	AssignedCount      int      `json:"assignedCount"`
	RetiredCount       int      `json:"retiredCount"`
	TotalCount         int      `json:"totalCount"`
	SupportedPlatforms []string `json:"supportedPlatforms"`
}

type assetsResponse struct {
	Assets              []responseAsset `json:"assets"`
	UnlimitedAssets     []responseAsset `json:"unlimitedAssets"`
	CurrentPageIndex    int             `json:"currentPageIndex"`
	NextPageIndex       *int            `json:"nextPageIndex"`
	TotalPages          int             `json:"totalPages"`
	VersionID           string          `json:"versionId"`
	MDMInfo             *mdmInfo        `json:"mdmInfo"`
	TokenExpirationDate string          `json:"tokenExpirationDate"`
	UID                 string          `json:"uId"`
}

// ClientConfig implements apple.Client.
func (c *Client) ClientConfig(ctx context.Context, token []byte) (*apple.ClientConfig, error) {
	var resp clientConfigResponse
	if err := c.call(ctx, http.MethodGet, c.endpoint("client/config", nil), token, nil, &resp); err != nil {
		return nil, err
	}
	return resp.domain(), nil
}

// SetMDMInfo implements apple.Client. Only mdmInfo is sent, with all three
// fields (Apple error 9723 otherwise).
func (c *Client) SetMDMInfo(ctx context.Context, token []byte, info apple.MDMInfo) (*apple.ClientConfig, error) {
	body := map[string]mdmInfo{"mdmInfo": {ID: info.ID, Name: info.Name, Metadata: info.Metadata}}
	var resp clientConfigResponse
	if err := c.call(ctx, http.MethodPost, c.endpoint("client/config", nil), token, body, &resp); err != nil {
		return nil, err
	}
	return resp.domain(), nil
}

func (r *clientConfigResponse) domain() *apple.ClientConfig {
	return &apple.ClientConfig{
		LocationUID:     r.UID,
		LocationName:    r.LocationName,
		CountryCode:     r.CountryISO2ACode,
		DefaultPlatform: r.DefaultPlatform,
		WebsiteURL:      r.WebsiteURL,
		MDMInfo:         r.MDMInfo.domain(),
		TokenExpiresAt:  parseAppleTime(r.TokenExpirationDate),

		NotificationURL:   r.NotificationURL,
		NotificationTypes: notificationTypes(r.SubscribedNotificationTypes),
	}
}

func (m *mdmInfo) domain() *apple.MDMInfo {
	if m == nil || (m.ID == "" && m.Name == "" && m.Metadata == "") {
		return nil
	}
	return &apple.MDMInfo{ID: m.ID, Name: m.Name, Metadata: m.Metadata}
}

func parseAppleTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	for _, layout := range []string{"2006-01-02T15:04:05Z0700", time.RFC3339} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// maxRestarts bounds how often a fetch starts over because Apple's versionId
// changed while it was reading pages.
const maxRestarts = 3

// Assets implements apple.Client: it reads page 0, then the remaining pages
// with at most MaxInFlight requests at once, and starts over if versionId
// changes between pages.
func (c *Client) Assets(ctx context.Context, token []byte) (*apple.Assets, error) {
	var lastErr error
	for range maxRestarts + 1 {
		out, err := c.assetsOnce(ctx, token)
		if !errors.Is(err, errVersionChanged) {
			return out, err
		}
		lastErr = err
	}
	return nil, fault.Wrap(lastErr, fault.AppleUnavailable, "Apple's asset list kept changing while Orchard read it. Try the sync again in a few minutes.")
}

var errVersionChanged = errors.New("versionId changed during the fetch")

// page reads and decodes one page of assets.
func (c *Client) page(ctx context.Context, token []byte, index int) (*assetsResponse, error) {
	var q url.Values
	if index > 0 {
		q = url.Values{"pageIndex": {strconv.Itoa(index)}}
	}
	var out pageOut
	if err := c.call(ctx, http.MethodGet, c.endpoint("assets", q), token, nil, &out); err != nil {
		return nil, err
	}
	return out.page, nil
}

// pageOut, as call's out, receives a decoded asset page. attempt decodes
// it before looking for an error body: a page decodePageFast reads has no
// errorNumber, so 100 KB are scanned once, not twice.
type pageOut struct{ page *assetsResponse }

// decodePageGeneral decodes a page the fast path gave up on, with
// segmentio/encoding's JSON decoder, which reads the same JSON into the same
// struct about four times faster than encoding/json.
func decodePageGeneral(body []byte) (*assetsResponse, error) {
	var resp assetsResponse
	if err := fastjson.Unmarshal(body, &resp); err != nil {
		return nil, fault.Wrap(fmt.Errorf("decoding an asset page: %w", err), fault.AppleUnavailable, "Apple's answer could not be read. Try again later.")
	}
	return &resp, nil
}

func (c *Client) assetsOnce(ctx context.Context, token []byte) (*apple.Assets, error) {
	// Page 0 says how many pages there are. When an earlier fetch of this
	// token learnt the count, every page is asked for at once (MaxInFlight
	// at a time), which saves the round trip of waiting for page 0.
	ahead := []int{0}
	for i := 1; i < c.pageHint(token); i++ {
		ahead = append(ahead, i)
	}
	pages, err := c.fetchPages(ctx, token, ahead)
	if err != nil {
		return nil, err
	}
	first := pages[0]
	var want []int
	if first.NextPageIndex != nil && first.TotalPages <= 1 {
		// No page count: follow nextPageIndex one page at a time.
		sem := c.slots(token)
		for next := first.NextPageIndex; next != nil; {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			p, err := c.page(ctx, token, *next)
			<-sem
			if err != nil {
				return nil, err
			}
			pages[*next] = p
			if len(pages) > 100000 {
				return nil, fault.New(fault.AppleUnavailable, "Apple's asset list does not end. Try the sync again later.")
			}
			next = p.NextPageIndex
		}
	} else if first.NextPageIndex != nil {
		for i := 1; i < first.TotalPages; i++ {
			if pages[i] == nil {
				want = append(want, i)
			}
		}
	}
	rest, err := c.fetchPages(ctx, token, want)
	if err != nil {
		return nil, err
	}
	for i, p := range rest {
		pages[i] = p
	}
	count := 1
	if first.NextPageIndex != nil {
		count = max(first.TotalPages, len(pages))
	}
	c.rememberPages(token, count)
	out := &apple.Assets{VersionID: first.VersionID, MDMInfo: first.MDMInfo.domain(), TokenExpiresAt: parseAppleTime(first.TokenExpirationDate)}
	n := 0
	for _, p := range pages {
		n += len(p.Assets) + len(p.UnlimitedAssets)
	}
	out.Assets = make([]apple.Asset, 0, n)
	for i := range count {
		p := pages[i]
		if p == nil {
			continue // a page guessed ahead that no longer exists
		}
		if p.VersionID != first.VersionID {
			return nil, errVersionChanged
		}
		out.Pages++
		for _, a := range p.Assets {
			out.Assets = append(out.Assets, a.domain(false))
		}
		for _, a := range p.UnlimitedAssets {
			out.Assets = append(out.Assets, a.domain(true))
		}
	}
	return out, nil
}

// fetchPages reads the given pages, at most MaxInFlight at once. A page
// guessed ahead of page 0 that Apple says does not exist (9650) is skipped.
func (c *Client) fetchPages(ctx context.Context, token []byte, indexes []int) (map[int]*assetsResponse, error) {
	out := make(map[int]*assetsResponse, len(indexes))
	if len(indexes) == 0 {
		return out, nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var mu sync.Mutex
	sem := c.slots(token)
	var wg sync.WaitGroup
	// past is the lowest page Apple called out of range (9650): the list
	// has shrunk since the page count was learnt, so pages after it are
	// not asked for.
	var past atomic.Int64
	past.Store(math.MaxInt64)
	for _, i := range indexes {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil || int64(i) >= past.Load() {
			break
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// The slot is held through the page's decoding (about 0.1 ms
			// for 500 assets), which tells a page from an error body.
			p, err := c.page(ctx, token, i)
			<-sem
			var ae *apple.Error
			if err != nil && i > 0 && errors.As(err, &ae) && ae.Number == 9650 {
				for old := past.Load(); int64(i) < old && !past.CompareAndSwap(old, int64(i)); old = past.Load() {
				}
				return
			}
			if err != nil {
				cancel(err) // the first failure stops the other pages
				return
			}
			mu.Lock()
			out[i] = p
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

func pageKey(token []byte) [32]byte { return sha256.Sum256(token) }

func (c *Client) pageHint(token []byte) int {
	if v, ok := c.pageCounts.Load(pageKey(token)); ok {
		return v.(int)
	}
	return 1
}

func (c *Client) rememberPages(token []byte, n int) { c.pageCounts.Store(pageKey(token), n) }

// slots is the token's semaphore for asset page requests.
func (c *Client) slots(token []byte) chan struct{} {
	if v, ok := c.pageSlots.Load(pageKey(token)); ok {
		return v.(chan struct{})
	}
	v, _ := c.pageSlots.LoadOrStore(pageKey(token), make(chan struct{}, c.MaxInFlight))
	return v.(chan struct{})
}

func (a responseAsset) domain(unlimited bool) apple.Asset {
	return apple.Asset{
		AdamID: a.AdamID, PricingParam: a.PricingParam, ProductType: a.ProductType,
		TotalCount: a.TotalCount, AssignedCount: a.AssignedCount,
		AvailableCount: a.AvailableCount, RetiredCount: a.RetiredCount,
		Unlimited:          unlimited,
		SupportedPlatforms: a.SupportedPlatforms,
	}
}

// metadataBatch is how many adamIDs one lookup asks for; batches go out
// MaxInFlight at a time.
const metadataBatch = 100

type lookupResponse struct {
	Results map[string]struct {
		Name     string `json:"name"`
		BundleID string `json:"bundleId"`
		Artwork  []struct {
			URL   string `json:"url"`
			Width int    `json:"width"`
		} `json:"artwork"`
	} `json:"results"`
}

// Metadata implements apple.Client through the contentMetadataLookup URL
// that service config gives; the sToken travels as the itvt cookie.
func (c *Client) Metadata(ctx context.Context, token []byte, storefront, platform string, adamIDs []string) (map[string]apple.Metadata, error) {
	sc, err := c.serviceConfig(ctx)
	if err != nil {
		return nil, err
	}
	lookup := sc.URLs["contentMetadataLookup"]
	if lookup == "" {
		return nil, fault.New(fault.AppleUnavailable, "Apple's service config names no metadata lookup URL.")
	}
	if platform == "" {
		platform = "volumestore"
	}
	var (
		mu       sync.Mutex
		out      = map[string]apple.Metadata{}
		firstErr error
		wg       sync.WaitGroup
		sem      = make(chan struct{}, c.MaxInFlight)
	)
	for start := 0; start < len(adamIDs); start += metadataBatch {
		ids := adamIDs[start:min(start+metadataBatch, len(adamIDs))]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			got, err := c.lookup(ctx, lookup, token, storefront, platform, ids)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			for id, m := range got {
				out[id] = m
			}
		}()
	}
	wg.Wait()
	return out, firstErr
}

// lookup asks the metadata service about one batch of adamIDs.
func (c *Client) lookup(ctx context.Context, lookupURL string, token []byte, storefront, platform string, ids []string) (map[string]apple.Metadata, error) {
	u, err := url.Parse(lookupURL)
	if err != nil {
		return nil, fmt.Errorf("metadata lookup URL: %w", err)
	}
	q := u.Query()
	q.Set("version", "2")
	q.Set("id", strings.Join(ids, ","))
	q.Set("p", "mdm-lockup")
	q.Set("caller", "MDM")
	q.Set("platform", platform)
	q.Set("cc", strings.ToLower(storefront))
	q.Set("l", "en")
	u.RawQuery = q.Encode()
	var resp lookupResponse
	if err := c.call(ctx, http.MethodGet, u, token, nil, &resp, withCookie("itvt")); err != nil {
		return nil, err
	}
	out := make(map[string]apple.Metadata, len(resp.Results))
	for id, r := range resp.Results {
		m := apple.Metadata{Name: r.Name, BundleID: r.BundleID}
		best := 0
		for _, a := range r.Artwork {
			// The largest icon up to 512 px wide, or the first one.
			if m.IconURL == "" || (a.Width > best && a.Width <= 512) {
				m.IconURL, best = a.URL, a.Width
			}
		}
		out[id] = m
	}
	return out, nil
}

func (c *Client) endpoint(path string, q url.Values) *url.URL {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + "/" + path
	u.RawQuery = q.Encode()
	return &u
}

type callOption func(*http.Request, []byte)

// withCookie sends the token as a cookie instead of a bearer header.
func withCookie(name string) callOption {
	return func(r *http.Request, token []byte) {
		r.Header.Del("Authorization")
		r.AddCookie(&http.Cookie{Name: name, Value: string(token)})
	}
}

// attemptError is one failed attempt: retry says whether another may help,
// wait is Apple's Retry-After.
type attemptError struct {
	err       error
	retry     bool
	rateLimit bool
	wait      time.Duration
}

// call performs one API call with retries and decodes the answer into out.
// It ends by the first of its retry budget, a budget the caller set
// (apple.WithBudget) and ctx's deadline, never sleeping past that point:
// when Apple's Retry-After or the next backoff would overrun it, the call
// gives up at once with what Apple last said.
func (c *Client) call(ctx context.Context, method string, u *url.URL, token []byte, body, out any, opts ...callOption) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(time.Duration(c.RetryBudget))
	if d, ok := apple.BudgetDeadline(ctx); ok && d.Before(deadline) {
		deadline = d
	}
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	backoff := time.Duration(c.MinBackoff)
	var last *attemptError
	for attempt := 1; ; attempt++ {
		left := time.Until(deadline)
		if left <= 0 {
			if last != nil {
				// The wait before this retry ended past the deadline (a
				// timer fires late on a busy machine): say what Apple
				// last said.
				return exhausted(last, attempt-1, nil)
			}
			// Earlier calls of the same action spent the budget.
			return fault.New(fault.AppleUnavailable, "Apple did not answer in time. Try again in a few minutes.")
		}
		ae := c.attempt(ctx, min(time.Duration(c.Timeout), left), method, u, token, payload, out, opts)
		if ae == nil {
			return nil
		}
		if !ae.retry {
			return ae.err
		}
		last = ae
		if ctx.Err() != nil {
			return exhausted(ae, attempt, ctx.Err())
		}
		wait := max(min(backoff, time.Duration(c.MaxBackoff)), time.Millisecond)
		wait = wait/2 + rand.N(wait/2+1) // jitter: half to all of the backoff
		if ae.wait > wait {
			wait = ae.wait
		}
		if backoff < time.Duration(c.MaxBackoff) {
			backoff *= 2
		}
		if time.Now().Add(wait).After(deadline) {
			return exhausted(ae, attempt, nil)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return exhausted(ae, attempt, ctx.Err())
		case <-t.C:
		}
	}
}

func exhausted(ae *attemptError, attempts int, ctxErr error) error {
	if ctxErr != nil {
		return fault.Wrap(errors.Join(ae.err, ctxErr), fault.AppleUnavailable, "Apple did not answer in time. Try again in a few minutes.")
	}
	if ae.rateLimit {
		if ae.wait > 0 {
			return fault.Wrap(ae.err, fault.AppleRateLimited, "Apple is limiting requests for this organisation and asks to wait %s. Try again after that; nothing was changed.", humanWait(ae.wait))
		}
		return fault.Wrap(ae.err, fault.AppleRateLimited, "Apple is limiting requests for this organisation (tried %d times). Wait a few minutes and try again.", attempts)
	}
	return fault.Wrap(ae.err, fault.AppleUnavailable, "Apple's Apps and Books service is not answering (tried %d times). Try again in a few minutes; nothing was changed.", attempts)
}

// humanWait says a wait as the wizard would: whole seconds or minutes, up.
func humanWait(d time.Duration) string {
	if d <= time.Minute {
		return plural(int(math.Ceil(d.Seconds())), "second")
	}
	return plural(int(math.Ceil(d.Minutes())), "minute")
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}

// attempt makes one request, cut after timeout. A failure to get an answer
// is worth another try; call decides whether there is time for it.
func (c *Client) attempt(ctx context.Context, timeout time.Duration, method string, u *url.URL, token, payload []byte, out any, opts []callOption) *attemptError {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if payload != nil {
		rd = strings.NewReader(string(payload))
	}
	req, err := http.NewRequestWithContext(actx, method, u.String(), rd)
	if err != nil {
		return &attemptError{err: err}
	}
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != nil {
		req.Header.Set("Authorization", "Bearer "+string(token))
	}
	for _, o := range opts {
		o(req, token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		// The request's URL is Apple's; the error never carries the token.
		return &attemptError{err: fmt.Errorf("%s %s: %w", method, u.Path, scrub(err)), retry: true}
	}
	defer resp.Body.Close()
	buf := readBuffers.Get().(*bytes.Buffer)
	defer releaseBuffer(buf)
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, maxBody)); err != nil {
		return &attemptError{err: fmt.Errorf("reading %s %s: %w", method, u.Path, err), retry: true}
	}
	// Everything kept from data below is copied out of it: the buffer is
	// used again.
	data := buf.Bytes()
	retryAfter := parseRetryAfter(resp.Header.Get("Retry-After"))

	var page *assetsResponse
	po, isPage := out.(*pageOut)
	if isPage && resp.StatusCode < 300 {
		page, _ = decodePageFast(data)
	}
	// Apple's error body wins over the status code: 9622 comes with HTTP 200.
	// Only a body that names errorNumber is decoded for it.
	var eb errorBody
	if page == nil && bytes.Contains(data, errorNumberKey) && json.Unmarshal(data, &eb) == nil && eb.ErrorNumber != 0 {
		return classify(eb, resp.StatusCode, retryAfter)
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return &attemptError{err: &apple.Error{Number: 9646, Status: resp.StatusCode, Message: "too many requests"}, retry: true, rateLimit: true, wait: retryAfter}
	case resp.StatusCode >= 500:
		return &attemptError{err: &apple.Error{Status: resp.StatusCode, Message: http.StatusText(resp.StatusCode)}, retry: true, wait: retryAfter}
	case resp.StatusCode == http.StatusUnauthorized:
		return &attemptError{err: fault.Wrap(&apple.Error{Status: 401}, fault.TokenInvalid, "Apple rejected the token.")}
	case resp.StatusCode >= 300:
		return &attemptError{err: fault.Wrap(&apple.Error{Status: resp.StatusCode, Message: truncate(string(data), 200)}, fault.AppleUnavailable, "Apple answered with an unexpected error (HTTP %d). Try again later.", resp.StatusCode)}
	}
	if isPage {
		if page == nil {
			var err error
			if page, err = decodePageGeneral(data); err != nil {
				return &attemptError{err: err}
			}
		}
		po.page = page
		return nil
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return &attemptError{err: fault.Wrap(fmt.Errorf("decoding %s %s: %w", method, u.Path, err), fault.AppleUnavailable, "Apple's answer could not be read. Try again later."), retry: true}
		}
	}
	return nil
}

var errorNumberKey = []byte(`"errorNumber"`)

// readBuffers holds the buffers answers are read into; an asset page is
// about 100 KB, and a sync reads hundreds of them.
var readBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func releaseBuffer(b *bytes.Buffer) {
	if b.Cap() > 1<<20 {
		return // an outsized answer's buffer is left to the collector
	}
	b.Reset()
	readBuffers.Put(b)
}

// classify turns an Apple error number into Orchard's terms.
func classify(eb errorBody, status int, retryAfter time.Duration) *attemptError {
	ae := &apple.Error{Number: eb.ErrorNumber, Message: eb.ErrorMessage, Status: status, Info: eb.ErrorInfo.domain()}
	switch eb.ErrorNumber {
	case 9621:
		return &attemptError{err: fault.Wrap(ae, fault.TokenExpired, "Apple says the token has expired.")}
	case 9622, 9722, 9601:
		return &attemptError{err: fault.Wrap(ae, fault.TokenInvalid, "Apple does not accept the token.")}
	case 9625:
		return &attemptError{err: fault.Wrap(ae, fault.TokenRevoked, "Apple has revoked the token.")}
	case 9646:
		return &attemptError{err: ae, retry: true, rateLimit: true, wait: retryAfter}
	case 9603, 9644, 9729:
		return &attemptError{err: ae, retry: true, wait: retryAfter}
	}
	return &attemptError{err: fault.Wrap(ae, fault.AppleUnavailable, "Apple refused the request (error %d: %s).", eb.ErrorNumber, truncate(eb.ErrorMessage, 200))}
}

// parseRetryAfter reads seconds or an HTTP date.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// scrub drops the URL from a transport error: a metadata URL's query is
// harmless, but errors should not grow with request details.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
