package appletest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync/atomic"
	"time"
)

// Sent is one notification POST the fake made.
type Sent struct {
	URL           string
	Authorization string
	Type          string
	Body          []byte
	// Status is the receiver's answer; 0 when it could not be reached.
	Status int
}

var knownNotificationTypes = []string{"TEST_NOTIFICATION", "ASSET_MANAGEMENT", "USER_MANAGEMENT", "USER_ASSOCIATED",
	"ASSET_COUNT", "SUBSCRIPTION_MANAGEMENT", "SUBSCRIPTION_COUNT", "UNLIMITED_ASSET"}

// notificationRequest is the notification part of POST client/config.
type notificationRequest struct {
	NotificationURL       string   `json:"notificationUrl"`
	NotificationAuthToken string   `json:"notificationAuthToken"`
	NotificationTypes     []string `json:"notificationTypes"`
}

func (n notificationRequest) wantsNotifications() bool {
	return n.NotificationURL != "" || n.NotificationAuthToken != "" || len(n.NotificationTypes) > 0
}

// registerNotifications checks a subscription as Apple does, sends
// TEST_NOTIFICATION and stores it when the receiver answers 2xx. Apple
// wants HTTPS; the fake also takes http:// to a loopback host, which is
// what tests and a local demo listen on.
func (s *Server) registerNotifications(w http.ResponseWriter, loc *Location, req notificationRequest) bool {
	if req.NotificationURL == "" || req.NotificationAuthToken == "" {
		writeError(w, 9710, 0)
		return false
	}
	if len(req.NotificationURL) > s.limitsMap()["maxNotificationLength"] {
		writeError(w, 9711, 0)
		return false
	}
	u, err := url.Parse(req.NotificationURL)
	if err != nil || u.Host == "" || !(u.Scheme == "https" || u.Scheme == "http" && isLoopback(u.Hostname())) {
		writeError(w, 9712, 0)
		return false
	}
	for _, t := range req.NotificationTypes {
		if !slices.Contains(knownNotificationTypes, t) {
			writeError(w, 9602, 400)
			return false
		}
	}
	body := notificationBody("TEST_NOTIFICATION", loc.UID, json.RawMessage(`{}`))
	if st := s.post(req.NotificationURL, req.NotificationAuthToken, "TEST_NOTIFICATION", body); st < 200 || st > 299 {
		writeError(w, 9728, 0)
		return false
	}
	s.mu.Lock()
	loc.NotificationURL, loc.NotificationAuthToken = req.NotificationURL, req.NotificationAuthToken
	loc.NotificationTypes = slices.DeleteFunc(slices.Clone(req.NotificationTypes), func(t string) bool { return t == "TEST_NOTIFICATION" })
	s.mu.Unlock()
	return true
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

var notificationSeq atomic.Int64

func notificationBody(typ, uid string, payload any) []byte {
	b, _ := json.Marshal(map[string]any{
		"notification":     payload,
		"notificationId":   fmt.Sprintf("6a1f3b2c-0d4e-4f50-8a6b-%012d", notificationSeq.Add(1)),
		"notificationType": typ,
		"uId":              uid,
	})
	return b
}

type note struct {
	typ  string
	body []byte
}

// subscribed reports whether the location wants notifications of typ;
// the caller holds s.mu.
func subscribed(loc *Location, typ string) bool {
	return loc.NotificationURL != "" && slices.Contains(loc.NotificationTypes, typ)
}

// assetManagementNotes builds an ended event's ASSET_MANAGEMENT
// notifications, at most 100 assignments each as Apple sends them; the
// caller holds s.mu.
func (s *Server) assetManagementNotes(ev *event) []note {
	if !subscribed(ev.loc, "ASSET_MANAGEMENT") {
		return nil
	}
	var out []note
	add := func(result string, errNum int, as []Assignment) {
		for start := 0; start < len(as) || start == 0; start += 100 {
			chunk := as[start:min(start+100, len(as))]
			p := map[string]any{"eventId": ev.id, "type": string(ev.kind), "result": result, "assignments": chunk}
			if errNum != 0 {
				p["error"] = map[string]any{"errorNumber": errNum, "errorMessage": asyncMessages[errNum]}
			}
			out = append(out, note{"ASSET_MANAGEMENT", notificationBody("ASSET_MANAGEMENT", ev.loc.UID, p)})
			if len(as) == 0 {
				break
			}
		}
	}
	if len(ev.succeeded) > 0 || len(ev.failed) == 0 {
		add("SUCCESS", 0, ev.succeeded)
	}
	nums := make([]int, 0, len(ev.failed))
	for n := range ev.failed {
		nums = append(nums, n)
	}
	slices.Sort(nums)
	for _, n := range nums {
		add("FAILURE", n, ev.failed[n])
	}
	return out
}

// Purchase changes an asset's licence count by delta, as buying (or a
// refund, negative) in Apple Business Manager does, adding the asset if
// the location has none of it, and sends ASSET_COUNT.
func (s *Server) Purchase(loc *Location, adamID, pricingParam string, delta int) {
	s.mu.Lock()
	a := findAsset(loc, adamID, pricingParam)
	if a == nil {
		loc.Assets = append(loc.Assets, Asset{AdamID: adamID, PricingParam: pricingParam, ProductType: "App",
			DeviceAssignable: true, Revocable: true, SupportedPlatforms: []string{"iOS"}})
		a = &loc.Assets[len(loc.Assets)-1]
	}
	a.TotalCount += delta
	a.AvailableCount += delta
	loc.versionSeq++
	var notes []note
	if subscribed(loc, "ASSET_COUNT") {
		notes = []note{{"ASSET_COUNT", notificationBody("ASSET_COUNT", loc.UID,
			map[string]any{"adamId": adamID, "countDelta": delta, "pricingParam": pricingParam})}}
	}
	s.mu.Unlock()
	s.deliver(loc, notes)
}

// deliver sends notes to the location's URL in order, in the background.
func (s *Server) deliver(loc *Location, notes []note) {
	s.mu.Lock()
	if len(notes) == 0 || s.lic.closed || s.DropNotifications {
		s.mu.Unlock()
		return
	}
	target, secret, times := loc.NotificationURL, loc.NotificationAuthToken, 1
	if s.DuplicateNotifications {
		times = 2
	}
	s.lic.sending.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.lic.sending.Done()
		for _, n := range notes {
			for range times {
				s.post(target, secret, n.typ, n.body)
			}
		}
	}()
}

// post delivers one notification, trying up to three times as Apple does
// (Apple spreads its tries over minutes; the fake over milliseconds).
func (s *Server) post(target, secret, typ string, body []byte) int {
	client := s.NotifyClient
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	status := 0
	for try := range 3 {
		if try > 0 {
			time.Sleep(20 * time.Millisecond)
		}
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, target, bytes.NewReader(body))
		if err != nil {
			break
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+secret)
		status = 0
		if resp, err := client.Do(req); err == nil {
			status = resp.StatusCode
			resp.Body.Close()
		}
		s.mu.Lock()
		s.lic.sent = append(s.lic.sent, Sent{URL: target, Authorization: req.Header.Get("Authorization"), Type: typ, Body: body, Status: status})
		s.mu.Unlock()
		if status >= 200 && status <= 299 {
			break
		}
	}
	return status
}

// SentNotifications returns every notification POST made so far.
func (s *Server) SentNotifications() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lic.sent)
}
