package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/apikey"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/modules/fault"
)

// KeyPrefix starts every Orchard API key, so a leaked key is recognisable
// by secret scanners.
const KeyPrefix = "orch_"

// NewAPIKey returns a fresh key (shown once) and the hash that is stored.
func NewAPIKey() (key string, hash []byte) {
	b := make([]byte, 30)
	_, _ = rand.Read(b)
	key = KeyPrefix + base64.RawURLEncoding.EncodeToString(b)
	return key, hashKey(key)
}

func hashKey(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

// authenticator turns a bearer key into a viewer.
type authenticator struct {
	client *ent.Client
	now    func() time.Time

	mu       sync.Mutex
	lastSeen map[int]time.Time
}

func newAuthenticator(client *ent.Client) *authenticator {
	return &authenticator{client: client, now: time.Now, lastSeen: map[int]time.Time{}}
}

// lastUsedResolution is how often a key's last-used time is written: often
// enough to tell an idle key from a live one, rarely enough to cost nothing.
const lastUsedResolution = time.Minute

var errUnauthenticated = fault.New(fault.Unauthenticated, "A valid API key is required: send \"Authorization: Bearer KEY\". Create one with: orchard apikey create --name NAME")

// viewerFor checks an Authorization header value.
func (a *authenticator) viewerFor(ctx context.Context, header string) (*viewer.Viewer, error) {
	scheme, key, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || !strings.HasPrefix(strings.TrimSpace(key), KeyPrefix) {
		return nil, errUnauthenticated
	}
	sys := viewer.SystemContext(ctx)
	k, err := a.client.APIKey.Query().Where(apikey.Hash(hashKey(strings.TrimSpace(key)))).Only(sys)
	if err != nil {
		if ent.IsNotFound(err) {
			return nil, errUnauthenticated
		}
		return nil, err
	}
	now := a.now()
	if k.RevokedAt != nil || (k.ExpiresAt != nil && !k.ExpiresAt.After(now)) {
		return nil, fault.New(fault.Unauthenticated, "This API key has been revoked or has expired. Ask an admin for a new one.")
	}
	a.touch(sys, k.ID, now)
	return &viewer.Viewer{KeyID: k.ID, Name: k.Name, Role: viewer.Role(k.Role), Customers: k.CustomerIds}, nil
}

func (a *authenticator) touch(ctx context.Context, id int, now time.Time) {
	a.mu.Lock()
	due := now.Sub(a.lastSeen[id]) >= lastUsedResolution
	if due {
		a.lastSeen[id] = now
	}
	a.mu.Unlock()
	if due {
		_ = a.client.APIKey.UpdateOneID(id).SetLastUsedAt(now).Exec(ctx)
	}
}

// middleware requires a valid key on every HTTP request. Websocket upgrades
// pass: their key travels in connection_init (see wsInit).
func (a *authenticator) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isWebsocket(r) {
			next.ServeHTTP(w, r)
			return
		}
		v, err := a.viewerFor(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			code := http.StatusUnauthorized
			if fault.CodeOf(err) == fault.Internal {
				code = http.StatusServiceUnavailable
				loggerFrom(r.Context()).Error("checking API key", "err", err)
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="orchard"`)
			writeGraphQLError(w, code, err)
			return
		}
		setRequestKey(r.Context(), v.Name)
		next.ServeHTTP(w, r.WithContext(viewer.NewContext(r.Context(), v)))
	})
}

// wsInit authenticates a websocket of gqlgen's transport from its
// connection_init payload.
func (a *authenticator) wsInit(ctx context.Context, payload transport.InitPayload) (context.Context, *transport.InitPayload, error) {
	v, err := a.wsViewer(ctx, payload)
	if err != nil {
		// graphql-transport-ws closes a refused connection_init with 4403.
		ctx = transport.WithWebsocketCloseCode(ctx, 4403)
		ctx = transport.AppendCloseReason(ctx, "Forbidden: a valid API key is required")
		return ctx, nil, err
	}
	if s := sessionFrom(ctx); s != nil {
		s.setKey(v.KeyID) // so the socket closes when the key stops being valid
	}
	return viewer.NewContext(ctx, v), nil, nil
}

// wsViewer checks the key in a connection_init payload
// ({"Authorization": "Bearer KEY"}).
func (a *authenticator) wsViewer(ctx context.Context, payload transport.InitPayload) (*viewer.Viewer, error) {
	header := payload.Authorization()
	if header == "" {
		if s, ok := payload["authorization"].(string); ok {
			header = s
		}
	}
	// The key lookup runs on a short-lived goroutine, so the connection's
	// long-lived reader keeps a small stack (see domain.Hub.Subscribe).
	type result struct {
		v   *viewer.Viewer
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := a.viewerFor(ctx, header)
		done <- result{v, err}
	}()
	r := <-done
	if r.err != nil {
		return nil, errors.New(fault.MessageOf(r.err))
	}
	return r.v, nil
}

func isWebsocket(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// writeGraphQLError answers outside GraphQL execution in GraphQL's error shape.
func writeGraphQLError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{
		"message":    fault.MessageOf(err),
		"extensions": map[string]any{"code": fault.CodeOf(err)},
	}}})
}
