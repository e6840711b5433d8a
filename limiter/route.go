package limiter

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sharing round trips on a Redis Cluster
//
// A script call may only touch the keys of one hash slot, and users spread
// over all 16,384 slots, so a batcher per slot would let checks of
// different users share nothing: each would cost a round trip and a script
// call of its own (measured: 1.000 calls per check at 32 goroutines and
// 50,000 users). So the batchers are per master node. A batch carries the
// checks of any of the node's slots, and run sends it as one pipeline with
// one script call per slot: one round trip, as on a single Redis. A node
// that stops answering holds up only the checks of its own slots.
//
// Which master serves a slot is go-redis's view of the cluster, looked up
// at most once per routeTTL for each slot. A stale view costs sharing,
// never correctness: go-redis sends each script call of a pipeline to the
// node of its own slot, following MOVED and ASK. The masters also name the
// circuit breakers of a Guarded limiter (server, breaker.go).

// routeTTL is how long a slot's master is taken as known. go-redis itself
// reloads its view of the cluster when a node answers MOVED.
const routeTTL = 10 * time.Second

// clusterRoutes finds the master node of a key.
type clusterRoutes struct {
	client     *redis.ClusterClient
	newBatcher func() *batcher
	slots      [16384]atomic.Pointer[slotRoute]

	mu    sync.Mutex
	nodes map[string]*masterNode // by address; "" for slots whose master is unknown
}

// masterNode is what this instance keeps of a master: the batcher of its
// checks and a probe of it (for its circuit breaker, breaker.go).
type masterNode struct {
	addr  string
	b     *batcher
	probe func(context.Context) error
}

// slotRoute is a slot's master, known until until.
type slotRoute struct {
	node  *masterNode
	until time.Time
}

func newClusterRoutes(client *redis.ClusterClient, newBatcher func() *batcher) *clusterRoutes {
	return &clusterRoutes{client: client, newBatcher: newBatcher, nodes: make(map[string]*masterNode)}
}

// master returns the master serving key's slot. Looking it up ends by
// deadline (zero: when ctx ends).
func (cr *clusterRoutes) master(ctx context.Context, deadline time.Time, key string) *masterNode {
	slot := clusterSlot(key)
	now := time.Now()
	if rt := cr.slots[slot].Load(); rt != nil && now.Before(rt.until) {
		return rt.node
	}
	addr, err := cr.lookup(ctx, deadline, key)
	cr.mu.Lock()
	n := cr.nodes[addr]
	if n == nil {
		n = &masterNode{addr: addr, b: cr.newBatcher(), probe: cr.probe(addr)}
		cr.nodes[addr] = n
	}
	cr.mu.Unlock()
	if err == nil {
		cr.slots[slot].Store(&slotRoute{node: n, until: now.Add(routeTTL)})
	}
	return n
}

// lookup returns the address of the master go-redis sends key's slot to.
// go-redis asks the cluster only while it has no view of it at all (never
// reached since the start); otherwise it answers from memory.
func (cr *clusterRoutes) lookup(ctx context.Context, deadline time.Time, key string) (string, error) {
	ctx, cancel := withDeadline(ctx, deadline)
	defer cancel()
	node, err := cr.client.MasterForKey(ctx, key)
	if err != nil {
		return "", err
	}
	if addr := node.Options().Addr; addr != "" {
		return addr, nil
	}
	return "", errors.New("master without an address")
}

// probe returns a health check of the master at addr: a PING, or nothing
// to check once addr serves no slot any more (after a failover its
// breaker must not stay open for good). go-redis reloads its view of the
// cluster for it.
func (cr *clusterRoutes) probe(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		return cr.client.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			if n.Options().Addr != addr {
				return nil
			}
			return n.Ping(ctx).Err()
		})
	}
}

// slotChecks splits checks by their Cluster slot, keeping their order
// within each slot.
func slotChecks(checks []*pendingCheck) [][]*pendingCheck {
	if len(checks) == 1 {
		return [][]*pendingCheck{checks}
	}
	// A batch has at most maxBatch checks: a scan beats a map.
	var parts [][]*pendingCheck
	var slots []uint16
next:
	for _, p := range checks {
		s := clusterSlot(p.key())
		for i, t := range slots {
			if t == s {
				parts[i] = append(parts[i], p)
				continue next
			}
		}
		slots = append(slots, s)
		parts = append(parts, []*pendingCheck{p})
	}
	return parts
}
