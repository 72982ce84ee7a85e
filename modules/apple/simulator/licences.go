package simulator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/fault"
)

// Duration is a time.Duration that reads from JSON as "2s".
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a string like \"2s\"")
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// location is what the simulated Apple keeps of one location once it has
// been asked about licences: counts change as licences are assigned.
type location struct {
	assets   []apple.Asset
	made     map[apple.Assignment]int // live assignments → version that made them
	order    []stamped
	version  int
	notify   *apple.NotificationSettings
	versions int // asset list version, bumped when counts change
	seeded   bool
}

type stamped struct {
	a       apple.Assignment
	version int
}

type simEvent struct {
	uid    string
	status apple.EventStatus
	done   []apple.Assignment
	failed []apple.Assignment
}

// limits are Apple's example values; the simulator holds requests to them.
var limits = apple.DefaultLimits

// state returns the location's licence state, creating it from the
// scenario (with assignments for the licences the scenario says are in
// use); the caller holds c.mu.
func (c *Client) state(sc *scenario) *location {
	if c.locs == nil {
		c.locs = map[string]*location{}
		c.events = map[string]*simEvent{}
	}
	if l := c.locs[sc.uid]; l != nil {
		return l
	}
	l := &location{made: map[apple.Assignment]int{}, version: 1, versions: 1}
	for i := range sc.apps {
		a := apple.Asset{
			AdamID: strconv.Itoa(100000000 + i), PricingParam: "STDQ", ProductType: "App",
			TotalCount: 50 + i%50, AssignedCount: i % 50, SupportedPlatforms: []string{"iOS", "macOS"},
		}
		a.AvailableCount = a.TotalCount - a.AssignedCount
		switch {
		case i%10 == 9:
			a.ProductType = "Book"
			a.SupportedPlatforms = []string{"iOS"}
		case i%7 == 6:
			a.Unlimited, a.TotalCount, a.AvailableCount = true, 0, 0
		}
		l.assets = append(l.assets, a)
	}
	c.locs[sc.uid] = l
	return l
}

// seed makes up the assignments behind the counts the scenario starts
// with, the first time licences are looked at: a demo location of a
// thousand apps holds tens of thousands, which a plain sync never needs.
func (l *location) seed() {
	if l.seeded {
		return
	}
	l.seeded = true
	for i, a := range l.assets {
		for k := range a.AssignedCount {
			as := apple.Assignment{AdamID: a.AdamID, PricingParam: a.PricingParam}
			if a.ProductType == "Book" {
				as.ClientUserID = fmt.Sprintf("sim-user-%d", k)
			} else {
				as.SerialNumber = fmt.Sprintf("SIM%07dK%03d", i, k)
			}
			l.add(as)
		}
	}
}

func (l *location) add(a apple.Assignment) {
	l.made[a] = l.version
	l.order = append(l.order, stamped{a, l.version})
}

func (l *location) since(v int, keep func(apple.Assignment) bool) []apple.Assignment {
	i := sort.Search(len(l.order), func(i int) bool { return l.order[i].version > v })
	var out []apple.Assignment
	for _, e := range l.order[i:] {
		if got, ok := l.made[e.a]; ok && got == e.version && keep(e.a) {
			out = append(out, e.a)
		}
	}
	return out
}

func (l *location) asset(id apple.AssetID) *apple.Asset {
	for i := range l.assets {
		if l.assets[i].AdamID == id.AdamID && l.assets[i].PricingParam == id.PricingParam {
			return &l.assets[i]
		}
	}
	return nil
}

func refusal(n int, msg string, info apple.ErrorInfo) error {
	return fault.Wrap(&apple.Error{Number: n, Status: 400, Message: msg, Info: info}, fault.BadUserInput, "Apple refused the request (error %d). %s", n, msg)
}

func checkTargets(serials, users []string, maxSerials, maxUsers int) error {
	switch {
	case len(serials) == 0 && len(users) == 0:
		return refusal(9719, "The request names no serial number and no user. Name at least one.", apple.ErrorInfo{})
	case len(users) > maxUsers:
		return refusal(9701, fmt.Sprintf("The request names more users than Apple accepts at once (%d). Send fewer users per request.", maxUsers), apple.ErrorInfo{})
	case len(serials) > maxSerials:
		return refusal(9702, fmt.Sprintf("The request names more serial numbers than Apple accepts at once (%d). Send fewer serial numbers per request.", maxSerials), apple.ErrorInfo{})
	}
	return nil
}

// UpdateClientConfig implements apple.Client. A notification URL is
// registered only if it answers TEST_NOTIFICATION, as with Apple.
func (c *Client) UpdateClientConfig(ctx context.Context, token []byte, u apple.ClientConfigUpdate) (*apple.ClientConfig, error) {
	sc, err := c.load(token)
	if err != nil {
		return nil, err
	}
	if n := u.Notifications; n != nil {
		if n.URL == "" || n.AuthToken == "" {
			return nil, refusal(9710, "A notification URL needs a secret, and a secret needs a URL. Send both.", apple.ErrorInfo{})
		}
		note := &apple.Notification{ID: c.nextID("test"), Type: apple.NotifyTest, LocationUID: sc.uid}
		if st := post(ctx, n.URL, n.AuthToken, note); st < 200 || st > 299 {
			return nil, refusal(9728, "Apple could not reach the notification URL or it did not answer Apple's test notification with 2xx. Check that the URL answers.", apple.ErrorInfo{})
		}
	}
	if u.MDMInfo != nil {
		if _, err := c.SetMDMInfo(ctx, token, *u.MDMInfo); err != nil {
			return nil, err
		}
	}
	c.mu.Lock()
	l := c.state(sc)
	if u.Notifications != nil {
		n := *u.Notifications
		n.Types = slices.Clone(n.Types)
		l.notify = &n
	}
	c.mu.Unlock()
	return c.ClientConfig(ctx, token)
}

// ServiceConfig implements apple.Client.
func (c *Client) ServiceConfig(context.Context) (*apple.ServiceConfig, error) {
	return &apple.ServiceConfig{
		Limits: limits,
		NotificationTypes: []apple.NotificationType{apple.NotifyAssetManagement, apple.NotifyUserManagement,
			apple.NotifyUserAssociated, apple.NotifyAssetCount},
		FetchedAt: time.Now(),
	}, nil
}

// AssociateAssets implements apple.Client.
func (c *Client) AssociateAssets(ctx context.Context, token []byte, req apple.ManageAssets) (*apple.EventReceipt, error) {
	return c.manage(ctx, token, apple.EventAssociate, req)
}

// DisassociateAssets implements apple.Client.
func (c *Client) DisassociateAssets(ctx context.Context, token []byte, req apple.ManageAssets) (*apple.EventReceipt, error) {
	return c.manage(ctx, token, apple.EventDisassociate, req)
}

func (c *Client) manage(_ context.Context, token []byte, kind apple.EventType, req apple.ManageAssets) (*apple.EventReceipt, error) {
	sc, err := c.load(token)
	if err != nil {
		return nil, err
	}
	if len(req.Assets) == 0 {
		return nil, refusal(9718, "The request names no asset. Name at least one.", apple.ErrorInfo{})
	}
	if len(req.Assets) > limits.MaxAssets {
		return nil, refusal(9700, fmt.Sprintf("The request names more assets than Apple accepts at once (%d). Send fewer assets per request.", limits.MaxAssets), apple.ErrorInfo{})
	}
	if err := checkTargets(req.SerialNumbers, req.ClientUserIDs, limits.MaxSerialNumbers, limits.MaxClientUserIDs); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.state(sc)
	l.seed()
	if kind == apple.EventAssociate && len(req.SerialNumbers) > 0 {
		for _, id := range req.Assets {
			if a := l.asset(id); a != nil && a.ProductType == "Book" {
				return nil, refusal(9707, "The asset cannot be assigned to devices. Assign it to users instead.", apple.ErrorInfo{Assets: []apple.AssetID{id}})
			}
		}
	}
	ev := &simEvent{uid: sc.uid, status: apple.EventStatus{State: apple.EventPending, Type: kind, NumRequested: req.Pairs()}}
	return c.start(sc, ev, func() { c.applyManage(l, ev, req) }), nil
}

// RevokeAssets implements apple.Client.
func (c *Client) RevokeAssets(_ context.Context, token []byte, req apple.RevokeAssets) (*apple.EventReceipt, error) {
	sc, err := c.load(token)
	if err != nil {
		return nil, err
	}
	if err := checkTargets(req.SerialNumbers, req.ClientUserIDs, limits.MaxRevokeSerialNumbers, limits.MaxRevokeClientUserIDs); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.state(sc)
	l.seed()
	ev := &simEvent{uid: sc.uid, status: apple.EventStatus{State: apple.EventPending, Type: apple.EventRevoke, NumRequested: len(req.SerialNumbers) + len(req.ClientUserIDs)}}
	return c.start(sc, ev, func() {
		for _, who := range append(slices.Clone(req.SerialNumbers), req.ClientUserIDs...) {
			for _, a := range l.since(-1, func(a apple.Assignment) bool { return a.SerialNumber == who || a.ClientUserID == who }) {
				delete(l.made, a)
				if as := l.asset(apple.AssetID{AdamID: a.AdamID, PricingParam: a.PricingParam}); as != nil {
					as.AssignedCount--
					if !as.Unlimited {
						as.AvailableCount++
					}
				}
				ev.done = append(ev.done, a)
			}
			ev.status.NumCompleted++
		}
	}), nil
}

// start records an event and ends it after EventDelay; the caller holds c.mu.
func (c *Client) start(sc *scenario, ev *simEvent, work func()) *apple.EventReceipt {
	ev.status.EventID = c.nextID("event")
	c.events[ev.status.EventID] = ev
	time.AfterFunc(time.Duration(c.EventDelay), func() {
		c.mu.Lock()
		l := c.locs[ev.uid]
		l.version++
		work()
		l.versions++
		ev.status.State = apple.EventComplete
		if ev.status.NumCompleted == 0 && ev.status.NumRequested > 0 {
			ev.status.State = apple.EventFailed
		}
		var n *apple.NotificationSettings
		if l.notify != nil && slices.Contains(l.notify.Types, apple.NotifyAssetManagement) {
			n = l.notify
		}
		notes := c.eventNotes(ev)
		c.mu.Unlock()
		if n != nil {
			for _, note := range notes {
				post(context.Background(), n.URL, n.AuthToken, note)
			}
		}
	})
	return &apple.EventReceipt{EventID: ev.status.EventID, TokenExpiresAt: sc.expires}
}

func (c *Client) applyManage(l *location, ev *simEvent, req apple.ManageAssets) {
	for _, id := range req.Assets {
		a := l.asset(id)
		var fs apple.Failure
		for _, who := range append(slices.Clone(req.SerialNumbers), req.ClientUserIDs...) {
			as := apple.Assignment{AdamID: id.AdamID, PricingParam: id.PricingParam}
			if slices.Contains(req.SerialNumbers, who) {
				as.SerialNumber = who
			} else {
				as.ClientUserID = who
			}
			_, has := l.made[as]
			num := 0
			switch {
			case a == nil:
				num = 9610
			case ev.status.Type == apple.EventDisassociate:
				if has {
					delete(l.made, as)
					a.AssignedCount--
					if !a.Unlimited {
						a.AvailableCount++
					}
				}
			case has:
			case !a.Unlimited && a.AvailableCount <= 0:
				num = 9709
			default:
				l.add(as)
				a.AssignedCount++
				if !a.Unlimited {
					a.AvailableCount--
				}
			}
			if num == 0 {
				ev.status.NumCompleted++
				ev.done = append(ev.done, as)
				continue
			}
			ev.failed = append(ev.failed, as)
			fs.Number = num
			if as.SerialNumber != "" {
				fs.SerialNumbers = append(fs.SerialNumbers, who)
			} else {
				fs.ClientUserIDs = append(fs.ClientUserIDs, who)
			}
		}
		if fs.Number != 0 {
			fs.Message = map[int]string{9709: "Not enough assets available.", 9610: "License not found."}[fs.Number]
			fs.Assets = []apple.AssetID{id}
			ev.status.Failures = append(ev.status.Failures, fs)
		}
	}
}

// eventNotes are an ended event's ASSET_MANAGEMENT notifications, at most
// 100 assignments each; the caller holds c.mu.
func (c *Client) eventNotes(ev *simEvent) []*apple.Notification {
	var out []*apple.Notification
	add := func(result apple.AssetResult, f *apple.Failure, as []apple.Assignment) {
		for start := 0; start == 0 || start < len(as); start += apple.MaxNotificationPairs {
			out = append(out, &apple.Notification{ID: c.nextID("note"), Type: apple.NotifyAssetManagement, LocationUID: ev.uid,
				AssetManagement: &apple.AssetManagement{EventID: ev.status.EventID, Type: ev.status.Type, Result: result, Error: f,
					Assignments: as[start:min(start+apple.MaxNotificationPairs, len(as))]}})
		}
	}
	if len(ev.done) > 0 || len(ev.failed) == 0 {
		add(apple.ResultSuccess, nil, ev.done)
	}
	if len(ev.failed) > 0 {
		f := ev.status.Failures[0]
		add(apple.ResultFailure, &apple.Failure{Number: f.Number, Message: f.Message}, ev.failed)
	}
	return out
}

// EventStatus implements apple.Client.
func (c *Client) EventStatus(_ context.Context, token []byte, eventID string) (*apple.EventStatus, error) {
	sc, err := c.load(token)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ev := c.events[eventID]
	if ev == nil || ev.uid != sc.uid {
		return nil, refusal(9708, "Apple does not know this event. Check the assignments in Apple Business Manager.", apple.ErrorInfo{})
	}
	st := ev.status
	st.Failures = slices.Clone(st.Failures)
	st.TokenExpiresAt = sc.expires
	return &st, nil
}

// Assignments implements apple.Client.
func (c *Client) Assignments(_ context.Context, token []byte, q apple.AssignmentQuery) (*apple.Assignments, error) {
	sc, err := c.load(token)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.state(sc)
	l.seed()
	since, incremental := -1, false
	if v, ok := strings.CutPrefix(q.SinceVersionID, "sim-assign-"); ok {
		if n, err := strconv.Atoi(v); err == nil && n <= l.version {
			since, incremental = n, true
		}
	}
	list := l.since(since, func(a apple.Assignment) bool {
		return (q.AdamID == "" || a.AdamID == q.AdamID) && (q.SerialNumber == "" || a.SerialNumber == q.SerialNumber) &&
			(q.ClientUserID == "" || a.ClientUserID == q.ClientUserID)
	})
	return &apple.Assignments{Assignments: list, VersionID: "sim-assign-" + strconv.Itoa(l.version), Incremental: incremental,
		Pages: max(1, (len(list)+99)/100), TokenExpiresAt: sc.expires}, nil
}

// Purchase adds delta licences of an asset to the location of token, as a
// purchase in Apple Business Manager would, and sends ASSET_COUNT when the
// location subscribed to it. The demo uses it to show a purchase arriving.
func (c *Client) Purchase(ctx context.Context, token []byte, id apple.AssetID, delta int) error {
	sc, err := c.load(token)
	if err != nil {
		return err
	}
	c.mu.Lock()
	l := c.state(sc)
	a := l.asset(id)
	if a == nil {
		l.assets = append(l.assets, apple.Asset{AdamID: id.AdamID, PricingParam: id.PricingParam, ProductType: "App", SupportedPlatforms: []string{"iOS"}})
		a = &l.assets[len(l.assets)-1]
	}
	a.TotalCount += delta
	a.AvailableCount += delta
	l.versions++
	n := l.notify
	note := &apple.Notification{ID: c.nextID("note"), Type: apple.NotifyAssetCount, LocationUID: sc.uid,
		AssetCount: &apple.AssetCount{AdamID: id.AdamID, PricingParam: id.PricingParam, CountDelta: delta}}
	c.mu.Unlock()
	if n != nil && slices.Contains(n.Types, apple.NotifyAssetCount) {
		post(ctx, n.URL, n.AuthToken, note)
	}
	return nil
}

// nextID returns a fresh identifier; the caller need not hold c.mu.
func (c *Client) nextID(kind string) string {
	return fmt.Sprintf("sim-%s-%d", kind, c.seq.Add(1))
}

// post delivers one notification and returns the receiver's status (0 when
// it could not be reached).
func post(ctx context.Context, target, secret string, n *apple.Notification) int {
	body, err := json.Marshal(n)
	if err != nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
