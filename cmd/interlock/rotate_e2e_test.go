package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Rotating an agent's token: the new one works at once, the old one is
// refused from then on, and the rotation is audited.
func TestAgentTokenRotation(t *testing.T) {
	e := newCredentialEnv(t)
	out, _, err := run(t, "agents", "tokens", "list", "procurement-bot", "--config", e.cfg, "--json")
	if err != nil {
		t.Fatalf("tokens list: %v", err)
	}
	var toks []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(out), &toks); err != nil || len(toks) != 1 {
		t.Fatalf("tokens list --json = %s (%v)", out, err)
	}
	out, _, err = run(t, "agents", "tokens", "rotate", toks[0].ID, "--agent", "procurement-bot", "--config", e.cfg, "--json")
	if err != nil {
		t.Fatalf("tokens rotate: %v", err)
	}
	var rotated struct{ ID, Token, Revoked string }
	if err := json.Unmarshal([]byte(out), &rotated); err != nil || !strings.HasPrefix(rotated.Token, "ilk_") || rotated.Revoked != toks[0].ID {
		t.Fatalf("tokens rotate --json = %s (%v)", out, err)
	}
	if _, _, err := run(t, "agents", "tokens", "rotate", toks[0].ID, "--agent", "procurement-bot", "--config", e.cfg); err == nil || !strings.Contains(err.Error(), "already revoked") {
		t.Errorf("rotating a revoked token: %v", err)
	}

	// The new token works (the gateway sees the change within its cache bound).
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := mcp.NewClient(&mcp.Implementation{Name: "rot", Version: "1"}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: "http://" + e.addr + "/mcp/acme", HTTPClient: &http.Client{Transport: bearerRT{rotated.Token}}}, nil)
		cancel()
		if err == nil {
			r := callFull(t, cs, "search_docs", map[string]any{"query": "refund"})
			cs.Close()
			if r.isError {
				t.Fatalf("a call with the new token: %s", r.text)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new token is refused: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The old one is refused.
	req, _ := http.NewRequest("POST", "http://"+e.addr+"/mcp/acme", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the old token after rotation: HTTP %d, want 401", resp.StatusCode)
	}
	out, _, err = run(t, "audit", "export", "--config", e.cfg)
	if err != nil || !strings.Contains(out, `"agent_token_rotated"`) {
		t.Errorf("no agent_token_rotated event in the audit log (%v)", err)
	}
}
