package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/store"
)

func TestNormalizeUpstreams(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
		err  bool
	}{
		{nil, nil, false},
		{[]string{}, nil, false},
		{[]string{" jira", "github", "jira"}, []string{"github", "jira"}, false},
		{[]string{"git-hub_2"}, []string{"git-hub_2"}, false},
		{[]string{""}, nil, true},
		{[]string{"has space"}, nil, true},
		{[]string{"a/b"}, nil, true},
		{[]string{"x123456789012345678901234567890123"}, nil, true},
	} {
		got, err := registry.NormalizeUpstreams(tc.in)
		if tc.err {
			if !errors.Is(err, store.ErrInvalid) {
				t.Errorf("NormalizeUpstreams(%q) = %q, %v; want ErrInvalid", tc.in, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("NormalizeUpstreams(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestAllowedUpstreams(t *testing.T) {
	e := newLC(t)
	ctx := context.Background()
	e.user(t, "alice@example.com")

	a, tok, err := e.reg.CreateAgent(ctx, registry.AgentSpec{ID: "a1", OwnerEmail: "alice@example.com",
		AllowedUpstreams: []string{"jira", " github", "jira"}, CreatedBy: "cli:root"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.AllowedUpstreams, []string{"github", "jira"}) || a.CreatedBy != "cli:root" {
		t.Fatalf("created %+v", a)
	}
	if _, _, err := e.reg.CreateAgent(ctx, registry.AgentSpec{ID: "a2", OwnerEmail: "alice@example.com",
		AllowedUpstreams: []string{"no such/name"}}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("a bad upstream name: %v", err)
	}
	if _, err := e.reg.GetAgent(ctx, "a2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the agent with a bad upstream name was created: %v", err)
	}

	p, err := e.reg.Authenticate(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	for up, want := range map[string]bool{"github": true, "jira": true, "shop": false} {
		if got := registry.AllowsUpstream(p.Agent, up); got != want {
			t.Errorf("AllowsUpstream(%s) = %v, want %v", up, got, want)
		}
	}

	// A change reaches the cached principal at once, and is audited.
	e.clock.Advance(time.Minute)
	a, err = e.lc.SetAllowedUpstreams(ctx, "a1", []string{"shop"}, "cli:root")
	if err != nil || !slices.Equal(a.AllowedUpstreams, []string{"shop"}) || !a.UpdatedAt.Equal(e.clock.Now()) {
		t.Fatalf("SetAllowedUpstreams = %+v, %v", a, err)
	}
	if p, err = e.reg.Authenticate(ctx, tok); err != nil || !registry.AllowsUpstream(p.Agent, "shop") || registry.AllowsUpstream(p.Agent, "github") {
		t.Fatalf("after the change the principal allows %q (%v)", p.Agent.AllowedUpstreams, err)
	}
	hist, err := e.lc.History(ctx, "a1")
	if err != nil || len(hist) == 0 || hist[len(hist)-1].Type != "agent_upstreams_set" {
		t.Fatalf("history = %+v, %v", hist, err)
	}
	var data struct {
		From []string `json:"from_upstreams"`
		To   []string `json:"upstreams"`
		By   string   `json:"by"`
	}
	if err := json.Unmarshal(hist[len(hist)-1].Data, &data); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(data.From, []string{"github", "jira"}) || !slices.Equal(data.To, []string{"shop"}) || data.By != "cli:root" {
		t.Errorf("audited %+v", data)
	}

	// Empty: every upstream again.
	if a, err = e.lc.SetAllowedUpstreams(ctx, "a1", nil, "cli:root"); err != nil || a.AllowedUpstreams != nil {
		t.Fatalf("clear = %+v, %v", a, err)
	}
	if p, err = e.reg.Authenticate(ctx, tok); err != nil || !registry.AllowsUpstream(p.Agent, "anything") {
		t.Fatalf("after clearing: %q, %v", p.Agent.AllowedUpstreams, err)
	}

	if _, err := e.lc.SetAllowedUpstreams(ctx, "nope", []string{"shop"}, "cli:root"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown agent: %v", err)
	}
	if _, err := e.lc.SetAllowedUpstreams(ctx, "a1", []string{"bad name"}, "cli:root"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("bad name: %v", err)
	}
	if _, err := e.lc.DecommissionAgent(ctx, "a1", "cli:root", "retired"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.lc.SetAllowedUpstreams(ctx, "a1", []string{"shop"}, "cli:root"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("decommissioned agent: %v", err)
	}
}

func TestLastUsed(t *testing.T) {
	t1 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	toks := []store.AgentToken{{ID: "a"}, {ID: "b", LastUsedAt: t1.Add(time.Hour)}, {ID: "c", LastUsedAt: t1}}
	if got := registry.LastUsed(toks); !got.Equal(t1.Add(time.Hour)) {
		t.Errorf("LastUsed = %v", got)
	}
	if got := registry.LastUsed(nil); !got.IsZero() {
		t.Errorf("LastUsed(nil) = %v", got)
	}
}
