// Package simulator registers "apple.simulator", an in-process stand-in for
// Apple's Apps and Books API for demos and offline work.
//
// Settings (JSON, all optional):
//   - "eventDelay": how long a licence event stays PENDING, a Go duration;
//     default "2s", so the demo shows an operation in progress.
//
// A token file's inner "token" chooses the scenario. A token whose inner
// value (base64-decoded) starts with "sim:" is read as semicolon-separated
// settings, for example
//
//	sim:location=Contoso HQ;uid=1001;country=GB;apps=1200;mdm=Jamf Pro;state=revoked
//
// location, uid and country describe the location; apps is how many assets
// it holds; mdm names another MDM that manages it (a CONFLICT on upload);
// state is one of expired, revoked, invalid, ratelimited or unavailable,
// which Apple would answer to every call; metadataDelay (a Go duration)
// makes the app-name lookup that slow, as Apple's can be. Any other token is a valid
// location with no other MDM and 25 apps, derived from the token's hash.
// The demo (orchard demo) writes one file per scenario.
//
// Licences behave as Apple's do (see licences.go): associate, disassociate
// and revoke return an event that ends after eventDelay; counts go down as
// licences are assigned and up as they are taken back; a pair for which no
// licence is left fails with 9709; requests above Apple's example limits are
// refused with Apple's errors. A location that registered a notification URL
// gets ASSET_MANAGEMENT and ASSET_COUNT notifications there (after
// TEST_NOTIFICATION, which must be answered); one that did not is simply not
// notified, and its events are followed through EventStatus.
package simulator

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/fault"
)

func init() { modules.Register(&Client{}) }

// Client is the simulated Apple.
type Client struct {
	EventDelay Duration `json:"eventDelay,omitempty"`

	mu     sync.Mutex
	mdm    map[string]*apple.MDMInfo // by location UID: what "Apple" stores
	locs   map[string]*location      // by location UID, once licences are used
	events map[string]*simEvent
	seq    atomic.Int64
}

// Interface guard.
var _ apple.Client = (*Client)(nil)

// ModuleInfo implements modules.Module.
func (*Client) ModuleInfo() modules.Info {
	return modules.Info{ID: "apple.simulator", New: func() modules.Module { return &Client{EventDelay: Duration(2 * time.Second)} }}
}

type scenario struct {
	uid, location, country string
	apps                   int
	otherMDM               string
	state                  string
	expires                time.Time
	metadataDelay          time.Duration
}

func parse(token []byte) (*scenario, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(token)))
	if err != nil {
		return nil, fault.New(fault.TokenInvalid, "Invalid authentication token")
	}
	var f struct {
		Token   string `json:"token"`
		ExpDate string `json:"expDate"`
	}
	if json.Unmarshal(raw, &f) != nil || f.Token == "" {
		return nil, fault.New(fault.TokenInvalid, "Invalid authentication token")
	}
	sum := sha256.Sum256([]byte(f.Token))
	sc := &scenario{
		uid:      strconv.FormatUint(binary.BigEndian.Uint64(sum[:8])%1e16, 10),
		location: "Simulated location " + fmt.Sprintf("%x", sum[:2]),
		country:  "US",
		apps:     25,
	}
	for _, layout := range []string{"2006-01-02T15:04:05Z0700", time.RFC3339} {
		if t, err := time.Parse(layout, f.ExpDate); err == nil {
			sc.expires = t.UTC()
			break
		}
	}
	inner, err := base64.StdEncoding.DecodeString(f.Token)
	if err != nil || !strings.HasPrefix(string(inner), "sim:") {
		return sc, nil
	}
	for _, kv := range strings.Split(strings.TrimPrefix(string(inner), "sim:"), ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch strings.TrimSpace(k) {
		case "uid":
			sc.uid = v
		case "location":
			sc.location = v
		case "country":
			sc.country = v
		case "apps":
			sc.apps, _ = strconv.Atoi(v)
		case "mdm":
			sc.otherMDM = v
		case "state":
			sc.state = v
		case "metadataDelay":
			sc.metadataDelay, _ = time.ParseDuration(v)
		}
	}
	return sc, nil
}

func (sc *scenario) err() error {
	switch sc.state {
	case "expired":
		return fault.Wrap(&apple.Error{Number: 9621, Status: 401}, fault.TokenExpired, "Apple says the token has expired.")
	case "revoked":
		return fault.Wrap(&apple.Error{Number: 9625, Status: 401}, fault.TokenRevoked, "Apple has revoked the token.")
	case "invalid":
		return fault.Wrap(&apple.Error{Number: 9622, Status: 200}, fault.TokenInvalid, "Apple does not accept the token.")
	case "ratelimited":
		return fault.New(fault.AppleRateLimited, "Apple is limiting requests for this organisation (simulated). Wait a few minutes and try again.")
	case "unavailable":
		return fault.New(fault.AppleUnavailable, "Apple's Apps and Books service is not answering (simulated). Try again in a few minutes; nothing was changed.")
	}
	return nil
}

func (c *Client) config(sc *scenario) *apple.ClientConfig {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mdm == nil {
		c.mdm = map[string]*apple.MDMInfo{}
	}
	if _, seen := c.mdm[sc.uid]; !seen && sc.otherMDM != "" {
		c.mdm[sc.uid] = &apple.MDMInfo{ID: "sim-" + sc.uid, Name: sc.otherMDM, Metadata: strings.ToLower(strings.ReplaceAll(sc.otherMDM, " ", "")) + ".example.com"}
	}
	var info *apple.MDMInfo
	if m := c.mdm[sc.uid]; m != nil {
		cp := *m
		info = &cp
	}
	return &apple.ClientConfig{
		LocationUID: sc.uid, LocationName: sc.location, CountryCode: sc.country,
		DefaultPlatform: "volumestore", WebsiteURL: "https://business.apple.com",
		MDMInfo: info, TokenExpiresAt: sc.expires,
	}
}

func (c *Client) load(token []byte) (*scenario, error) {
	sc, err := parse(token)
	if err != nil {
		return nil, err
	}
	return sc, sc.err()
}

// ClientConfig implements apple.Client.
func (c *Client) ClientConfig(_ context.Context, token []byte) (*apple.ClientConfig, error) {
	sc, err := c.load(token)
	if err != nil {
		return nil, err
	}
	return c.config(sc), nil
}

// SetMDMInfo implements apple.Client.
func (c *Client) SetMDMInfo(_ context.Context, token []byte, info apple.MDMInfo) (*apple.ClientConfig, error) {
	sc, err := c.load(token)
	if err != nil {
		return nil, err
	}
	if info.ID == "" || info.Name == "" || info.Metadata == "" {
		return nil, fault.Wrap(&apple.Error{Number: 9723, Status: 400}, fault.AppleUnavailable, "Apple refused the request (error 9723).")
	}
	c.config(sc) // seed the other MDM first, so a claim overwrites it
	c.mu.Lock()
	c.mdm[sc.uid] = &info
	c.mu.Unlock()
	return c.config(sc), nil
}

// Assets implements apple.Client.
func (c *Client) Assets(_ context.Context, token []byte) (*apple.Assets, error) {
	sc, err := c.load(token)
	if err != nil {
		return nil, err
	}
	cfg := c.config(sc)
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.state(sc)
	out := &apple.Assets{VersionID: "sim-" + strconv.Itoa(l.versions), MDMInfo: cfg.MDMInfo, TokenExpiresAt: sc.expires, Pages: max(1, (len(l.assets)+99)/100)}
	out.Assets = slices.Clone(l.assets)
	return out, nil
}

// Metadata implements apple.Client.
func (c *Client) Metadata(ctx context.Context, token []byte, _, _ string, adamIDs []string) (map[string]apple.Metadata, error) {
	sc, err := c.load(token)
	if err != nil {
		return nil, err
	}
	if sc.metadataDelay > 0 {
		select {
		case <-time.After(sc.metadataDelay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	out := make(map[string]apple.Metadata, len(adamIDs))
	for _, id := range adamIDs {
		n, _ := strconv.Atoi(id)
		out[id] = apple.Metadata{Name: fmt.Sprintf("Simulated App %d", n-100000000+1), BundleID: "com.example.sim" + id}
	}
	return out, nil
}

// ScenarioToken returns a .vpptoken file that selects a simulator scenario.
func ScenarioToken(orgName string, expires time.Time, settings string) []byte {
	inner := base64.StdEncoding.EncodeToString([]byte("sim:" + settings))
	b, _ := json.Marshal(map[string]string{"token": inner, "expDate": expires.UTC().Format("2006-01-02T15:04:05-0700"), "orgName": orgName})
	return []byte(base64.StdEncoding.EncodeToString(b))
}
