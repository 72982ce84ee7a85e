// Package appletest is a stand-in for Apple's App and Book Management API,
// served over real HTTP by net/http/httptest. It follows Apple's documented
// behaviour, odd parts included: 9622 comes back with HTTP 200, 9621 and 9625
// with 401, 9646 with 429 and Retry-After, pages carry nextPageIndex and a
// versionId, service config names the metadata lookup URL, and POST
// client/config insists on JSON and on all three mdmInfo fields (9723).
//
// Licences (see licences.go) behave as Apple describes them: associate,
// disassociate and revoke answer with an eventId at once and do the work
// when the event ends (after EventDelay, or when ReleaseEvents is called
// with HoldEvents set); counts go down as licences are assigned and up as
// they are taken back; a pair for which no licence is left fails with 9709;
// requests above the service config's limits get Apple's 97xx errors;
// assignments carry versionIds for incremental reads. A location that
// registered a notification URL gets Apple's notifications there with its
// bearer secret (see notify.go).
//
// Its response bodies start from Apple's published examples in testdata/.
// It is for tests and the demo only; Orchard's real client is tested
// against it, never through the simulator.
package appletest

import (
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed testdata/*.json
var testdata embed.FS

func load(name string, v any) {
	b, err := testdata.ReadFile("testdata/" + name)
	if err != nil {
		panic(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		panic(fmt.Sprintf("%s: %v", name, err))
	}
}

type appleError struct {
	Status int             `json:"status"`
	Body   json.RawMessage `json:"body"`
}

var errorsByNumber = func() map[int]appleError {
	var raw map[string]appleError
	load("errors.json", &raw)
	out := map[int]appleError{}
	for k, v := range raw {
		n, _ := strconv.Atoi(k)
		out[n] = v
	}
	return out
}()

// MDMInfo is Apple's mdmInfo.
type MDMInfo struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Metadata string `json:"metadata"`
}

// Asset is one asset of a location, as Apple lists it.
type Asset struct {
	AdamID             string   `json:"adamId"`
	AssignedCount      int      `json:"assignedCount"`
	AvailableCount     int      `json:"availableCount"`
	DeviceAssignable   bool     `json:"deviceAssignable"`
	PricingParam       string   `json:"pricingParam"`
	ProductType        string   `json:"productType"`
	RetiredCount       int      `json:"retiredCount"`
	Revocable          bool     `json:"revocable"`
	SupportedPlatforms []string `json:"supportedPlatforms"`
	TotalCount         int      `json:"totalCount"`
}

// Location is one Apple location (library) and what Apple knows of it.
type Location struct {
	UID       string
	Name      string
	Country   string
	Platform  string
	MDM       *MDMInfo
	ExpiresAt time.Time
	Assets    []Asset
	// Names maps adamIDs to names for the metadata lookup.
	Names map[string]string
	// ErrorNumber, when set, is answered to every call with this token
	// (9621 expired, 9625 revoked, 9622 invalid…).
	ErrorNumber int
	versionSeq  int

	// NotificationURL, NotificationAuthToken and NotificationTypes are the
	// subscription registered through POST client/config.
	NotificationURL       string
	NotificationAuthToken string
	NotificationTypes     []string

	assignments assignmentBook
}

// Failure is an answer injected ahead of the normal one.
type Failure struct {
	Status      int
	ErrorNumber int // 0: a plain HTTP error with an empty body
	RetryAfter  string
}

// Server is the fake Apple.
type Server struct {
	*httptest.Server

	// PageSize is how many assets one page holds (Apple: "several hundred").
	PageSize int
	// Latency delays every answer.
	Latency time.Duration
	// ChangeVersionOnPage, when > 0, makes the location's versionId change
	// once while that page is served, as a purchase during a fetch would.
	ChangeVersionOnPage int

	// EventDelay is how long a licence event stays PENDING.
	EventDelay time.Duration
	// HoldEvents keeps new events PENDING until ReleaseEvents.
	HoldEvents bool
	// DropNotifications sends no notification but TEST_NOTIFICATION (which
	// Apple needs answered to register a URL), as when Apple's best-effort
	// delivery fails; DuplicateNotifications sends each one twice.
	DropNotifications      bool
	DuplicateNotifications bool
	// NotifyClient delivers notifications; nil: a client with a 5 s timeout.
	NotifyClient *http.Client

	lic licenceState

	mu          sync.Mutex
	tokens      map[string]*Location
	failures    []Failure
	counts      map[string]int
	queries     map[string][]url.Values
	inFlight    int
	maxInFlight int
	versionBump bool
}

// New starts a fake Apple; Close stops it.
func New() *Server {
	s := &Server{PageSize: 100, tokens: map[string]*Location{}, counts: map[string]int{}, queries: map[string][]url.Values{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/mdm/v2/client/config", s.clientConfig)
	mux.HandleFunc("/mdm/v2/assets", s.assets)
	mux.HandleFunc("/mdm/v2/service/config", s.serviceConfig)
	mux.HandleFunc("/lookup", s.lookup)
	mux.HandleFunc("/mdm/v2/assets/associate", s.manage(eventAssociate))
	mux.HandleFunc("/mdm/v2/assets/disassociate", s.manage(eventDisassociate))
	mux.HandleFunc("/mdm/v2/assets/revoke", s.revoke)
	mux.HandleFunc("/mdm/v2/status", s.status)
	mux.HandleFunc("/mdm/v2/assignments", s.assignmentsHandler)
	s.lic.events = map[string]*event{}
	s.Server = httptest.NewServer(s.wrap(mux))
	return s
}

// BaseURL is the value for ORCHARD_APPLE_URL.
func (s *Server) BaseURL() string { return s.URL + "/mdm/v2" }

// AddLocation makes token (the whole .vpptoken file) belong to loc.
func (s *Server) AddLocation(token []byte, loc *Location) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if loc.Country == "" {
		loc.Country = "US"
	}
	if loc.Platform == "" {
		loc.Platform = "volumestore"
	}
	s.tokens[strings.TrimSpace(string(token))] = loc
}

// Location returns the location a token belongs to.
func (s *Server) Location(token []byte) *Location {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokens[strings.TrimSpace(string(token))]
}

// Update runs fn with the fake's lock held, to change a location safely.
func (s *Server) Update(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn()
}

// Fail queues answers that come before the normal ones, one per request.
func (s *Server) Fail(f ...Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, f...)
}

// ClearFailures drops the injected answers not yet given.
func (s *Server) ClearFailures() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = nil
}

// Count returns how many requests reached "METHOD /path".
func (s *Server) Count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[key]
}

// Queries returns the query strings of the requests that reached
// "METHOD /path", oldest first. Only assignment reads are kept (their
// sinceVersionId and pageIndex are what tests look at).
func (s *Server) Queries(key string) []url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.queries[key])
}

// MaxInFlight returns the most requests that were ever served at once.
func (s *Server) MaxInFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxInFlight
}

func (s *Server) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.counts[r.Method+" "+r.URL.Path]++
		if r.URL.Path == "/mdm/v2/assignments" {
			s.queries[r.Method+" "+r.URL.Path] = append(s.queries[r.Method+" "+r.URL.Path], r.URL.Query())
		}
		s.inFlight++
		s.maxInFlight = max(s.maxInFlight, s.inFlight)
		var f *Failure
		if len(s.failures) > 0 && r.URL.Path != "/lookup" {
			f = &s.failures[0]
			s.failures = s.failures[1:]
		}
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.inFlight--
			s.mu.Unlock()
		}()
		if s.Latency > 0 {
			// Answer Latency after the request arrived, however long the
			// answer took to build, so the fake's own work is not counted.
			start, out := time.Now(), w
			rec := httptest.NewRecorder()
			defer func() {
				time.Sleep(time.Until(start.Add(s.Latency)))
				for k, v := range rec.Header() {
					out.Header()[k] = v
				}
				out.WriteHeader(rec.Code)
				_, _ = out.Write(rec.Body.Bytes())
			}()
			w = rec
		}
		if f != nil {
			if f.RetryAfter != "" {
				w.Header().Set("Retry-After", f.RetryAfter)
			}
			if f.ErrorNumber != 0 {
				writeError(w, f.ErrorNumber, f.Status)
				return
			}
			w.WriteHeader(f.Status)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers with Apple's documented body and status for n; status
// overrides the documented one when non-zero.
func writeError(w http.ResponseWriter, n, status int) {
	e, ok := errorsByNumber[n]
	if !ok {
		e = appleError{Status: 400, Body: json.RawMessage(fmt.Sprintf(`{"errorNumber":%d,"errorMessage":"Error %d."}`, n, n))}
	}
	if status == 0 {
		status = e.Status
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_, _ = w.Write(e.Body)
}

// authorize finds the location of the request's bearer token, answering as
// Apple does when it cannot.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) *Location {
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "Bearer ") {
		writeError(w, 9722, 0)
		return nil
	}
	s.mu.Lock()
	loc := s.tokens[strings.TrimPrefix(auth, "Bearer ")]
	s.mu.Unlock()
	if loc == nil {
		writeError(w, 9622, 0) // Apple answers a token it does not know with HTTP 200
		return nil
	}
	if loc.ErrorNumber != 0 {
		writeError(w, loc.ErrorNumber, 0)
		return nil
	}
	return loc
}

func appleTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05-0700") }

func (s *Server) configBody(loc *Location) map[string]any {
	var body map[string]any
	load("client_config.json", &body)
	delete(body, "notificationAuthToken")
	delete(body, "notificationUrl")
	delete(body, "subscribedNotificationTypes")
	body["countryISO2ACode"] = loc.Country
	body["defaultPlatform"] = loc.Platform
	body["locationName"] = loc.Name
	body["uId"] = loc.UID
	body["tokenExpirationDate"] = appleTime(loc.ExpiresAt)
	body["websiteURL"] = "https://business.apple.com"
	if loc.NotificationURL != "" {
		body["notificationUrl"] = loc.NotificationURL
		body["notificationAuthToken"] = loc.NotificationAuthToken
		body["subscribedNotificationTypes"] = loc.NotificationTypes
	}
	if loc.MDM != nil {
		body["mdmInfo"] = loc.MDM
	} else {
		delete(body, "mdmInfo")
	}
	return body
}

func (s *Server) clientConfig(w http.ResponseWriter, r *http.Request) {
	loc := s.authorize(w, r)
	if loc == nil {
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.mu.Lock()
		body := s.configBody(loc)
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, body)
	case http.MethodPost:
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			writeError(w, 9727, 0)
			return
		}
		var req struct {
			MDMInfo *MDMInfo `json:"mdmInfo"`
			notificationRequest
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeError(w, 9602, 400)
			return
		}
		if req.MDMInfo != nil {
			if req.MDMInfo.ID == "" || req.MDMInfo.Name == "" || req.MDMInfo.Metadata == "" {
				writeError(w, 9723, 0)
				return
			}
			if len(req.MDMInfo.ID) > 100 || len(req.MDMInfo.Name) > 100 || len(req.MDMInfo.Metadata) > 255 {
				writeError(w, 9713, 400)
				return
			}
		}
		if req.wantsNotifications() && !s.registerNotifications(w, loc, req.notificationRequest) {
			return
		}
		s.mu.Lock()
		if req.MDMInfo != nil {
			loc.MDM = req.MDMInfo
		}
		body := s.configBody(loc)
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, body)
	default:
		writeError(w, 9726, 0)
	}
}

func (s *Server) assets(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, 9726, 0)
		return
	}
	loc := s.authorize(w, r)
	if loc == nil {
		return
	}
	page := 0
	if v := r.URL.Query().Get("pageIndex"); v != "" {
		var err error
		if page, err = strconv.Atoi(v); err != nil {
			writeError(w, 9650, 0)
			return
		}
	}
	s.mu.Lock()
	if s.ChangeVersionOnPage > 0 && page == s.ChangeVersionOnPage && !s.versionBump {
		s.versionBump = true
		loc.versionSeq++
	}
	size := max(s.PageSize, 1)
	total := max((len(loc.Assets)+size-1)/size, 1)
	if page < 0 || page >= total {
		s.mu.Unlock()
		writeError(w, 9650, 0)
		return
	}
	var body map[string]any
	load("assets_page.json", &body)
	start, end := page*size, min((page+1)*size, len(loc.Assets))
	body["assets"] = append([]Asset{}, loc.Assets[start:end]...)
	body["currentPageIndex"] = page
	body["size"] = end - start
	body["totalPages"] = total
	body["uId"] = loc.UID
	body["tokenExpirationDate"] = appleTime(loc.ExpiresAt)
	body["versionId"] = fmt.Sprintf("70e8c740-514c-11eb-bb63-%012d", loc.versionSeq)
	if page+1 < total {
		body["nextPageIndex"] = page + 1
	}
	if loc.MDM != nil {
		body["mdmInfo"] = loc.MDM
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, body)
}

// BumpVersion changes a location's versionId, as a purchase would.
func (s *Server) BumpVersion(loc *Location) {
	s.mu.Lock()
	loc.versionSeq++
	s.mu.Unlock()
}

func (s *Server) serviceConfig(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	load("service_config.json", &body)
	urls := body["urls"].(map[string]any)
	urls["contentMetadataLookup"] = s.URL + "/lookup"
	urls["clientConfig"] = s.BaseURL() + "/client/config"
	urls["getAssets"] = s.BaseURL() + "/assets"
	for k, v := range map[string]string{"getAssignments": "/assignments", "associateAssets": "/assets/associate",
		"disassociateAssets": "/assets/disassociate", "revokeAssets": "/assets/revoke", "eventStatus": "/status"} {
		urls[k] = s.BaseURL() + v
	}
	body["limits"] = s.limitsMap()
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) lookup(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie("itvt")
	if err != nil {
		writeError(w, 9601, 0)
		return
	}
	s.mu.Lock()
	loc := s.tokens[c.Value]
	s.mu.Unlock()
	if loc == nil {
		writeError(w, 9622, 0)
		return
	}
	var sample struct {
		Results map[string]map[string]any `json:"results"`
	}
	load("lookup.json", &sample)
	template := sample.Results["408709785"]
	results := map[string]any{}
	s.mu.Lock()
	for _, id := range strings.Split(r.URL.Query().Get("id"), ",") {
		name, ok := loc.Names[id]
		if !ok {
			continue // Apple leaves unknown IDs out
		}
		entry := map[string]any{}
		for k, v := range template {
			entry[k] = v
		}
		entry["name"] = name
		entry["bundleId"] = "com.example." + id
		entry["artwork"] = []map[string]any{{"width": 512, "height": 512, "url": "https://is1-ssl.mzstatic.com/image/thumb/" + id + "/512x512bb.png"}}
		results[id] = entry
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"results": results})
}

// TokenFile returns a .vpptoken file as Apple writes one: base64 of compact
// JSON with token, expDate and orgName.
func TokenFile(orgName string, expires time.Time, secret string) []byte {
	b, _ := json.Marshal(map[string]string{
		"token":   base64.StdEncoding.EncodeToString([]byte(secret)),
		"expDate": appleTime(expires),
		"orgName": orgName,
	})
	return []byte(base64.StdEncoding.EncodeToString(b))
}

// MakeAssets returns n paid assets with distinct adamIDs.
func MakeAssets(n int) []Asset {
	out := make([]Asset, n)
	for i := range out {
		out[i] = Asset{
			AdamID: strconv.Itoa(400000000 + i), PricingParam: "STDQ", ProductType: "App",
			TotalCount: 100, AssignedCount: i % 100, AvailableCount: 100 - i%100,
			DeviceAssignable: true, Revocable: true, SupportedPlatforms: []string{"iOS", "macOS"},
		}
	}
	return out
}
