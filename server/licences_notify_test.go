package main

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/modules/apple/appletest"
)

// postNotification sends one notification as Apple would and returns the
// HTTP status.
func (ls *licenceSetup) postNotification(t *testing.T, secret, body string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ls.s.URL+"/apple/notifications", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (ls *licenceSetup) purchaseBody(id string, delta int) string {
	return fmt.Sprintf(`{"notification":{"adamId":"400000000","countDelta":%d,"pricingParam":"STDQ"},"notificationId":%q,"notificationType":"ASSET_COUNT","uId":%q}`, delta, id, ls.loc.UID)
}

// Notifications that arrive together are recorded together; each is
// counted once however often and however concurrently it is delivered,
// and a secret Orchard remembers stops working the moment the token
// changes under it.
func TestNotificationsBurstAndChangedSecrets(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		ls := startLicences(t, env, true, nil)
		secret := ls.loc.NotificationAuthToken
		if secret == "" {
			t.Fatal("confirm did not register notifications")
		}

		t.Run("ConcurrentBurstWithRepeats", func(t *testing.T) {
			before := ls.counts(t, "400000000")
			const distinct, senders = 60, 6
			var wg sync.WaitGroup
			var mu sync.Mutex
			refused := 0
			for w := range senders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Every sender delivers every notification: each is
					// seen six times, often in one batch.
					for i := range distinct {
						id := (i + w*7) % distinct
						if code := ls.postNotification(t, secret, ls.purchaseBody(fmt.Sprintf("burst-%d", id), 1+id%2)); code != http.StatusOK {
							mu.Lock()
							refused++
							mu.Unlock()
						}
					}
				}()
			}
			wg.Wait()
			want := 0
			for i := range distinct {
				want += 1 + i%2
			}
			c := ls.counts(t, "400000000")
			if refused != 0 || c.TotalCount != before.TotalCount+want || c.AvailableCount != before.AvailableCount+want {
				t.Fatalf("%d refused; counts %+v, before %+v, want +%d", refused, c, before, want)
			}
		})

		t.Run("RenewalReplacesTheSecret", func(t *testing.T) {
			// A notification with the secret as it is now: Orchard remembers it.
			if code := ls.postNotification(t, secret, ls.purchaseBody("before-renewal", 1)); code != http.StatusOK {
				t.Fatalf("current secret: HTTP %d", code)
			}
			// Renewing in place registers a new secret with Apple.
			file := appletest.TokenFile("Contoso Ltd", time.Now().AddDate(1, 1, 0), "contoso-licences-renewed")
			ls.s.Fake.AddLocation(file, ls.loc)
			var up uploadResult
			ls.s.upload(ls.admin, ls.customer, file).decode(t, &up)
			ls.s.action(ls.admin, "confirmServerToken", up.UploadServerToken.Token.ID).decode(t, &struct{}{})
			renewed := ls.loc.NotificationAuthToken
			if renewed == secret || renewed == "" {
				t.Fatalf("renewal kept the notification secret")
			}
			old := secret
			secret = renewed
			if code := ls.postNotification(t, old, ls.purchaseBody("old-secret", 100)); code != http.StatusUnauthorized {
				t.Fatalf("the replaced secret: HTTP %d, want 401", code)
			}
			if code := ls.postNotification(t, secret, ls.purchaseBody("new-secret", 2)); code != http.StatusOK {
				t.Fatalf("the new secret: HTTP %d", code)
			}
		})

		t.Run("DeletedTokenRefuses", func(t *testing.T) {
			if code := ls.postNotification(t, secret, ls.purchaseBody("before-delete", 1)); code != http.StatusOK {
				t.Fatalf("before the delete: HTTP %d", code)
			}
			ls.s.gql(ls.admin, `mutation($t: ID!) { deleteServerToken(input: {tokenID: $t}) { deletedID } }`, map[string]any{"t": ls.token}).decode(t, &struct{}{})
			if code := ls.postNotification(t, secret, ls.purchaseBody("after-delete", 1)); code != http.StatusUnauthorized {
				t.Fatalf("after the delete: HTTP %d, want 401", code)
			}
		})
	})
}
