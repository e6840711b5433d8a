package caddyrpm

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are created once per process and registered with each config's
// registry. No label ever carries a key, user or group id.
type metrics struct {
	decisions *prometheus.CounterVec
	// admittedOK is decisions{admitted,ok}, resolved once for the hot path.
	admittedOK    prometheus.Counter
	cacheHits     *prometheus.CounterVec
	cacheMisses   *prometheus.CounterVec
	storeLoads    prometheus.Counter
	storeErrors   prometheus.Counter
	staleServed   prometheus.Counter
	redisErrors   prometheus.Counter
	failOpens     prometheus.Counter
	checkDuration prometheus.Histogram
	invalidations *prometheus.CounterVec
}

var (
	metricsOnce sync.Once
	allMetrics  *metrics
)

const namespace = "caddy_rpm"

func newMetrics() *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "decisions_total",
			Help: "Requests decided by the rpm handler, by result and reason.",
		}, []string{"result", "reason"}),
		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cache_hits_total",
			Help: "Auth snapshot cache hits by layer (l1, l2).",
		}, []string{"layer"}),
		cacheMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cache_misses_total",
			Help: "Auth snapshot cache misses by layer (l1, l2).",
		}, []string{"layer"}),
		storeLoads: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "store_loads_total",
			Help: "Auth snapshots loaded from the store.",
		}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "store_errors_total",
			Help: "Failed store loads.",
		}),
		staleServed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "stale_served_total",
			Help: "Expired snapshots served because the store was unreachable.",
		}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "redis_errors_total",
			Help: "Redis calls that failed or timed out.",
		}),
		failOpens: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "fail_open_total",
			Help: "Requests admitted without a limit check because Redis was unavailable.",
		}),
		checkDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "check_duration_seconds",
			Help:    "Time spent checking rate limits per request.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1},
		}),
		invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "invalidations_total",
			Help: "Cache invalidations applied, by scope and origin.",
		}, []string{"scope", "origin"}),
	}
	m.admittedOK = m.decisions.WithLabelValues("admitted", "ok")
	return m
}

// registerMetrics registers the process-wide collectors with reg,
// tolerating collectors already registered by a previous config.
func registerMetrics(reg *prometheus.Registry) (*metrics, error) {
	metricsOnce.Do(func() { allMetrics = newMetrics() })
	if reg == nil {
		return allMetrics, nil
	}
	m := allMetrics
	for _, c := range []prometheus.Collector{
		m.decisions, m.cacheHits, m.cacheMisses, m.storeLoads, m.storeErrors,
		m.staleServed, m.redisErrors, m.failOpens, m.checkDuration, m.invalidations,
	} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	return m, nil
}
