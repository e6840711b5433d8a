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
// node of its own slot, following MOVED and ASK.

// routeTTL is how long a slot's master is taken as known. go-redis itself
// reloads its view of the cluster when a node answers MOVED.
const routeTTL = 10 * time.Second

// clusterRoutes finds the batcher of a key's master node.
type clusterRoutes struct {
	client     *redis.ClusterClient
	newBatcher func() *batcher
	slots      [16384]atomic.Pointer[slotRoute]

	mu    sync.Mutex
	nodes map[string]*batcher // by master address; "" for slots whose master is unknown
}

// slotRoute is the batcher of a slot's master, known until until.
type slotRoute struct {
	b     *batcher
	until time.Time
}

func newClusterRoutes(client *redis.ClusterClient, newBatcher func() *batcher) *clusterRoutes {
	return &clusterRoutes{client: client, newBatcher: newBatcher, nodes: make(map[string]*batcher)}
}

// batcher returns the batcher of the master serving key's slot. Looking the
// master up ends by deadline (zero: when ctx ends).
func (cr *clusterRoutes) batcher(ctx context.Context, deadline time.Time, key string) *batcher {
	slot := clusterSlot(key)
	now := time.Now()
	if rt := cr.slots[slot].Load(); rt != nil && now.Before(rt.until) {
		return rt.b
	}
	addr, err := cr.master(ctx, deadline, key)
	cr.mu.Lock()
	b := cr.nodes[addr]
	if b == nil {
		b = cr.newBatcher()
		cr.nodes[addr] = b
	}
	cr.mu.Unlock()
	if err == nil {
		cr.slots[slot].Store(&slotRoute{b: b, until: now.Add(routeTTL)})
	}
	return b
}

// master returns the address of the master go-redis sends key's slot to.
// go-redis asks the cluster only while it has no view of it at all (never
// reached since the start); otherwise it answers from memory.
func (cr *clusterRoutes) master(ctx context.Context, deadline time.Time, key string) (string, error) {
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
