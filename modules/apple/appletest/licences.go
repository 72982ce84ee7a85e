package appletest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Assignment is one licence in use, as Apple lists it: exactly one of
// SerialNumber and ClientUserID is set.
type Assignment struct {
	AdamID       string `json:"adamId"`
	PricingParam string `json:"pricingParam"`
	SerialNumber string `json:"serialNumber,omitempty"`
	ClientUserID string `json:"clientUserId,omitempty"`
}

// assignmentBook keeps a location's assignments in the order they were made,
// each with the assignment version that made it, so an incremental read
// (sinceVersionId) is a binary search, not a scan of every assignment.
type assignmentBook struct {
	version int                // the current assignment version
	made    map[Assignment]int // live assignments → version that made them
	order   []stamped          // append-only, versions ascending; stale entries skipped
}

type stamped struct {
	a       Assignment
	version int
}

func (b *assignmentBook) has(a Assignment) bool { _, ok := b.made[a]; return ok }

func (b *assignmentBook) add(a Assignment, version int) {
	if b.made == nil {
		b.made = map[Assignment]int{}
	}
	b.made[a] = version
	b.order = append(b.order, stamped{a, version})
}

func (b *assignmentBook) remove(a Assignment) {
	delete(b.made, a)
	if len(b.order) > 64 && len(b.order) > 2*len(b.made) {
		live := b.order[:0]
		for _, e := range b.order {
			if v, ok := b.made[e.a]; ok && v == e.version {
				live = append(live, e)
			}
		}
		b.order = live
	}
}

// since lists live assignments made after version, oldest first.
func (b *assignmentBook) since(version int, keep func(Assignment) bool) []Assignment {
	i := sort.Search(len(b.order), func(i int) bool { return b.order[i].version > version })
	var out []Assignment
	for _, e := range b.order[i:] {
		if v, ok := b.made[e.a]; ok && v == e.version && keep(e.a) {
			out = append(out, e.a)
		}
	}
	return out
}

// versionID is how an assignment version reads on the wire.
func versionID(v int) string { return fmt.Sprintf("009061cb-87d1-4ea8-ae4c-%012d", v) }

func parseVersionID(s string) (int, bool) {
	const prefix = "009061cb-87d1-4ea8-ae4c-"
	n, err := strconv.Atoi(strings.TrimPrefix(s, prefix))
	return n, err == nil && strings.HasPrefix(s, prefix) && n >= 0
}

type eventKind string

const (
	eventAssociate    eventKind = "ASSOCIATE"
	eventDisassociate eventKind = "DISASSOCIATE"
	eventRevoke       eventKind = "REVOKE"
)

type assetRef struct {
	AdamID       string `json:"adamId"`
	PricingParam string `json:"pricingParam"`
}

// errorInfo is Apple's errorInfo.
type errorInfo struct {
	Assets        []assetRef `json:"assets,omitempty"`
	ClientUserIDs []string   `json:"clientUserIds,omitempty"`
	SerialNumbers []string   `json:"serialNumbers,omitempty"`
}

type failure struct {
	ErrorNumber  int       `json:"errorNumber"`
	ErrorMessage string    `json:"errorMessage"`
	ErrorInfo    errorInfo `json:"errorInfo"`
}

type event struct {
	id        string
	kind      eventKind
	loc       *Location
	assets    []assetRef
	serials   []string
	users     []string
	requested int
	done      bool
	completed int
	failures  []failure
	timer     *time.Timer
	// succeeded and failed are what the notifications report.
	succeeded []Assignment
	failed    map[int][]Assignment
}

// licenceState is the fake's licence machinery; Server.mu guards it.
type licenceState struct {
	events   map[string]*event
	eventSeq int
	limits   map[string]int
	closed   bool
	sending  sync.WaitGroup
	sent     []Sent
}

// asyncMessages are the texts of Apple's asynchronous error codes.
var asyncMessages = map[int]string{
	9709: "Not enough assets available.",
	9610: "License not found.",
}

// SetLimits overrides service config limits ("maxSerialNumbers": 10…);
// the others keep Apple's example values. Requests are held to them.
func (s *Server) SetLimits(limits map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lic.limits == nil {
		s.lic.limits = map[string]int{}
	}
	for k, v := range limits {
		s.lic.limits[k] = v
	}
}

func (s *Server) limitsMap() map[string]int {
	var body struct {
		Limits map[string]int `json:"limits"`
	}
	load("service_config.json", &body)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.lic.limits {
		body.Limits[k] = v
	}
	return body.Limits
}

// Assignments returns a location's current assignments, oldest first.
func (s *Server) Assignments(loc *Location) []Assignment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return loc.assignments.since(-1, func(Assignment) bool { return true })
}

// Assign records assignments as if they had been made earlier (no event,
// no notification), taking licences from the assets' counts.
func (s *Server) Assign(loc *Location, as ...Assignment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	loc.assignments.version++
	for _, a := range as {
		if loc.assignments.has(a) {
			continue
		}
		if asset := findAsset(loc, a.AdamID, a.PricingParam); asset != nil {
			asset.AssignedCount++
			asset.AvailableCount--
		}
		loc.assignments.add(a, loc.assignments.version)
	}
	loc.versionSeq++
}

func findAsset(loc *Location, adamID, pricing string) *Asset {
	for i := range loc.Assets {
		if loc.Assets[i].AdamID == adamID && loc.Assets[i].PricingParam == pricing {
			return &loc.Assets[i]
		}
	}
	return nil
}

// writeErrorInfo answers Apple's error n with errorInfo naming what it is about.
func writeErrorInfo(w http.ResponseWriter, n int, info errorInfo) {
	e, ok := errorsByNumber[n]
	status := 400
	body := map[string]any{"errorNumber": n, "errorMessage": fmt.Sprintf("Error %d.", n)}
	if ok {
		status = e.Status
		_ = json.Unmarshal(e.Body, &body)
	}
	body["errorInfo"] = info
	writeJSON(w, status, body)
}

func duplicates(items []string) []string {
	seen := map[string]bool{}
	var dup []string
	for _, it := range items {
		if seen[it] {
			dup = append(dup, it)
		}
		seen[it] = true
	}
	return dup
}

// readRequest checks what every licence POST shares: method, content type,
// token and a JSON body.
func (s *Server) readRequest(w http.ResponseWriter, r *http.Request, v any) *Location {
	if r.Method != http.MethodPost {
		writeError(w, 9726, 0)
		return nil
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeError(w, 9727, 0)
		return nil
	}
	loc := s.authorize(w, r)
	if loc == nil {
		return nil
	}
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		writeError(w, 9602, 400)
		return nil
	}
	return loc
}

// checkTargets applies the limits and duplicate rules to serial numbers and
// users; it answers and returns false when Apple would refuse.
func checkTargets(w http.ResponseWriter, limits map[string]int, serials, users []string, maxSerials, maxUsers string) bool {
	switch {
	case len(serials) == 0 && len(users) == 0:
		writeError(w, 9719, 0)
	case len(users) > limits[maxUsers]:
		writeErrorInfo(w, 9701, errorInfo{})
	case len(serials) > limits[maxSerials]:
		writeErrorInfo(w, 9702, errorInfo{})
	case len(duplicates(users)) > 0:
		writeErrorInfo(w, 9704, errorInfo{ClientUserIDs: duplicates(users)})
	case len(duplicates(serials)) > 0:
		writeErrorInfo(w, 9705, errorInfo{SerialNumbers: duplicates(serials)})
	default:
		return true
	}
	return false
}

func (s *Server) manage(kind eventKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Assets        []assetRef `json:"assets"`
			ClientUserIDs []string   `json:"clientUserIds"`
			SerialNumbers []string   `json:"serialNumbers"`
		}
		loc := s.readRequest(w, r, &req)
		if loc == nil {
			return
		}
		limits := s.limitsMap()
		if len(req.Assets) == 0 {
			writeError(w, 9718, 0)
			return
		}
		if len(req.Assets) > limits["maxAssets"] {
			writeErrorInfo(w, 9700, errorInfo{})
			return
		}
		seen := map[assetRef]bool{}
		for _, a := range req.Assets {
			if seen[a] {
				writeErrorInfo(w, 9703, errorInfo{Assets: []assetRef{a}})
				return
			}
			seen[a] = true
		}
		if !checkTargets(w, limits, req.SerialNumbers, req.ClientUserIDs, "maxSerialNumbers", "maxClientUserIds") {
			return
		}
		if kind == eventAssociate && len(req.SerialNumbers) > 0 {
			var refused []assetRef
			s.mu.Lock()
			for _, a := range req.Assets {
				if asset := findAsset(loc, a.AdamID, a.PricingParam); asset != nil && !asset.DeviceAssignable {
					refused = append(refused, a)
				}
			}
			s.mu.Unlock()
			if len(refused) > 0 {
				writeErrorInfo(w, 9707, errorInfo{Assets: refused})
				return
			}
		}
		ev := &event{kind: kind, loc: loc, assets: req.Assets, serials: req.SerialNumbers, users: req.ClientUserIDs,
			requested: len(req.Assets) * (len(req.SerialNumbers) + len(req.ClientUserIDs))}
		s.answerEvent(w, ev)
	}
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ClientUserIDs []string `json:"clientUserIds"`
		SerialNumbers []string `json:"serialNumbers"`
	}
	loc := s.readRequest(w, r, &req)
	if loc == nil {
		return
	}
	if !checkTargets(w, s.limitsMap(), req.SerialNumbers, req.ClientUserIDs, "maxRevokeSerialNumbers", "maxRevokeClientUserIds") {
		return
	}
	ev := &event{kind: eventRevoke, loc: loc, serials: req.SerialNumbers, users: req.ClientUserIDs,
		requested: len(req.SerialNumbers) + len(req.ClientUserIDs)}
	s.answerEvent(w, ev)
}

// answerEvent records the event, schedules its end and answers with its id.
func (s *Server) answerEvent(w http.ResponseWriter, ev *event) {
	s.mu.Lock()
	s.lic.eventSeq++
	ev.id = fmt.Sprintf("954910a8-%04x-4e5b-9a6d-%012d", s.lic.eventSeq%0x10000, s.lic.eventSeq)
	s.lic.events[ev.id] = ev
	if !s.HoldEvents && !s.lic.closed {
		ev.timer = time.AfterFunc(s.EventDelay, func() { s.finish(ev) })
	}
	body := map[string]any{"eventId": ev.id, "uId": ev.loc.UID, "tokenExpirationDate": appleTime(ev.loc.ExpiresAt)}
	if ev.loc.MDM != nil {
		body["mdmInfo"] = ev.loc.MDM
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, body)
}

// ReleaseEvents ends every event still PENDING now, as Apple would have.
func (s *Server) ReleaseEvents() {
	s.mu.Lock()
	var pending []*event
	for _, ev := range s.lic.events {
		if !ev.done {
			pending = append(pending, ev)
		}
	}
	s.mu.Unlock()
	sort.Slice(pending, func(i, j int) bool { return pending[i].id < pending[j].id })
	for _, ev := range pending {
		s.finish(ev)
	}
}

// finish does an event's work and sends its notifications.
func (s *Server) finish(ev *event) {
	s.mu.Lock()
	if ev.done || s.lic.closed {
		s.mu.Unlock()
		return
	}
	ev.done = true
	ev.failed = map[int][]Assignment{}
	loc := ev.loc
	loc.assignments.version++
	v := loc.assignments.version
	switch ev.kind {
	case eventAssociate, eventDisassociate:
		for _, ref := range ev.assets {
			asset := findAsset(loc, ref.AdamID, ref.PricingParam)
			var failedSerials, failedUsers []string
			for _, t := range targets(ref, ev.serials, ev.users) {
				num := 0
				switch {
				case asset == nil:
					num = 9610
				case ev.kind == eventDisassociate:
					if loc.assignments.has(t) {
						loc.assignments.remove(t)
						asset.AssignedCount--
						asset.AvailableCount++
					}
				case loc.assignments.has(t):
					// Already assigned: Apple reports success and takes nothing.
				case asset.AvailableCount <= 0:
					num = 9709
				default:
					asset.AssignedCount++
					asset.AvailableCount--
					loc.assignments.add(t, v)
				}
				if num == 0 {
					ev.completed++
					ev.succeeded = append(ev.succeeded, t)
					continue
				}
				ev.failed[num] = append(ev.failed[num], t)
				if t.SerialNumber != "" {
					failedSerials = append(failedSerials, t.SerialNumber)
				} else {
					failedUsers = append(failedUsers, t.ClientUserID)
				}
			}
			if len(failedSerials)+len(failedUsers) > 0 {
				num := 9709
				if asset == nil {
					num = 9610
				}
				ev.failures = append(ev.failures, failure{ErrorNumber: num, ErrorMessage: asyncMessages[num],
					ErrorInfo: errorInfo{Assets: []assetRef{ref}, SerialNumbers: failedSerials, ClientUserIDs: failedUsers}})
			}
		}
	case eventRevoke:
		revoke := func(match func(Assignment) bool) {
			for _, a := range loc.assignments.since(-1, match) {
				asset := findAsset(loc, a.AdamID, a.PricingParam)
				if asset != nil && !asset.Revocable {
					continue
				}
				loc.assignments.remove(a)
				if asset != nil {
					asset.AssignedCount--
					asset.AvailableCount++
				}
				ev.succeeded = append(ev.succeeded, a)
			}
			ev.completed++
		}
		for _, sn := range ev.serials {
			revoke(func(a Assignment) bool { return a.SerialNumber == sn })
		}
		for _, u := range ev.users {
			revoke(func(a Assignment) bool { return a.ClientUserID == u })
		}
	}
	loc.versionSeq++
	notes := s.assetManagementNotes(ev)
	s.mu.Unlock()
	s.deliver(loc, notes)
}

func targets(ref assetRef, serials, users []string) []Assignment {
	out := make([]Assignment, 0, len(serials)+len(users))
	for _, sn := range serials {
		out = append(out, Assignment{AdamID: ref.AdamID, PricingParam: ref.PricingParam, SerialNumber: sn})
	}
	for _, u := range users {
		out = append(out, Assignment{AdamID: ref.AdamID, PricingParam: ref.PricingParam, ClientUserID: u})
	}
	return out
}

func (ev *event) state() string {
	switch {
	case !ev.done:
		return "PENDING"
	case ev.completed == 0 && ev.requested > 0:
		return "FAILED"
	}
	return "COMPLETE"
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, 9726, 0)
		return
	}
	loc := s.authorize(w, r)
	if loc == nil {
		return
	}
	s.mu.Lock()
	ev := s.lic.events[r.URL.Query().Get("eventId")]
	if ev == nil || ev.loc != loc {
		s.mu.Unlock()
		writeError(w, 9708, 0)
		return
	}
	body := map[string]any{
		"eventStatus": ev.state(), "eventType": string(ev.kind),
		"numCompleted": ev.completed, "numRequested": ev.requested,
		"uId": loc.UID, "tokenExpirationDate": appleTime(loc.ExpiresAt),
	}
	if ev.done && len(ev.failures) > 0 {
		body["failures"] = ev.failures
	}
	if loc.MDM != nil {
		body["mdmInfo"] = loc.MDM
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) assignmentsHandler(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, 9726, 0)
		return
	}
	loc := s.authorize(w, r)
	if loc == nil {
		return
	}
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	since := -1
	if v := q.Get("sinceVersionId"); v != "" {
		n, ok := parseVersionID(v)
		if !ok || n > loc.assignments.version {
			writeError(w, 9721, 0)
			return
		}
		since = n
	}
	adamID, serial, user := q.Get("adamId"), q.Get("serialNumber"), q.Get("clientUserId")
	list := loc.assignments.since(since, func(a Assignment) bool {
		return (adamID == "" || a.AdamID == adamID) && (serial == "" || a.SerialNumber == serial) && (user == "" || a.ClientUserID == user)
	})
	page := 0
	if v := q.Get("pageIndex"); v != "" {
		var err error
		if page, err = strconv.Atoi(v); err != nil {
			writeError(w, 9650, 0)
			return
		}
	}
	size := max(s.PageSize, 1)
	total := max((len(list)+size-1)/size, 1)
	if page < 0 || page >= total {
		writeError(w, 9650, 0)
		return
	}
	start, end := page*size, min((page+1)*size, len(list))
	body := map[string]any{
		"assignments": append([]Assignment{}, list[start:end]...), "size": end - start,
		"currentPageIndex": page, "totalPages": total, "versionId": versionID(loc.assignments.version),
		"uId": loc.UID, "tokenExpirationDate": appleTime(loc.ExpiresAt),
	}
	if page+1 < total {
		body["nextPageIndex"] = page + 1
	}
	if loc.MDM != nil {
		body["mdmInfo"] = loc.MDM
	}
	writeJSON(w, http.StatusOK, body)
}

// Close stops the fake: pending events stay pending, notifications being
// sent finish first.
func (s *Server) Close() {
	s.mu.Lock()
	s.lic.closed = true
	for _, ev := range s.lic.events {
		if ev.timer != nil {
			ev.timer.Stop()
		}
	}
	s.mu.Unlock()
	s.lic.sending.Wait()
	s.Server.Close()
}
