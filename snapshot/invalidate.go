package snapshot

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ForgetL1 drops from L1 the entries that match; a nil match drops all.
// It looks at every entry; ForgetKey, ForgetUser and ForgetGroup drop the
// snapshots of one key id, user or group in constant time.
func (c *Cache) ForgetL1(match func(*Snapshot) bool) {
	c.epoch.Add(1)
	if match == nil {
		c.l1.invalidateAll()
		return
	}
	c.l1.forget(match)
}

// ForgetHashes drops the given keys from L1 and L2.
func (c *Cache) ForgetHashes(ctx context.Context, hashes ...string) error {
	c.epoch.Add(1)
	for _, h := range hashes {
		c.l1.invalidate(h)
	}
	if c.l2 == nil || len(hashes) == 0 {
		return nil
	}
	// One DEL per key: in a cluster the keys live in different slots.
	_, err := c.l2.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, h := range hashes {
			p.Del(ctx, c.l2Key(h))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete l2 entries: %w", err)
	}
	return nil
}

// FlushL2 deletes every L2 snapshot (on every master of a cluster).
func (c *Cache) FlushL2(ctx context.Context) error {
	if c.l2 == nil {
		return nil
	}
	c.epoch.Add(1)
	scan := func(ctx context.Context, node redis.Cmdable) error {
		iter := node.Scan(ctx, 0, globEscape(c.cfg.L2Prefix)+"*", 1000).Iterator()
		for iter.Next(ctx) {
			if err := node.Unlink(ctx, iter.Val()).Err(); err != nil {
				return err
			}
		}
		return iter.Err()
	}
	var err error
	if cc, ok := c.l2.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return scan(ctx, n) })
	} else {
		err = scan(ctx, c.l2)
	}
	if err != nil {
		return fmt.Errorf("flush l2: %w", err)
	}
	return nil
}

// globEscape quotes the characters a Redis MATCH pattern gives a meaning
// (* ? [ ] \; ^ and - count only inside brackets, which cannot open), so a
// prefix matches only itself and a flush never reaches keys of another
// prefix.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Match helpers for ForgetL1.

// ForKey matches the snapshot of one API key id.
func ForKey(id int64) func(*Snapshot) bool {
	return func(s *Snapshot) bool { return s.APIKeyID == id }
}

// ForUser matches every snapshot of a user's keys.
func ForUser(id int64) func(*Snapshot) bool {
	return func(s *Snapshot) bool { return s.UserID == id }
}

// ForGroup matches every snapshot of keys in a group.
func ForGroup(id int64) func(*Snapshot) bool {
	return func(s *Snapshot) bool { return s.GroupID != nil && *s.GroupID == id }
}
