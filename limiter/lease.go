package limiter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Leases in Redis
//
// A slot set is a sorted set under its own key (see Keys.UserSlots). Each
// admitted request is one member, unique per acquisition (the instance's
// random id and a sequence number), scored by its lease deadline in Redis
// server time (ms). The check script removes members whose deadline has
// passed before it counts a set, so a place whose instance died returns by
// itself; live instances push the deadlines of their requests still in
// flight forward every Renew, in one call per tick. A set's key expires
// no earlier than its last deadline and at most two lease lengths after
// it (see checkScript), so idle sets vanish. Spare places (places.go) are
// members like these, named after the acquisition that took them, and
// renewed with them.
//
// Releases go out asynchronously: Lease.Release queues the member and a
// goroutine sends what queued, after ReleaseDelay or once maxReleaseBatch
// are waiting, as one pipeline with one ZREM per set. A release that fails
// is retried until it succeeds or until the lease would have expired
// anyway.

// Defaults of LeaseConfig.
const (
	DefaultLease        = 20 * time.Second
	DefaultRenew        = 5 * time.Second
	DefaultReleaseDelay = 2 * time.Millisecond
	DefaultLeaseTimeout = time.Second
)

// maxReleaseBatch is how many queued releases are sent without waiting for
// the end of ReleaseDelay.
const maxReleaseBatch = 256

// errClosed is returned by CheckAcquire after Close.
var errClosed = errors.New("limiter closed")

// LeaseConfig configures the leases of a Redis limiter's slots.
type LeaseConfig struct {
	// Lease is how long a place stays taken after its acquisition or its
	// last renewal. It bounds how long the places of an instance that died
	// stay taken. Default DefaultLease (20s).
	Lease time.Duration
	// Renew is how often the leases of the requests still in flight are
	// extended, all in one call. It must leave room for a failed renewal
	// or two within Lease; a value not below Lease is replaced by Lease/4.
	// Default DefaultRenew (5s).
	Renew time.Duration
	// ReleaseDelay is how long a release waits to be sent together with
	// others. Default DefaultReleaseDelay (2ms).
	ReleaseDelay time.Duration
	// Timeout bounds each renewal and release call, the reservations'
	// hand-backs, and refills ahead started by a check without a deadline.
	// Default DefaultLeaseTimeout (1s).
	Timeout time.Duration
}

// withDefaults fills in the zero fields and repairs a Renew that would let
// leases lapse.
func (c LeaseConfig) withDefaults() LeaseConfig {
	if c.Lease <= 0 {
		c.Lease = DefaultLease
	}
	if c.Renew <= 0 {
		c.Renew = DefaultRenew
	}
	if c.Renew >= c.Lease {
		c.Renew = c.Lease / 4
	}
	if c.ReleaseDelay <= 0 {
		c.ReleaseDelay = DefaultReleaseDelay
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultLeaseTimeout
	}
	return c
}

// retryDelay is the pause before failed releases are sent again.
func (c LeaseConfig) retryDelay() time.Duration {
	return min(max(c.Lease/20, 10*time.Millisecond), time.Second)
}

// renewScript pushes the deadlines of members forward, on the Redis clock,
// and keeps their sets from expiring before them. A member no longer in
// its set (expired, or released meanwhile) is not added back: its place
// may already be someone else's.
//
// KEYS: the set keys. ARGV[1]: the lease length in ms; then per key the
// number of members n and the n members. Returns how many members were
// still there.
var renewScript = redis.NewScript(`
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local deadline = string.format('%d', ms + lease)
local a, kept = 2, 0
for i = 1, #KEYS do
  local n = tonumber(ARGV[a])
  for j = 1, n do
    kept = kept + redis.call('ZADD', KEYS[i], 'XX', 'CH', deadline, ARGV[a + j])
  end
  if redis.call('PTTL', KEYS[i]) < lease then redis.call('PEXPIRE', KEYS[i], 2 * lease) end
  a = a + n + 1
end
return kept
`)

// leaseKeeper holds the leases of one Redis limiter: it names them,
// renews those in flight and sends their releases. Its goroutines start
// with the first acquisition and end with close.
type leaseKeeper struct {
	client  redis.UniversalClient
	cluster bool
	cfg     LeaseConfig
	id      string // this instance's part of every member
	seq     atomic.Uint64
	held    atomic.Int64

	mu      sync.Mutex
	leases  *Lease // the first of the leases held (linked by Lease.next): renewed until released
	queue   []pendingRelease
	started bool
	closed  bool
	// running is started && !closed, read without mu by every acquisition.
	running atomic.Bool
	kick    chan struct{} // a release was queued
	full    chan struct{} // maxReleaseBatch releases are queued
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// pendingRelease is one member to remove from its sets: one per released
// lease, so a release queues without allocating.
type pendingRelease struct {
	keys   []string
	member *string // a pointer, as a script or ZREM argument (see acquireBy)
	// until is when the member surely expired (local clock): the release
	// is dropped after it.
	until time.Time
	// confirm is set when it is unknown whether the member was ever added
	// (the acquisition's answer was lost): the release is repeated until
	// Redis reports the member removed, as the acquisition may still be
	// on its way. Such a release has one key.
	confirm bool
}

func newLeaseKeeper(client redis.UniversalClient) *leaseKeeper {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	_, cluster := client.(*redis.ClusterClient)
	ctx, cancel := context.WithCancel(context.Background())
	return &leaseKeeper{
		client:  client,
		cluster: cluster,
		cfg:     LeaseConfig{}.withDefaults(),
		id:      hex.EncodeToString(b[:]),
		kick:    make(chan struct{}, 1),
		full:    make(chan struct{}, 1),
		ctx:     ctx,
		cancel:  cancel,
	}
}

// newMember returns a member name no other acquisition uses (built in one
// allocation).
func (k *leaseKeeper) newMember() string {
	var b [48]byte
	m := append(b[:0], k.id...)
	m = append(m, ':')
	return string(strconv.AppendUint(m, k.seq.Add(1), 36))
}

// start starts the renewal and release goroutines on first use.
func (k *leaseKeeper) start() error {
	if k.running.Load() {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return errClosed
	}
	if !k.started {
		k.started = true
		k.running.Store(true)
		k.wg.Add(2)
		go k.renewLoop()
		go k.releaseLoop()
	}
	return nil
}

// hold makes l, admitted by an acquisition that began at start, one of
// the leases held: renewed until released, and counted by InFlight.
func (k *leaseKeeper) hold(l *Lease, start time.Time) {
	k.track(l, start)
	k.held.Add(1)
}

// track makes l, taken by an acquisition that began at start, one of the
// leases renewed until handed back; it is not counted by InFlight, as a
// spare place is no request (places.go).
func (k *leaseKeeper) track(l *Lease, start time.Time) {
	l.until.Store(start.Add(k.cfg.Lease).UnixNano())
	k.mu.Lock()
	l.next = k.leases
	if l.next != nil {
		l.next.prev = l
	}
	k.leases = l
	k.mu.Unlock()
}

// release implements leaseOwner: it gives back the places of a request.
func (k *leaseKeeper) release(l *Lease) {
	k.held.Add(-1)
	k.handBack(l)
}

// handBack takes l off the leases renewed and queues its release, under
// one lock.
func (k *leaseKeeper) handBack(l *Lease) {
	r := pendingRelease{keys: l.keys, member: &l.member, until: time.Unix(0, l.until.Load())}
	k.mu.Lock()
	if l.prev != nil {
		l.prev.next = l.next
	} else {
		k.leases = l.next
	}
	if l.next != nil {
		l.next.prev = l.prev
	}
	l.prev, l.next = nil, nil
	k.enqueueLocked(r)
}

// abandon gives back the places an acquisition may have taken although
// its caller got no answer (timeout, connection lost), one set at a time
// (see pendingRelease.confirm). It copies what it keeps: the acquisition,
// which a call may still be writing, is not kept alive by its retries.
// The up to spares spare places it asked for (places.go) are removed
// once, unconfirmed: how many it got is unknown, and one that arrives
// later still expires within the lease.
func (k *leaseKeeper) abandon(member string, keys []string, spares int64) {
	until := time.Now().Add(k.cfg.Lease)
	keys = append([]string(nil), keys...)
	for _, key := range keys {
		k.mu.Lock()
		k.enqueueLocked(pendingRelease{keys: []string{key}, member: &member, until: until, confirm: true})
	}
	for j := range spares {
		spare := member + "/" + strconv.FormatInt(j+1, 10)
		k.mu.Lock()
		k.enqueueLocked(pendingRelease{keys: keys, member: &spare, until: until})
	}
}

// enqueueLocked queues a release for the release goroutine, and unlocks
// mu; after close the release is sent once, right away.
func (k *leaseKeeper) enqueueLocked(r pendingRelease) {
	if k.closed {
		k.mu.Unlock()
		go k.send([]pendingRelease{r})
		return
	}
	k.queue = append(k.queue, r)
	n := len(k.queue)
	k.mu.Unlock()
	signal(k.kick)
	if n >= maxReleaseBatch {
		signal(k.full)
	}
}

// signal wakes the receiver of a one-element channel without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// releaseLoop sends queued releases: after a release arrives it waits
// ReleaseDelay (or for a full batch) to gather others, then sends them all
// in one pipeline. Failed ones are sent again after retryDelay.
func (k *leaseKeeper) releaseLoop() {
	defer k.wg.Done()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	gather := time.NewTimer(time.Hour)
	gather.Stop()
	// spare is the queue's other buffer: the queue and spare swap at every
	// batch, so the queue does not grow again from nothing each time.
	var spare []pendingRelease
	for {
		select {
		case <-k.ctx.Done():
			return
		case <-k.kick:
		case <-retry.C:
		}
		gather.Reset(k.cfg.ReleaseDelay)
		select {
		case <-k.ctx.Done():
			gather.Stop()
			return
		case <-gather.C:
		case <-k.full:
			gather.Stop()
		}
		k.mu.Lock()
		batch := k.queue
		k.queue = spare[:0]
		k.mu.Unlock()
		failed := k.send(batch)
		clear(batch) // no member kept alive by the buffer
		spare = nil
		if cap(batch) <= 4*maxReleaseBatch { // not one an outage grew
			spare = batch[:0]
		}
		if len(failed) > 0 {
			k.mu.Lock()
			k.queue = append(k.queue, failed...)
			k.mu.Unlock()
			retry.Reset(k.cfg.retryDelay())
		}
	}
}

// send removes the members of rs in one pipeline and returns the releases
// to try again: failed ones and unconfirmed ones, unless expired.
func (k *leaseKeeper) send(rs []pendingRelease) (retry []pendingRelease) {
	now := time.Now()
	byKey := make(map[string][]any)
	var order []string
	var confirm []pendingRelease
	for _, r := range rs {
		switch {
		case !now.Before(r.until):
			// Expired in Redis by now: nothing left to remove.
		case r.confirm:
			confirm = append(confirm, r)
		default:
			for _, key := range r.keys {
				if _, ok := byKey[key]; !ok {
					order = append(order, key)
				}
				byKey[key] = append(byKey[key], r.member)
			}
		}
	}
	if len(order) == 0 && len(confirm) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), k.cfg.Timeout)
	defer cancel()
	pipe := k.client.Pipeline()
	grouped := make([]*redis.IntCmd, len(order))
	for i, key := range order {
		grouped[i] = pipe.ZRem(ctx, key, byKey[key]...)
	}
	single := make([]*redis.IntCmd, len(confirm))
	for i, r := range confirm {
		single[i] = pipe.ZRem(ctx, r.keys[0], r.member)
	}
	_, _ = pipe.Exec(ctx) // errors are per command, below
	var failed map[string]bool
	for i, cmd := range grouped {
		if cmd.Err() != nil {
			if failed == nil {
				failed = make(map[string]bool)
			}
			failed[order[i]] = true
		}
	}
	if failed != nil {
		// A release is sent again whole when one of its sets failed;
		// removing a member already removed does nothing.
		for _, r := range rs {
			if r.confirm || !now.Before(r.until) {
				continue
			}
			for _, key := range r.keys {
				if failed[key] {
					retry = append(retry, r)
					break
				}
			}
		}
	}
	for i, cmd := range single {
		if cmd.Err() != nil || cmd.Val() == 0 {
			retry = append(retry, confirm[i])
		}
	}
	return retry
}

// renewLoop extends the leases in flight every Renew.
func (k *leaseKeeper) renewLoop() {
	defer k.wg.Done()
	t := time.NewTicker(k.cfg.Renew)
	defer t.Stop()
	for {
		select {
		case <-k.ctx.Done():
			return
		case <-t.C:
		}
		k.renew()
	}
}

// renewCall is one renewScript call: the leases of one cluster hash slot
// (or all of them on a single node), by set key.
type renewCall struct {
	leases  []*Lease
	order   []string
	members map[string][]string
}

// renew extends every lease held, in one pipeline (one script call per
// cluster hash slot), and moves the local expiry of those it reached.
func (k *leaseKeeper) renew() {
	k.mu.Lock()
	calls := make(map[uint16]*renewCall)
	for l := k.leases; l != nil; l = l.next {
		var hs uint16
		if k.cluster {
			hs = clusterSlot(l.keys[0])
		}
		c := calls[hs]
		if c == nil {
			c = &renewCall{members: make(map[string][]string)}
			calls[hs] = c
		}
		c.leases = append(c.leases, l)
		for _, key := range l.keys {
			if _, ok := c.members[key]; !ok {
				c.order = append(c.order, key)
			}
			c.members[key] = append(c.members[key], l.member)
		}
	}
	k.mu.Unlock()
	if len(calls) == 0 {
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(k.ctx, k.cfg.Timeout)
	defer cancel()
	list := make([]*renewCall, 0, len(calls))
	for _, c := range calls {
		list = append(list, c)
	}
	cmds := k.sendRenew(ctx, list, false)
	if cmds == nil {
		return
	}
	for i, c := range list {
		if cmds[i].Err() != nil {
			continue // tried again next tick
		}
		until := start.Add(k.cfg.Lease).UnixNano()
		for _, l := range c.leases {
			l.until.Store(until)
		}
	}
}

// sendRenew runs the renew calls in one pipeline; when Redis does not
// know the script yet it loads it and tries once more.
func (k *leaseKeeper) sendRenew(ctx context.Context, calls []*renewCall, loaded bool) []*redis.Cmd {
	lease := k.cfg.Lease.Milliseconds()
	pipe := k.client.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, c := range calls {
		args := []any{lease}
		for _, key := range c.order {
			args = append(args, len(c.members[key]))
			for _, m := range c.members[key] {
				args = append(args, m)
			}
		}
		cmds[i] = renewScript.EvalSha(ctx, pipe, c.order, args...)
	}
	_, _ = pipe.Exec(ctx) // errors are per command
	if !loaded {
		for _, cmd := range cmds {
			if isNoScript(cmd.Err()) {
				if renewScript.Load(ctx, k.client).Err() != nil {
					return cmds
				}
				return k.sendRenew(ctx, calls, true)
			}
		}
	}
	return cmds
}

// close stops the goroutines and sends the releases still queued, once.
// Leases still held are neither renewed nor released any more: they
// expire within Lease.
func (k *leaseKeeper) close() {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return
	}
	k.closed = true
	k.running.Store(false)
	k.mu.Unlock()
	k.cancel()
	k.wg.Wait()
	k.mu.Lock()
	batch := k.queue
	k.queue = nil
	k.mu.Unlock()
	k.send(batch)
}
