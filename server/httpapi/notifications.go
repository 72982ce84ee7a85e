package httpapi

import (
	"errors"
	"io"
	"net/http"

	"github.com/orchard-msp/orchard/graph/domain"
)

// maxNotificationBody bounds one of Apple's notifications: at most 100
// assignments, a few KB; anything far larger is not from Apple.
const maxNotificationBody = 256 << 10

// appleNotifications is POST /apple/notifications, where Apple reports
// licence events and purchases. Apple authenticates with the per-location
// bearer secret Orchard registered; nothing else gets in. The handler
// records the notification and answers: it never calls Apple and never
// waits for subscribers or webhooks.
func appleNotifications(d serverDeps) http.Handler { return AppleNotifications(d.svc) }

// AppleNotifications is the notification endpoint alone, without the
// rate limits and request logging New wraps it in (the benchmarks use it).
func AppleNotifications(svc *domain.Service) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log := loggerFrom(r.Context())
		if r.ContentLength > maxNotificationBody {
			http.Error(w, "notification too large", http.StatusRequestEntityTooLarge)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxNotificationBody))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				http.Error(w, "notification too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "could not read the notification", http.StatusBadRequest)
			return
		}
		res, err := svc.HandleNotification(r.Context(), r.Header.Get("Authorization"), body)
		switch res {
		case domain.NotificationAccepted:
			w.WriteHeader(http.StatusOK)
		case domain.NotificationUnauthorized:
			log.Warn("Apple notification refused: unknown location or wrong secret", "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="apple-notifications"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
		case domain.NotificationMalformed:
			log.Warn("malformed Apple notification", "err", err)
			http.Error(w, "not an Apple notification", http.StatusBadRequest)
		default:
			if err != nil {
				log.Error("recording Apple notification", "err", err)
			}
			w.Header().Set("Retry-After", "30")
			http.Error(w, "try again later", http.StatusServiceUnavailable)
		}
	})
}
