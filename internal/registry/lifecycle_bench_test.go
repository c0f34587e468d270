package registry_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/store"
)

// BenchmarkDeactivateCascade measures the kill switch for one owner of
// 1,000 agents holding 10,000 live credentials (and 100 pending approvals)
// on SQLite: user inactive, every agent orphaned, every approval
// cancelled, every credential revoked, the whole audit story committed.
// The budget is 1 s per cascade. Setting up each owner is not
// timed.
func BenchmarkDeactivateCascade(b *testing.B) {
	const agents, creds, approvals = 1000, 10_000, 100
	e := newEnv(b)
	reg := registry.New(registry.Options{Store: e.store, Logger: slog.New(slog.DiscardHandler)})
	defer reg.Close()
	al, err := audit.New(context.Background(), audit.Options{Store: e.store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer al.Close()
	lc := registry.NewLifecycle(reg, registry.LifecycleOptions{Audit: al})
	ctx := context.Background()
	index := 0
	setup := func(n int) string {
		email := fmt.Sprintf("owner%d@example.com", n)
		u, err := reg.CreateUser(ctx, registry.UserSpec{Email: email})
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		for i := range agents {
			if err := e.store.CreateAgent(ctx, store.Agent{ID: fmt.Sprintf("o%d-a%d", n, i), OwnerID: u.ID, State: store.AgentActive,
				CreatedAt: now, UpdatedAt: now}); err != nil {
				b.Fatal(err)
			}
		}
		for i := range creds {
			index++
			if err := e.store.CreateCredential(ctx, store.Credential{ID: fmt.Sprintf("urn:uuid:o%d-c%d", n, i),
				AgentID: fmt.Sprintf("o%d-a%d", n, i%agents), DecisionID: "d", Upstream: "acme", Tool: "t", ArgsDigest: "00",
				KeyID: "k", StatusList: "1", StatusIndex: index, IssuedAt: now, ExpiresAt: now.Add(time.Hour), Uses: 1}); err != nil {
				b.Fatal(err)
			}
		}
		for i := range approvals {
			if err := e.store.CreateApproval(ctx, store.Approval{ID: fmt.Sprintf("o%d-apr%d", n, i), AgentID: fmt.Sprintf("o%d-a%d", n, i),
				DecisionID: "d", Upstream: "acme", Tool: "t", ArgsDigest: "00", Rule: "r", Quorum: 1, Source: "mcp",
				State: store.ApprovalPending, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
				b.Fatal(err)
			}
		}
		return email
	}
	b.ResetTimer()
	for n := range b.N {
		b.StopTimer()
		email := setup(n)
		b.StartTimer()
		_, rep, err := lc.DeactivateUser(ctx, email, "bench", "benchmark")
		if err != nil {
			b.Fatal(err)
		}
		if len(rep.Agents) != agents || len(rep.CredentialsRevoked) != creds || len(rep.ApprovalsCancelled) != approvals {
			b.Fatalf("report: %d agents, %d credentials, %d approvals", len(rep.Agents), len(rep.CredentialsRevoked), len(rep.ApprovalsCancelled))
		}
	}
}

// BenchmarkAuthenticateLargeStore measures the gate's agent and owner
// lookup (Authenticate: token -> agent and owner) with 100,000 agents and
// 20,000 users in a SQLite store: "cached" while nothing changes, "after a
// change" when every call follows a change somewhere in the registry (the
// kill switch empties the cache), so each call reads the store again.
// Filling the store is not timed.
func BenchmarkAuthenticateLargeStore(b *testing.B) {
	const users, agents = 20_000, 100_000
	e := newEnv(b)
	reg := registry.New(registry.Options{Store: e.store, Logger: slog.New(slog.DiscardHandler)})
	defer reg.Close()
	ctx := context.Background()
	now := time.Now()
	for u := range users {
		if err := e.store.CreateUser(ctx, store.User{ID: fmt.Sprintf("u%d", u), Email: fmt.Sprintf("u%d@example.com", u),
			Active: true, Source: "local", CreatedAt: now, UpdatedAt: now}); err != nil {
			b.Fatal(err)
		}
	}
	for a := range agents - 1 {
		if err := e.store.CreateAgent(ctx, store.Agent{ID: fmt.Sprintf("a%d", a), OwnerID: fmt.Sprintf("u%d", a%users),
			State: store.AgentActive, CreatedAt: now, UpdatedAt: now}); err != nil {
			b.Fatal(err)
		}
	}
	_, token, err := reg.CreateAgent(ctx, registry.AgentSpec{ID: "bench", OwnerEmail: "u7@example.com"})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := reg.Authenticate(ctx, token); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("after a change", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			if _, err := reg.CreateUser(ctx, registry.UserSpec{Email: fmt.Sprintf("n%d@example.com", time.Now().UnixNano())}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if _, err := reg.Authenticate(ctx, token); err != nil {
				b.Fatal(err)
			}
		}
	})
}
