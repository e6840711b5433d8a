package caddyrpm

import (
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddyrpm/caddy-rpm/gateway"
	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// shadowRefused records a request that a limit would have refused on a
// route in shadow mode, which admits it: it counts the would-be refusal by
// its code, logs it at most once per user and window, and returns the code
// for the {http.rpm.shadow_refused} placeholder.
func (h *Handler) shadowRefused(s *snapshot.Snapshot, d *gateway.Decision) string {
	l, _ := d.Refusal()
	code := refusalCode(l.Scope)
	h.app.metrics.decisions.WithLabelValues("admitted", "shadow").Inc()
	h.app.metrics.shadowRefusals.WithLabelValues(code).Inc()
	now := time.Now()
	if h.app.shadowLog.first(s.UserID, now, now.Add(d.ResetIn)) {
		h.logger.Info("shadow mode admitted a request a limit would refuse",
			zap.String("code", code),
			zap.String("policy", policyName(&l)),
			zap.Int64("limit", l.Limit),
			zap.Int64("user_id", s.UserID),
			zap.Bool("local", d.Local))
	}
	return code
}

// shadowLog remembers until when each user's shadow refusals are already
// logged (the end of the window of the last logged one), so a user over a
// limit in shadow mode costs one log line per window, not one per request.
type shadowLog struct {
	mu    sync.Mutex
	quiet map[int64]time.Time
	// sweepAt is the map size at which entries whose window ended are
	// dropped: twice the size after the last sweep, so sweeping costs O(1)
	// per call on average and the map holds at most about twice the users
	// logged in one window.
	sweepAt int
}

// first reports whether a shadow refusal of the user at now is the first
// of its window, which ends at windowEnd.
func (s *shadowLog) first(userID int64, now, windowEnd time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if until, ok := s.quiet[userID]; ok && now.Before(until) {
		return false
	}
	if s.quiet == nil {
		s.quiet = make(map[int64]time.Time)
	}
	if len(s.quiet) >= s.sweepAt {
		for id, until := range s.quiet {
			if !now.Before(until) {
				delete(s.quiet, id)
			}
		}
		s.sweepAt = max(64, 2*len(s.quiet))
	}
	s.quiet[userID] = windowEnd
	return true
}

// shadowPlaceholder is the name of the placeholder that carries the code a
// shadow-mode route would have refused the request with ("" if none).
const shadowPlaceholder = "http.rpm.shadow_refused"
