package domain

import (
	"math"
	"time"

	"github.com/orchard-msp/orchard/ent/predicate"
	"github.com/orchard-msp/orchard/ent/servertoken"
)

// ExpiryStatus is where a token stands against its expiry date.
type ExpiryStatus string

// The expiry statuses of the contract.
const (
	ExpiryValid        ExpiryStatus = "VALID"
	ExpiryExpiringSoon ExpiryStatus = "EXPIRING_SOON"
	ExpiryExpired      ExpiryStatus = "EXPIRED"
)

// DaysUntil returns the whole days from now until t, rounded down: 0 on the
// last day, negative once t has passed.
func DaysUntil(t, now time.Time) int {
	return int(math.Floor(t.Sub(now).Hours() / 24))
}

// StatusOf returns the expiry status of a token expiring at t. warnDays are
// the thresholds; EXPIRING_SOON means within the largest.
func StatusOf(t, now time.Time, warnDays []int) ExpiryStatus {
	if !t.After(now) {
		return ExpiryExpired
	}
	if len(warnDays) > 0 && t.Sub(now) <= days(maxInt(warnDays)) {
		return ExpiryExpiringSoon
	}
	return ExpiryValid
}

func maxInt(xs []int) int {
	m := math.MinInt
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func days(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

// WarningLevel is the level of an expiry warning.
type WarningLevel string

// The warning levels of the contract.
const (
	LevelNotice   WarningLevel = "NOTICE"
	LevelWarning  WarningLevel = "WARNING"
	LevelCritical WarningLevel = "CRITICAL"
	LevelExpired  WarningLevel = "EXPIRED"
)

// expiredMark is the threshold recorded once a token's expiry has passed.
const expiredMark = -1

// crossed returns the most urgent threshold that a token expiring at t has
// crossed at now: the smallest of warnDays with t within that many days, or
// expiredMark once t has passed. ok is false when no threshold is crossed.
func crossed(t, now time.Time, warnDays []int) (threshold int, ok bool) {
	left := t.Sub(now)
	if left <= 0 {
		return expiredMark, true
	}
	threshold = math.MaxInt
	for _, d := range warnDays {
		if left <= days(d) && d < threshold {
			threshold, ok = d, true
		}
	}
	return threshold, ok
}

// LevelOf returns the warning level for a token with daysLeft whole days left.
func LevelOf(t, now time.Time) WarningLevel {
	left := t.Sub(now)
	switch {
	case left <= 0:
		return LevelExpired
	case left <= days(1):
		return LevelCritical
	case left <= days(7):
		return LevelWarning
	}
	return LevelNotice
}

// ExpiresWithin filters tokens expiring within n days from now, expired ones included.
func (s *Service) ExpiresWithin(n int) predicate.ServerToken {
	return servertoken.ExpiresAtLTE(s.Now().Add(days(n)))
}

// InExpiryStatus filters tokens by their expiry status now.
func (s *Service) InExpiryStatus(status ExpiryStatus) predicate.ServerToken {
	now := s.Now()
	soon := now
	if len(s.cfg.WarnDays) > 0 {
		soon = now.Add(days(s.cfg.WarnDays[0]))
	}
	switch status {
	case ExpiryExpired:
		return servertoken.ExpiresAtLTE(now)
	case ExpiryExpiringSoon:
		return servertoken.And(servertoken.ExpiresAtGT(now), servertoken.ExpiresAtLTE(soon))
	}
	return servertoken.ExpiresAtGT(soon)
}
