package audit

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// benchDecision is a decision record of realistic size (about 600 bytes of
// canonical JSON), as the gate writes one per call.
type benchDecision struct {
	Effect        string         `json:"effect"`
	Rule          string         `json:"rule"`
	Matched       []string       `json:"matched"`
	Reasons       []string       `json:"reasons"`
	Tool          string         `json:"tool"`
	Upstream      string         `json:"upstream"`
	Owner         string         `json:"owner"`
	ArgsDigest    string         `json:"args_digest"`
	Args          map[string]any `json:"args"`
	Class         string         `json:"class"`
	Action        string         `json:"action"`
	Risk          string         `json:"risk"`
	RiskScore     int            `json:"risk_score"`
	Amount        float64        `json:"amount"`
	PolicyVersion string         `json:"policy_version"`
	LatencyMicros int64          `json:"latency_us"`
}

func benchEvent(i int) Event {
	return Event{Type: "decision", CallID: fmt.Sprintf("01JD%022d", i), AgentID: "procurement-bot", Data: benchDecision{
		Effect: "allow", Rule: "small-orders", Matched: []string{"small-orders"},
		Reasons: []string{"call.action == \"spend\" && call.amount < 400"},
		Tool:    "place_order", Upstream: "acme", Owner: "alice@example.com",
		ArgsDigest: "9f2c1b7e4a0d3c5b6e8f7a9d1c2b3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d",
		Args:       map[string]any{"sku": "A-100", "quantity": 3, "unit_price_usd": 129.99, "customer_id": "c-42", "note": "rush"},
		Class:      "transactional", Action: "spend", Risk: "high", RiskScore: 72, Amount: 389.97,
		PolicyVersion: "sha256:4b1c9e2f", LatencyMicros: int64(i % 50),
	}}
}

// BenchmarkAppend measures sustained appends from about 64 concurrent
// callers (RunParallel with 32 goroutines per CPU), each waiting for its
// own commit, on SQLite in a temporary directory.
func BenchmarkAppend(b *testing.B) {
	st, _ := openStore(b)
	l := newLog(b, st, Options{Now: time.Now})
	b.ReportAllocs()
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	cpu0 := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := l.Append(context.Background(), benchEvent(i)); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	b.StopTimer()
	reportRates(b, b.N, cpu0)
}

// BenchmarkAppendSerial is one caller at a time: one transaction per event.
func BenchmarkAppendSerial(b *testing.B) {
	st, _ := openStore(b)
	l := newLog(b, st, Options{Now: time.Now})
	b.ReportAllocs()
	cpu0 := cpuTime()
	i := 0
	for b.Loop() {
		if _, err := l.Append(context.Background(), benchEvent(i)); err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportRates(b, b.N, cpu0)
}

// BenchmarkVerify verifies a chain of 200,000 events.
func BenchmarkVerify(b *testing.B) {
	const events = 200_000
	st, _ := openStore(b)
	l := newLog(b, st, Options{Now: time.Now, CheckpointEvery: 10_000, MaxBatch: 5000})
	batch := make([]Event, 5000)
	for n := 0; n < events; n += len(batch) {
		for i := range batch {
			batch[i] = benchEvent(n + i)
		}
		if _, err := l.AppendBatch(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		rep, err := Verify(context.Background(), st, nil)
		if err != nil || !rep.OK() || rep.Events != events {
			b.Fatalf("Verify = %+v, %v", rep, err)
		}
	}
	reportRates(b, events*b.N, cpu0)
}

// reportRates reports events/s (wall clock) and CPU ns per event (all
// goroutines: the caller's, the committer's, the store's).
func reportRates(b *testing.B, events int, cpu0 time.Duration) {
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	if cpu := cpuTime(); cpu > 0 {
		b.ReportMetric(float64((cpu-cpu0).Nanoseconds())/float64(events), "cpu-ns/event")
	}
}

// BenchmarkAppendBatchSize reports the average events per transaction
// under BenchmarkAppend's load.
func BenchmarkAppendBatchSize(b *testing.B) {
	st, _ := openStore(b)
	g := &gatedStore{Store: st}
	l := newLog(b, g, Options{Now: time.Now})
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	cpu0 := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := l.Append(context.Background(), benchEvent(i)); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	b.StopTimer()
	reportRates(b, b.N, cpu0)
	g.mu.Lock()
	b.ReportMetric(float64(b.N)/float64(max(1, len(g.sizes))), "events/tx")
	g.mu.Unlock()
}
