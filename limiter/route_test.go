package limiter

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

// scriptTrips is a go-redis hook counting the round trips that carry a
// script call: a command, or a pipeline of any number of them.
type scriptTrips struct{ n atomic.Int64 }

func (h *scriptTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *scriptTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (h *scriptTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.count(cmds)
		return next(ctx, cmds)
	}
}

func (h *scriptTrips) count(cmds []redis.Cmder) {
	for _, cmd := range cmds {
		if name := strings.ToLower(cmd.Name()); name == "evalsha" || name == "eval" {
			h.n.Add(1)
			return
		}
	}
}

// clusterLimiter is a Redis limiter (with opts) on a private Cluster
// (privateCluster, with nodeHook), its scripts loaded, at a point of the
// window with at least minRemaining left.
func clusterLimiter(t *testing.T, nodeHook redis.Hook, opts ...RedisOption) ([]*redistest.Server, *Redis, *redis.ClusterClient, Keys) {
	t.Helper()
	nodes, c, keys := privateCluster(t, nodeHook)
	r := NewRedis(c, opts...)
	if err := r.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	redistest.WaitForWindow(t, c, minRemaining)
	return nodes, r, c, keys
}

// usersOfMaster returns n users whose counters are on the master of user
// 1's, each in a slot of its own, and a user on another master.
func usersOfMaster(t *testing.T, c *redis.ClusterClient, keys Keys, n int) (uids []int64, elsewhere int64) {
	t.Helper()
	ctx := context.Background()
	master := func(uid int64) string {
		node, err := c.MasterForKey(ctx, keys.User(uid))
		if err != nil {
			t.Fatalf("master of user %d: %v", uid, err)
		}
		return node.Options().Addr
	}
	first := master(1)
	slots := map[uint16]bool{}
	for uid := int64(1); len(uids) < n || elsewhere == 0; uid++ {
		switch s := clusterSlot(keys.User(uid)); {
		case master(uid) != first:
			if elsewhere == 0 {
				elsewhere = uid
			}
		case len(uids) < n && !slots[s]:
			slots[s] = true
			uids = append(uids, uid)
		}
	}
	return uids, elsewhere
}

// TestClusterChecksOfOneMasterShareARoundTrip: on a Cluster, the checks
// of users in different slots of one master share a batcher, and a batch
// of them is one round trip with one script call per slot, each check
// decided as if alone.
func TestClusterChecksOfOneMasterShareARoundTrip(t *testing.T) {
	trips := &scriptTrips{}
	var calls atomic.Int64
	_, r, c, keys := clusterLimiter(t, trips, WithOnCall(func(int) { calls.Add(1) }))
	ctx := context.Background()
	uids, elsewhere := usersOfMaster(t, c, keys, 10)

	b := r.batcherFor(ctx, time.Time{}, keys.User(uids[0]))
	for _, uid := range uids[1:] {
		if r.batcherFor(ctx, time.Time{}, keys.User(uid)) != b {
			t.Fatalf("user %d: another batcher than user %d's, on the same master", uid, uids[0])
		}
	}
	if r.batcherFor(ctx, time.Time{}, keys.User(elsewhere)) == b {
		t.Fatalf("user %d on another master shares user %d's batcher", elsewhere, uids[0])
	}

	// Each user twice, with a user limit of 1: the first admitted, the
	// second refused, whatever came between them.
	var checks []*pendingCheck
	for range 2 {
		for _, uid := range uids {
			checks = append(checks, &pendingCheck{counters: []Counter{groupCounter(keys, uid, 5, 10), userCounter(keys, uid, 1)}})
		}
	}
	trips.n.Store(0)
	r.run(ctx, checks)
	if n := trips.n.Load(); n != 1 {
		t.Errorf("%d round trips with a script call, want 1", n)
	}
	if n := calls.Load(); n != int64(len(uids)) {
		t.Errorf("%d script calls, want one per slot: %d", n, len(uids))
	}
	for i, p := range checks {
		uid := uids[i%len(uids)]
		first := i < len(uids)
		if p.err != nil || p.res.Allowed != first || !slices.Equal(p.res.Counts, []int64{1, 1}) {
			t.Errorf("user %d, check %d: %+v, %v; want allowed %v, counts [1 1]", uid, i/len(uids)+1, p.res, p.err, first)
		}
		if first {
			if got := rawCount(t, c, keys.User(uid)); got != 1 {
				t.Errorf("user %d: counter %d, want 1", uid, got)
			}
		}
	}
}

// TestClusterPipelineReloadsMissingScripts: a batch of many slots whose
// script is gone from the node's cache (restart, failover, SCRIPT FLUSH)
// is sent again with EVAL, and each check counts once.
func TestClusterPipelineReloadsMissingScripts(t *testing.T) {
	_, r, c, keys := clusterLimiter(t, nil)
	ctx := context.Background()
	uids, _ := usersOfMaster(t, c, keys, 6)
	for round := int64(1); round <= 2; round++ {
		err := c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			return n.ScriptFlush(ctx).Err()
		})
		if err != nil {
			t.Fatal(err)
		}
		var checks []*pendingCheck
		for _, uid := range uids {
			checks = append(checks, &pendingCheck{counters: []Counter{userCounter(keys, uid, 10)}})
		}
		r.run(ctx, checks)
		for i, p := range checks {
			if p.err != nil || !p.res.Allowed || !slices.Equal(p.res.Counts, []int64{round}) {
				t.Errorf("round %d, user %d: %+v, %v; want admitted, count %d", round, uids[i], p.res, p.err, round)
			}
			if got := rawCount(t, c, keys.User(uids[i])); got != round {
				t.Errorf("round %d, user %d: counter %d, want %d", round, uids[i], got, round)
			}
		}
	}
}

// TestClusterStoppedMasterHoldsUpOnlyItsSlots: while one master is
// SIGSTOPped and a check of its slots waits for it, checks of the other
// masters' slots are answered at once.
func TestClusterStoppedMasterHoldsUpOnlyItsSlots(t *testing.T) {
	nodes, r, c, keys := clusterLimiter(t, nil)
	ctx := context.Background()
	uids, elsewhere := usersOfMaster(t, c, keys, 1)
	stopped, err := c.MasterForKey(ctx, keys.User(uids[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range []int64{uids[0], elsewhere} { // routes known, connections open
		if _, err := r.Check(ctx, []Counter{userCounter(keys, uid, 100)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		if n.Addr == stopped.Options().Addr {
			n.Pause()
			defer n.Resume()
		}
	}

	// Enough held checks to fill a batcher's calls and queue; the pause
	// stays below the cluster's node timeout (5 s), so no node is failed.
	const wait, heldChecks = 3 * time.Second, 4
	held := make(chan error, heldChecks)
	for range heldChecks {
		go func() {
			_, err := r.checkBy(ctx, time.Now(), time.Now().Add(wait), []Counter{userCounter(keys, uids[0], 100)})
			held <- err
		}()
	}
	time.Sleep(100 * time.Millisecond) // the held checks are out or queued
	for i := range 5 {
		start := time.Now()
		res, err := r.checkBy(ctx, time.Now(), time.Now().Add(wait), []Counter{userCounter(keys, elsewhere, 100)})
		if took := time.Since(start); err != nil || !res.Allowed || took > wait/6 {
			t.Fatalf("check %d of user %d on a running master: %+v, %v after %v; want admitted at once", i, elsewhere, res, err, took)
		}
	}
	select {
	case err := <-held:
		t.Fatalf("a check on the stopped master ended before its deadline: %v", err)
	default:
	}
	for range heldChecks {
		if err := <-held; err == nil {
			t.Error("a check on the stopped master succeeded")
		}
	}
}

// TestClusterSlotMovedUnderACachedRoute: a slot that moves to another
// master while its checks still go to the old master's batcher is followed
// there (MOVED), and its counts carry on.
func TestClusterSlotMovedUnderACachedRoute(t *testing.T) {
	_, r, c, keys := clusterLimiter(t, nil)
	ctx := context.Background()
	uids, elsewhere := usersOfMaster(t, c, keys, 4)
	checks := func() []*pendingCheck {
		var cs []*pendingCheck
		for _, uid := range uids {
			cs = append(cs, &pendingCheck{counters: []Counter{groupCounter(keys, uid, 3, 10), userCounter(keys, uid, 10)}})
		}
		return cs
	}
	for _, p := range checks() { // routes known
		if res, err := r.Check(ctx, p.counters); err != nil || !res.Allowed {
			t.Fatalf("%+v, %v", res, err)
		}
	}
	moved := keys.User(uids[0])
	from, err := c.MasterForKey(ctx, moved)
	if err != nil {
		t.Fatal(err)
	}
	to, err := c.MasterForKey(ctx, keys.User(elsewhere))
	if err != nil {
		t.Fatal(err)
	}
	moveSlot(t, c, clusterSlot(moved), from, to)

	b := r.batcherFor(ctx, time.Time{}, moved)
	if other := r.batcherFor(ctx, time.Time{}, keys.User(uids[1])); other != b {
		t.Fatal("the moved slot's route was not the old master's any more")
	}
	batch := checks()
	r.run(ctx, batch)
	for i, p := range batch {
		if p.err != nil || !p.res.Allowed || !slices.Equal(p.res.Counts, []int64{2, 2}) {
			t.Errorf("user %d after the move: %+v, %v; want admitted, counts [2 2]", uids[i], p.res, p.err)
		}
	}
	if got := rawCount(t, c, moved); got != 2 {
		t.Errorf("moved user's counter %d, want 2", got)
	}
	node, err := c.MasterForKey(ctx, moved)
	if err != nil || node.Options().Addr != to.Options().Addr {
		t.Errorf("go-redis sends the moved slot to %v (%v), want %s", node, err, to.Options().Addr)
	}
}

// moveSlot moves slot, with its keys, from one master to another, the way
// redis-cli --cluster reshard does, and tells every master.
func moveSlot(t *testing.T, c *redis.ClusterClient, slot uint16, from, to *redis.Client) {
	t.Helper()
	ctx := context.Background()
	id := func(n *redis.Client) string {
		s, err := n.Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	fromID, toID := id(from), id(to)
	do := func(n *redis.Client, args ...any) {
		if err := n.Do(ctx, args...).Err(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	do(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID)
	do(from, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID)
	names, err := from.ClusterGetKeysInSlot(ctx, int(slot), 1000).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatalf("slot %d holds no keys to move", slot)
	}
	host, port, _ := strings.Cut(to.Options().Addr, ":")
	args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
	for _, k := range names {
		args = append(args, k)
	}
	do(from, args...)
	err = c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		return n.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestClusterStoppedMasterOpensOnlyItsBreaker: behind a Guarded limiter, a
// SIGSTOPped master opens the breaker of its own slots only. Their checks
// are refused at once (ErrOpen) after the first timeout, while the other
// masters' checks are decided all along; once the master answers again,
// its probe closes its breaker. A master that serves no slot any more
// (failed over) has nothing to probe.
func TestClusterStoppedMasterOpensOnlyItsBreaker(t *testing.T) {
	nodes, r, c, keys := clusterLimiter(t, nil)
	g := NewGuarded(r, 100*time.Millisecond, nil, WithProbeInterval(50*time.Millisecond),
		WithProbe(func(ctx context.Context) error { return c.Ping(ctx).Err() }))
	defer g.Close()
	ctx := context.Background()
	uids, elsewhere := usersOfMaster(t, c, keys, 1)
	onStopped := []Counter{userCounter(keys, uids[0], 1000)}
	onRunning := []Counter{userCounter(keys, elsewhere, 1000)}
	for _, cs := range [][]Counter{onStopped, onRunning} {
		if _, err := g.Check(ctx, cs); err != nil {
			t.Fatal(err)
		}
	}
	stopped, err := c.MasterForKey(ctx, onStopped[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	var node *redistest.Server
	for _, n := range nodes {
		if n.Addr == stopped.Options().Addr {
			node = n
		}
	}
	node.Pause()
	defer node.Resume()

	if _, err := g.Check(ctx, onStopped); err == nil || errors.Is(err, ErrOpen) {
		t.Fatalf("first check on the stopped master: %v; want it to time out", err)
	}
	if _, err := g.Check(ctx, onStopped); !errors.Is(err, ErrOpen) {
		t.Fatalf("second check on the stopped master: %v; want ErrOpen", err)
	}
	if !g.Open() {
		t.Error("Open() = false with a master's breaker open")
	}
	for i := range 20 { // over several probe intervals
		if res, err := g.Check(ctx, onRunning); err != nil || !res.Allowed {
			t.Fatalf("check %d on a running master: %+v, %v; want admitted", i, res, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := r.routes.probe(stopped.Options().Addr)(pctx); err == nil {
		t.Error("the stopped master's probe succeeded")
	}
	pctx, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := r.routes.probe("127.0.0.1:1")(pctx); err != nil {
		t.Errorf("probe of an address that is no master: %v; want nothing to check", err)
	}

	node.Resume()
	deadline := time.Now().Add(3 * time.Second)
	for {
		res, err := g.Check(ctx, onStopped)
		if err == nil && res.Allowed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the resumed master's checks still fail: %+v, %v", res, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if g.Open() {
		t.Error("Open() = true after the master's breaker closed")
	}
}
