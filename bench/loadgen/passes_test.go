package main

import (
	"testing"
	"time"
)

// TestKeyPassesDue checks when a round passes over a key range again: a
// range never passed over, or last passed over more than keyPassEvery
// ago; never a target without a range.
func TestKeyPassesDue(t *testing.T) {
	users := target{Name: "users", Key: keyRangeTag + "sk-rpm-bench:50000"}
	admitted := target{Name: "admitted", Key: "sk-rpm-fixed"}
	now := time.Now()
	kp := keyPasses{}
	if !kp.due(users, now) {
		t.Error("a key range never passed over is not due")
	}
	if kp.due(admitted, now) {
		t.Error("a target without a key range is due")
	}
	kp[users.Name] = now.Add(-keyPassEvery + time.Second)
	if kp.due(users, now) {
		t.Error("a key range passed over within keyPassEvery is due")
	}
	kp[users.Name] = now.Add(-keyPassEvery - time.Second)
	if !kp.due(users, now) {
		t.Error("a key range passed over more than keyPassEvery ago is not due")
	}
}
