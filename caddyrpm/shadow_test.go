package caddyrpm

import (
	"testing"
	"time"
)

func TestShadowLogOncePerUserAndWindow(t *testing.T) {
	var s shadowLog
	t0 := time.Date(2026, 12, 3, 10, 0, 20, 0, time.UTC)
	end := t0.Add(40 * time.Second) // the window ends at 10:01:00

	if !s.first(1, t0, end) {
		t.Fatal("the first shadow refusal of user 1 is not logged")
	}
	if s.first(1, t0.Add(39*time.Second), end) {
		t.Error("a second shadow refusal of user 1 in the same window is logged")
	}
	if !s.first(2, t0.Add(time.Second), end) {
		t.Error("user 2's first shadow refusal is not logged because of user 1's")
	}
	if !s.first(1, end, end.Add(time.Minute)) {
		t.Error("user 1's first shadow refusal of the next window is not logged")
	}
}

func TestShadowLogForgetsEndedWindows(t *testing.T) {
	var s shadowLog
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	for id := range int64(1000) {
		s.first(id, t0, t0.Add(time.Minute))
	}
	// The map grows to at most twice its size after the last sweep before
	// it drops the users whose window ended.
	later := t0.Add(2 * time.Minute)
	for id := int64(1000); id < 1100; id++ {
		s.first(id, later, later.Add(time.Minute))
	}
	if n := len(s.quiet); n != 100 {
		t.Errorf("%d users remembered, want the 100 of the current window", n)
	}
}
