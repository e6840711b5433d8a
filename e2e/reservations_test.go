package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// TestReservationsStatusAndMetrics: through a real Caddy, back-to-back
// requests of a hot user take grants and are admitted from them
// (caddy_rpm_reservations_granted_total and
// caddy_rpm_reservation_admissions_total move); rpm-status then shows the
// units this instance holds as reserved, with used = admitted + reserved;
// once idle they are handed back (caddy_rpm_reservation_units_returned_total
// moves) and reserved is 0 again. With `reservations off` no metric moves
// and reserved stays 0.
func TestReservationsStatusAndMetrics(t *testing.T) {
	for _, tc := range []struct {
		name, global string
		on           bool
	}{
		{"on", "reservation_ttl 2s", true}, // long enough to read the status before the hand-back
		{"off", "reservations off\nreservation_ttl 2s", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLimEnv(t)
			// A busy machine must not make a check fail open (uncounted).
			c := e.caddy(t, "", "redis_timeout 2s\n"+tc.global, "")
			uid := storetest.SeedUser(t, e.pool, 100000)
			_, key := e.seedKey(t, uid, nil)
			redistest.WaitForWindow(t, e.rdb, 15*time.Second)

			status := func() (used, reserved int64) {
				t.Helper()
				r := c.admin(t, http.MethodGet, "/admin/users/"+testutil.Itoa(uid)+"/rpm-status", "")
				admWant(t, "rpm-status", r, http.StatusOK)
				var st struct {
					Used     int64 `json:"user_rpm_used"`
					Reserved int64 `json:"user_rpm_reserved"`
				}
				admDecode(t, r, &st)
				return st.Used, st.Reserved
			}
			// Bursts until units are left reserved (the last grant may
			// have been used up), or one burst with reservations off.
			var n, used, reserved int64
			for round := 0; round == 0 || (tc.on && reserved == 0); round++ {
				if round == 10 {
					t.Fatalf("%d requests and never a reserved unit left", n)
				}
				limExpect(t, c, "/v1/x", key, limRepeat(200, 200), "")
				n += 200
				used, reserved = status()
			}
			// A grant fetched ahead by the last requests may still be on
			// its way: Redis counts it a round trip before reserved does.
			testutil.WaitFor(t, 2*time.Second, func() error {
				if used != n+reserved {
					used, reserved = status()
					return fmt.Errorf("used %d, want the %d admitted + %d reserved", used, n, reserved)
				}
				return nil
			})
			granted := c.metric(t, "caddy_rpm_reservations_granted_total")
			admissions := c.metric(t, "caddy_rpm_reservation_admissions_total")
			t.Logf("%d admitted: used %d, reserved %d; %v grants, %v admissions from them", n, used, reserved, granted, admissions)
			if !tc.on {
				if reserved != 0 || granted != 0 || admissions != 0 {
					t.Fatalf("reservations off: reserved %d, %v grants, %v admissions from them", reserved, granted, admissions)
				}
				return
			}
			if granted == 0 || admissions == 0 || admissions >= float64(n) {
				t.Fatalf("%v grants and %v admissions from them for %d requests", granted, admissions, n)
			}
			testutil.WaitFor(t, 5*time.Second, func() error {
				if back := c.metric(t, "caddy_rpm_reservation_units_returned_total"); back < float64(reserved) {
					return fmt.Errorf("%v of the %d reserved units handed back", back, reserved)
				}
				return nil
			})
			if used, reserved := status(); used != n || reserved != 0 {
				t.Fatalf("after the hand-back: used %d, reserved %d; want %d and 0", used, reserved, n)
			}
		})
	}
}
