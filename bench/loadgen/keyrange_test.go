package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync/atomic"
	"testing"
)

// The range's keys are the ones bench/run.sh creates in SQL:
// 'sk-rpm-bench' || lpad(i::text, 35, '0'), hashed with sha256().
func TestKeyRangeKeysMatchTheSQL(t *testing.T) {
	kr, err := parseKeyRange("@range:sk-rpm-bench:50000")
	if err != nil || kr == nil {
		t.Fatalf("parse: %v, %v", kr, err)
	}
	k := kr.key(7)
	if want := "sk-rpm-bench" + strings.Repeat("0", 34) + "7"; k != want || len(k) != keyLen {
		t.Fatalf("key(7) = %q (%d bytes), want %q", k, len(k), want)
	}
	// Computed by Postgres: select encode(sha256(convert_to(
	// 'sk-rpm-bench' || lpad(7::text, 35, '0'), 'UTF8')), 'hex').
	sum := sha256.Sum256([]byte(k))
	if got, want := hex.EncodeToString(sum[:]), "10de21ff9c88f5c15ca563b7f38f77c302e4a4ca26c21d222e769072b1f6b093"; got != want {
		t.Fatalf("sha256 = %s, want %s", got, want)
	}
}

func TestKeyRangeRequests(t *testing.T) {
	tg := target{Name: "users", Addr: "127.0.0.1:1", Path: "/", Key: "@range:sk-rpm-bench:3"}
	kr, _ := parseKeyRange(tg.Key)
	req, at, n := buildRequest(tg)
	keyOf := func(r []byte) string { return kr.prefix + string(r[at:at+n]) }

	var next atomic.Int64
	var seen []string
	each := kr.each(req, at, n, &next)
	for r := each(); r != nil; r = each() {
		if !bytes.Contains(r, []byte("Authorization: Bearer "+keyOf(r)+"\r\n")) {
			t.Fatalf("request does not carry its key:\n%s", r)
		}
		seen = append(seen, keyOf(r))
	}
	if want := []string{kr.key(1), kr.key(2), kr.key(3)}; strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Fatalf("each sent %v, want %v", seen, want)
	}

	counts := map[string]int{}
	uni := kr.uniform(req, at, n)
	for range 3000 {
		counts[keyOf(uni())]++
	}
	for i := 1; i <= 3; i++ {
		if c := counts[kr.key(i)]; c < 800 || c > 1200 {
			t.Fatalf("key %d drawn %d times of 3000: %v", i, c, counts)
		}
	}
	if len(counts) != 3 {
		t.Fatalf("drew keys outside the range: %v", counts)
	}
}

func TestKeyRangeParseErrors(t *testing.T) {
	for _, k := range []string{"@range:sk-rpm-bench", "@range:sk-rpm-bench:0", "@range:sk-rpm-bench:x", "@range:" + strings.Repeat("x", 45) + ":1000"} {
		if _, err := parseKeyRange(k); err == nil {
			t.Errorf("%q: no error", k)
		}
	}
	if kr, err := parseKeyRange("sk-rpm-abc"); kr != nil || err != nil {
		t.Errorf("a plain key parsed as a range: %v, %v", kr, err)
	}
}
