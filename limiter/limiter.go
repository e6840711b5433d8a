// Package limiter counts requests per fixed one-minute window and decides,
// for a set of counters at once, whether a request is admitted. All counters
// of one request are checked and incremented in one atomic step; a refused
// request increments nothing.
package limiter

import (
	"context"
	"errors"
	"strconv"
	"time"
)

// Window is the length of a rate-limit window.
const Window = time.Minute

// ErrUnavailable reports that the counter backend could not be asked (Redis
// down, slow past its timeout, or the circuit breaker open).
var ErrUnavailable = errors.New("rate limiter unavailable")

// Counter is one limit that applies to a request.
type Counter struct {
	// Key names the counter. Every counter of one user carries the user's
	// hash tag (see Keys) so one request touches one Redis Cluster slot;
	// Redis keeps the counters of many users in one hash, their bucket
	// (CounterPlace).
	Key string
	// Limit is the number of requests admitted per window; it is > 0.
	Limit int64
	// UserID and GroupID (0 = none) let an invalidation drop local deny
	// entries of this counter.
	UserID, GroupID int64
}

// Result is the outcome of one Check.
type Result struct {
	// Allowed reports whether every counter passed and was incremented.
	Allowed bool
	// Counts holds, per counter, the count after this request when
	// admitted, or the current count when refused.
	Counts []int64
	// Denied is the index of the counter that refused the request, -1 if
	// none. With several full counters it is the first of them.
	Denied int
	// ResetIn is the time left in the current window on the limiter's clock.
	ResetIn time.Duration
	// Local reports a decision this instance made without asking the
	// backend: a refusal by the local deny cache, or an admission from
	// units it holds reserved (WithReservations).
	Local bool
	// RecheckIn, when > 0, bounds how long a refusal may hold although the
	// window goes on: units that reservations took (reserve.go) may be
	// handed back. The deny cache remembers the refusal no longer.
	RecheckIn time.Duration
}

// Limiter checks and increments counters.
type Limiter interface {
	// Check admits the request if every counter is below its limit and then
	// increments all of them, atomically. With no counters it admits
	// without touching the backend.
	Check(ctx context.Context, counters []Counter) (Result, error)
	// Peek reads the current-window counts of keys without incrementing,
	// and the time left in the window.
	Peek(ctx context.Context, keys []string) ([]int64, time.Duration, error)
	// Reserved returns, per key, the units this instance holds reserved
	// for the counter and has not used yet (see WithReservations), without
	// a backend call. The backend counts them already, so Peek's counts
	// include them. All 0 without reservations.
	Reserved(keys []string) []int64
	// Forget drops local deny entries of a user and/or a group (0 = none);
	// both 0 drops them all. Called on invalidation so a raised limit
	// applies at once.
	Forget(userID, groupID int64)
}

// Keys builds counter names under a prefix. Every key of a user embeds the
// hash tag {u<id>} so that all of them map to one Redis Cluster slot, and
// its counters are fields of one Redis hash (layout.go).
type Keys struct{ Prefix string }

// key is the key of user userID's counter or slot set named by parts: tag
// and parts in one allocation, as keys are built for every request.
func (k Keys) key(userID int64, parts ...string) string {
	var stack [128]byte
	return string(k.appendKey(stack[:0], userID, parts))
}

// keyWithID is key with id after the parts.
func (k Keys) keyWithID(userID, id int64, parts ...string) string {
	var stack [128]byte
	return string(strconv.AppendInt(k.appendKey(stack[:0], userID, parts), id, 10))
}

func (k Keys) appendKey(b []byte, userID int64, parts []string) []byte {
	b = append(b, k.Prefix...)
	b = append(b, "{u"...)
	b = strconv.AppendInt(b, userID, 10)
	b = append(b, '}')
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// User is the counter of all of a user's admitted requests.
func (k Keys) User(userID int64) string { return k.key(userID, ":user") }

// UserGroup is the counter of a user's admitted requests in one group.
func (k Keys) UserGroup(userID, groupID int64) string {
	return k.keyWithID(userID, groupID, ":group:")
}

// ZoneUser is a route zone's counter per user.
func (k Keys) ZoneUser(zone string, userID int64) string {
	return k.key(userID, ":zone:", zone, ":user")
}

// ZoneKey is a route zone's counter per API key.
func (k Keys) ZoneKey(zone string, userID, keyID int64) string {
	return k.keyWithID(userID, keyID, ":zone:", zone, ":key:")
}
