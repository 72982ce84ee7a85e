// Package webhook registers "notify.webhook", which POSTs each event as JSON
// to a URL (ORCHARD_WEBHOOK_URL).
//
// Settings (JSON): "url" (required), "secret" (ORCHARD_WEBHOOK_SECRET; when
// set, every request is signed), "timeout" (default "10s").
//
// Each request carries:
//
//	X-Orchard-Delivery:  the delivery ID, the same on every retry
//	X-Orchard-Event:     the event name, e.g. token.expiry_warning
//	X-Orchard-Timestamp: Unix seconds when this attempt was sent
//	X-Orchard-Signature: sha256=HEX, the HMAC-SHA256 of "TIMESTAMP.BODY" under the secret
//
// A receiver checks the signature and the timestamp's age, and answers 2xx;
// anything else is retried with backoff.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/notify"
)

func init() { modules.Register(&Webhook{}) }

// Webhook is the webhook notifier.
type Webhook struct {
	URL     string `json:"url"`
	Secret  string `json:"secret,omitempty"`
	Timeout string `json:"timeout,omitempty"`

	client *http.Client
	now    func() time.Time
}

// Interface guards.
var (
	_ notify.Notifier     = (*Webhook)(nil)
	_ modules.Provisioner = (*Webhook)(nil)
	_ modules.Validator   = (*Webhook)(nil)
)

// ModuleInfo implements modules.Module.
func (*Webhook) ModuleInfo() modules.Info {
	return modules.Info{ID: "notify.webhook", New: func() modules.Module { return new(Webhook) }}
}

// Provision implements modules.Provisioner.
func (w *Webhook) Provision(context.Context) error {
	timeout := 10 * time.Second
	if w.Timeout != "" {
		d, err := time.ParseDuration(w.Timeout)
		if err != nil {
			return fmt.Errorf("timeout: %w", err)
		}
		timeout = d
	}
	w.client = &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
		return errors.New("webhook receivers must not redirect")
	}}
	w.now = time.Now
	return nil
}

// Validate implements modules.Validator.
func (w *Webhook) Validate() error {
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("url must be an http(s) URL, got %q", w.URL)
	}
	return nil
}

// Sign returns the signature header value for body sent at ts.
func Sign(secret string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "%d.", ts)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Notify implements notify.Notifier.
func (w *Webhook) Notify(ctx context.Context, d notify.Delivery) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(d.Payload))
	if err != nil {
		return err
	}
	ts := w.now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Orchard-Webhook/1")
	req.Header.Set("X-Orchard-Delivery", d.ID)
	req.Header.Set("X-Orchard-Event", d.Event)
	req.Header.Set("X-Orchard-Timestamp", strconv.FormatInt(ts, 10))
	if w.Secret != "" {
		req.Header.Set("X-Orchard-Signature", Sign(w.Secret, ts, d.Payload))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL may carry credentials; keep it out of logs
		}
		return fmt.Errorf("posting to the webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook answered HTTP %d", resp.StatusCode)
	}
	return nil
}
