package domain_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/orchard-msp/orchard/ent/webhookdelivery"
	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/graph/domain/testdb"
	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/notify"
	"github.com/orchard-msp/orchard/modules/notify/webhook"
)

// receiver is a webhook endpoint that checks signatures and can be told to fail.
type receiver struct {
	mu       sync.Mutex
	failNext int
	got      []domain.WebhookWarning
	ids      map[string]int
	badSig   int
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	ts, _ := strconv.ParseInt(req.Header.Get("X-Orchard-Timestamp"), 10, 64)
	r.mu.Lock()
	defer r.mu.Unlock()
	if req.Header.Get("X-Orchard-Signature") != webhook.Sign("s3cret", ts, body) {
		r.badSig++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	r.ids[req.Header.Get("X-Orchard-Delivery")]++
	if r.failNext > 0 {
		r.failNext--
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	var ww domain.WebhookWarning
	_ = json.Unmarshal(body, &ww)
	r.got = append(r.got, ww)
}

func TestWebhookOutbox(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *testdb.DB) {
		rcv := &receiver{failNext: 2, ids: map[string]int{}}
		srv := httptest.NewServer(rcv)
		defer srv.Close()

		e := newEnv(t, db)
		e.mods.Notifier = load[notify.Notifier](t, "notify.webhook", `{"url":"`+srv.URL+`","secret":"s3cret"}`)
		e.svc = e.service()
		c := e.customer("Hooked")
		file, _ := e.location("9801", e.now.Add(5*24*time.Hour), "hook", 0)
		e.activeToken(c.ID, file) // raises a WARNING and queues its delivery

		if ok, failed := e.svc.DeliverOutbox(t.Context()); ok != 0 || failed != 1 {
			t.Fatalf("first attempt: %d delivered, %d failed; want 0 and 1", ok, failed)
		}
		// Not due yet: the retry waits.
		if ok, failed := e.svc.DeliverOutbox(t.Context()); ok+failed != 0 {
			t.Fatal("a failed delivery was retried at once")
		}
		// A restart: a new service on the same database finds the delivery.
		e.advance(time.Minute)
		restarted := e.service()
		restarted.DeliverOutbox(t.Context()) // fails once more
		e.advance(5 * time.Minute)
		if ok, _ := restarted.DeliverOutbox(t.Context()); ok != 1 {
			t.Fatal("the delivery did not go through after the receiver recovered")
		}
		if len(rcv.got) != 1 || rcv.badSig != 0 {
			t.Fatalf("received %d warnings, %d bad signatures", len(rcv.got), rcv.badSig)
		}
		w := rcv.got[0]
		if w.Event != "token.expiry_warning" || w.Level != "WARNING" || w.CustomerName != "Hooked" || w.DaysUntilExpiry != 5 {
			t.Fatalf("payload = %+v", w)
		}
		if rcv.ids[w.DeliveryID] != 3 {
			t.Fatalf("delivery %s attempted %d times, want 3 under one ID", w.DeliveryID, rcv.ids[w.DeliveryID])
		}
		d, _ := db.Client.WebhookDelivery.Query().Where(webhookdelivery.DeliveryID(w.DeliveryID)).Only(e.system)
		if d.DeliveredAt == nil || d.Attempts != 3 {
			t.Fatalf("outbox row = %+v", d)
		}
	})
}

// failingNotifier fails every delivery with its message.
type failingNotifier struct{ msg string }

func (failingNotifier) ModuleInfo() modules.Info {
	return modules.Info{ID: "notify.failing", New: func() modules.Module { return failingNotifier{} }}
}

func (n failingNotifier) Notify(context.Context, notify.Delivery) error { return errors.New(n.msg) }

// A receiver's error text is stored cut to 500 bytes; a cut inside a
// multi-byte character would be refused by PostgreSQL and lose the attempt.
func TestWebhookErrorTruncatedAtCharacter(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *testdb.DB) {
		e := newEnv(t, db)
		msg := strings.Repeat("x", 499) + "é — réponse refusée"
		e.mods.Notifier = failingNotifier{msg: msg}
		e.svc = e.service()
		c := e.customer("Accented")
		file, _ := e.location("9802", e.now.Add(5*24*time.Hour), "accent", 0)
		e.activeToken(c.ID, file)

		if ok, failed := e.svc.DeliverOutbox(t.Context()); ok != 0 || failed != 1 {
			t.Fatalf("%d delivered, %d failed; want 0 and 1", ok, failed)
		}
		d, err := db.Client.WebhookDelivery.Query().Only(e.system)
		if err != nil {
			t.Fatal(err)
		}
		if d.Attempts != 1 || d.LastError != strings.Repeat("x", 499) {
			t.Fatalf("outbox row: %d attempts, last error %q (%d bytes, valid UTF-8 %v); want 1 attempt and the text cut before the é",
				d.Attempts, d.LastError, len(d.LastError), utf8.ValidString(d.LastError))
		}
	})
}
