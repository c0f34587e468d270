// Package telemetry holds interlock's Prometheus metrics on a registry of
// its own (no global registry) and implements the relay's Observer.
//
// It must not log or make decisions; it only counts.
package telemetry

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the set of interlock metrics.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	upErrors *prometheus.CounterVec
	gated    *prometheus.CounterVec
}

// New creates the metrics on a fresh registry, with Go and process collectors.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "interlock_mcp_requests_total",
		Help: "Agent HTTP requests to the MCP endpoints, by upstream (\"\" for /mcp), HTTP method and status code.",
	}, []string{"upstream", "method", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "interlock_mcp_request_duration_seconds",
		Help:    "Time to answer an agent HTTP request (for SSE streams: until the stream ends).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"upstream", "method"})
	m.upErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "interlock_upstream_errors_total",
		Help: "Failures talking to upstream MCP servers, by upstream and kind.",
	}, []string{"upstream", "kind"})
	m.gated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "interlock_gated_calls_total",
		Help: "Gated requests (tools/call), by upstream, method and outcome (forwarded, denied, error).",
	}, []string{"upstream", "method", "outcome"})
	m.reg.MustRegister(m.requests, m.latency, m.upErrors, m.gated,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry returns the registry, for tests and for other packages' metrics.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Request implements relay.Observer.
func (m *Metrics) Request(upstream, method string, status int, d time.Duration) {
	m.requests.WithLabelValues(upstream, method, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(upstream, method).Observe(d.Seconds())
}

// UpstreamError implements relay.Observer.
func (m *Metrics) UpstreamError(upstream, kind string) {
	m.upErrors.WithLabelValues(upstream, kind).Inc()
}

// Gated implements relay.Observer.
func (m *Metrics) Gated(upstream, method, outcome string) {
	m.gated.WithLabelValues(upstream, method, outcome).Inc()
}
