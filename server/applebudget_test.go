package main

import (
	"strings"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/modules/apple/appletest"
)

// A person uploading a token gets Apple's failure within the interactive
// budget (15 s), although a background call may retry for a minute.
func TestWizardNeverHangsOnApple(t *testing.T) {
	s := startServer(t, map[string]string{"ORCHARD_APPLE_RETRY_BUDGET": "60s"})
	admin := s.key()
	c := s.createCustomer(admin, "Waiting")
	year := time.Now().AddDate(1, 0, 0)
	file := appletest.TokenFile("Org", year, "hang")
	s.Fake.AddLocation(file, &appletest.Location{UID: "hang1", Name: "Hang", ExpiresAt: year})
	failAlways := func(f appletest.Failure) {
		s.Fake.ClearFailures()
		for range 1000 {
			s.Fake.Fail(f)
		}
	}
	for _, tc := range []struct {
		name    string
		failure appletest.Failure
		code    string
		within  time.Duration
		advice  string
	}{
		{"500 always", appletest.Failure{Status: 500}, "APPLE_UNAVAILABLE", 15 * time.Second, "Try again in a few minutes"},
		{"429 asking for two minutes", appletest.Failure{Status: 429, ErrorNumber: 9646, RetryAfter: "120"}, "APPLE_RATE_LIMITED", 2 * time.Second, "wait 2 minutes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failAlways(tc.failure)
			start := time.Now()
			r := s.upload(admin, c, file)
			took := time.Since(start)
			if r.code() != tc.code || took > tc.within {
				t.Fatalf("answered after %v: %s; want %s within %v", took, r.Raw, tc.code, tc.within)
			}
			if !strings.Contains(r.Errors[0].Message, tc.advice) {
				t.Fatalf("message %q does not say %q", r.Errors[0].Message, tc.advice)
			}
			t.Logf("%s answered in %v", tc.code, took.Round(time.Millisecond))
		})
	}
}
