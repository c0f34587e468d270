package adminapi_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/interlock-dev/interlock/internal/registry"
)

func upstreamsOf(t testing.TB, m map[string]any) []string {
	t.Helper()
	l, ok := m["allowed_upstreams"].([]any)
	if !ok {
		t.Fatalf("allowed_upstreams is not an array in %v", m)
	}
	out := []string{}
	for _, x := range l {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func TestAgentAllowedUpstreams(t *testing.T) {
	e := newEnv(t)
	tok := e.setup()
	// bot-1 was created without a list: every upstream, and who made it.
	d := e.want(e.do(e.view, "GET", "/api/v1/agents/bot-1", ""), 200, "get bot-1").obj(t)
	if got := upstreamsOf(t, d); len(got) != 0 || d["created_by"] != "admin:ops" {
		t.Fatalf("bot-1 = %v", d)
	}

	r := e.want(e.do(e.admin, "POST", "/api/v1/agents",
		`{"id":"bot-2","owner":"alice@example.com","allowed_upstreams":["jira","github"]}`), 201, "create bot-2")
	if got := upstreamsOf(t, r.obj(t)); !slices.Equal(got, []string{"github", "jira"}) {
		t.Errorf("bot-2 allowed %q", got)
	}
	if got := e.lastAudit("agent_created")["allowed_upstreams"]; fmt.Sprint(got) != "[github jira]" {
		t.Errorf("agent_created audited allowed_upstreams %v", got)
	}
	e.want(e.do(e.admin, "POST", "/api/v1/agents", `{"id":"bot-3","owner":"alice@example.com","allowed_upstreams":["a b"]}`), 400, "bad name")

	// Set, audited; the agent's principal follows.
	e.want(e.do(e.sec, "POST", "/api/v1/agents/bot-1/upstreams", `{"allowed_upstreams":["shop"]}`), 403, "security may not")
	e.want(e.do(e.admin, "POST", "/api/v1/agents/bot-1/upstreams", `{}`), 400, "no list")
	e.want(e.do(e.admin, "POST", "/api/v1/agents/bot-1/upstreams", `{"allowed_upstreams":["a/b"]}`), 400, "bad name")
	e.want(e.do(e.admin, "POST", "/api/v1/agents/nope/upstreams", `{"allowed_upstreams":["shop"]}`), 404, "unknown agent")
	r = e.want(e.do(e.admin, "POST", "/api/v1/agents/bot-1/upstreams", `{"allowed_upstreams":["shop"]}`), 200, "set")
	if got := upstreamsOf(t, r.obj(t)); !slices.Equal(got, []string{"shop"}) {
		t.Errorf("after set: %q", got)
	}
	if a := e.lastAudit("agent_upstreams_set"); a["by"] != "admin:ops" || fmt.Sprint(a["upstreams"]) != "[shop]" {
		t.Errorf("audited %v", a)
	}
	p, err := e.reg.Authenticate(context.Background(), tok)
	if err != nil || registry.AllowsUpstream(p.Agent, "github") || !registry.AllowsUpstream(p.Agent, "shop") {
		t.Fatalf("principal allows %q (%v)", p.Agent.AllowedUpstreams, err)
	}
	r = e.want(e.do(e.admin, "POST", "/api/v1/agents/bot-1/upstreams", `{"allowed_upstreams":[]}`), 200, "clear")
	if got := upstreamsOf(t, r.obj(t)); len(got) != 0 {
		t.Errorf("after clear: %q", got)
	}
	e.want(e.do(e.admin, "POST", "/api/v1/agents/bot-2/decommission", `{}`), 200, "decommission")
	e.want(e.do(e.admin, "POST", "/api/v1/agents/bot-2/upstreams", `{"allowed_upstreams":["shop"]}`), 409, "decommissioned")
}
