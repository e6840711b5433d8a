package caddyrpm

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddyrpm/caddy-rpm/limiter"
)

// metrics are created once per process and registered with each config's
// registry. No label ever carries a key, user or group id.
type metrics struct {
	decisions *prometheus.CounterVec
	// admittedOK is decisions{admitted,ok}, resolved once for the hot path.
	admittedOK prometheus.Counter
	cacheHits  *prometheus.CounterVec
	// l1Hits is cacheHits{l1}, resolved once for the hot path.
	l1Hits        prometheus.Counter
	cacheMisses   *prometheus.CounterVec
	storeLoads    prometheus.Counter
	storeReloads  prometheus.Counter
	storeErrors   prometheus.Counter
	staleServed   prometheus.Counter
	redisErrors   prometheus.Counter
	failOpens     prometheus.Counter
	checkDuration prometheus.Histogram
	checksPerCall prometheus.Histogram
	invalidations *prometheus.CounterVec
	// keyFilterRejections counts requests refused by the key filter.
	keyFilterRejections prometheus.Counter
	keyFilterBuilds     *prometheus.CounterVec
	// shadowRefusals counts requests admitted by shadow mode, by the code
	// they would have been refused with.
	shadowRefusals *prometheus.CounterVec
	// inFlight is the number of this process's requests holding a
	// concurrency slot (see liveLimiters).
	inFlight prometheus.GaugeFunc
	// reservations count what the limiters' reservations did (see
	// reservationStats).
	reservations []prometheus.Collector
}

var (
	metricsOnce sync.Once
	allMetrics  *metrics
)

const namespace = "caddy_rpm"

func newMetrics() *metrics {
	m := &metrics{
		decisions:   counterVec("decisions_total", "Requests decided by the rpm handler, by result and reason.", "result", "reason"),
		cacheHits:   counterVec("cache_hits_total", "Auth snapshot cache hits by layer (l1, l2).", "layer"),
		cacheMisses: counterVec("cache_misses_total", "Auth snapshot cache misses by layer (l1, l2).", "layer"),
		storeLoads:  counter("store_loads_total", "Auth snapshots loaded from the store."),
		storeReloads: counter("store_reloads_total",
			"Of store_loads_total, those of background reloads (keys in use whose L2 entry had expired), which no request waited for."),
		storeErrors: counter("store_errors_total", "Failed store loads."),
		staleServed: counter("stale_served_total", "Expired snapshots served because the store was unreachable."),
		redisErrors: counter("redis_errors_total", "Redis calls that failed or timed out."),
		failOpens:   counter("fail_open_total", "Requests admitted without a limit check because Redis was unavailable."),
		checkDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "check_duration_seconds",
			Help:    "Time spent checking rate limits per request.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1},
		}),
		checksPerCall: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "redis_checks_per_call",
			Help:    "Requests' limit checks carried by one Redis script call: concurrent checks share a call. The count is the number of calls, the sum the checks sent.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
		invalidations: counterVec("invalidations_total", "Cache invalidations applied, by scope and origin.", "scope", "origin"),
		keyFilterRejections: counter("key_filter_rejections_total",
			"Requests refused as INVALID_API_KEY by the in-process filter of valid keys, without a cache or store lookup."),
		keyFilterBuilds: counterVec("key_filter_builds_total", "Builds of the filter of valid keys from the store, by result (ok, error).", "result"),
		shadowRefusals: counterVec("shadow_refusals_total",
			"Requests admitted by a handler in shadow mode that a limit would have refused, by the code of that refusal.", "reason"),
	}
	m.inFlight = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "in_flight",
		Help: "Requests of this instance admitted under a concurrency cap and not over yet (holding a slot).",
	}, inFlight)
	m.reservations = []prometheus.Collector{
		reservationCounter("reservations_granted_total",
			"Grants of reserved units this instance took: checks that counted several requests in Redis at once.",
			func(st limiter.ReservationStats) uint64 { return st.Granted }),
		reservationCounter("reservation_admissions_total",
			"Requests admitted from a reservation, without a Redis call.",
			func(st limiter.ReservationStats) uint64 { return st.Local }),
		reservationCounter("reservation_units_returned_total",
			"Reserved units handed back to Redis unused, summed over their counters.",
			func(st limiter.ReservationStats) uint64 { return st.HandedBack }),
		reservationCounter("reservations_unanswered_total",
			"Reserving checks whose answer was lost (timeout, connection lost); the units they may have taken stay counted until the end of their window.",
			func(st limiter.ReservationStats) uint64 { return st.Unanswered }),
		reservationCounter("reservation_return_errors_total",
			"Hand-back calls that failed; their units stay counted until the end of their window.",
			func(st limiter.ReservationStats) uint64 { return st.HandBackErrors }),
	}
	m.admittedOK = m.decisions.WithLabelValues("admitted", "ok")
	m.l1Hits = m.cacheHits.WithLabelValues("l1")
	return m
}

// reservationCounter is a counter read from the reservation stats of every
// limiter of the process at each scrape.
func reservationCounter(name, help string, field func(limiter.ReservationStats) uint64) prometheus.CounterFunc {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help},
		func() float64 { return float64(field(reservationStats())) })
}

// cacheHit counts a hit of a cache layer. Every admitted request has an L1
// hit, and WithLabelValues hashes its labels and takes a lock each time.
func (m *metrics) cacheHit(layer string) {
	if layer == "l1" {
		m.l1Hits.Inc()
		return
	}
	m.cacheHits.WithLabelValues(layer).Inc()
}

func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
}

// registerMetrics registers the process-wide collectors with reg,
// tolerating collectors already registered by a previous config.
func registerMetrics(reg *prometheus.Registry) (*metrics, error) {
	metricsOnce.Do(func() { allMetrics = newMetrics() })
	if reg == nil {
		return allMetrics, nil
	}
	m := allMetrics
	for _, c := range append([]prometheus.Collector{
		m.decisions, m.cacheHits, m.cacheMisses, m.storeLoads, m.storeReloads, m.storeErrors,
		m.staleServed, m.redisErrors, m.failOpens, m.checkDuration, m.checksPerCall, m.invalidations,
		m.keyFilterRejections, m.keyFilterBuilds, m.shadowRefusals, m.inFlight,
	}, m.reservations...) {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	return m, nil
}
