package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/internal/store"
)

const e2eSCIMToken = "scim-e2e-token-0123456789abcdefghijklmnop"

// scimDo sends one SCIM request with the token and returns the status and
// the decoded body.
func scimDo(t *testing.T, addr, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+"/scim/v2"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e2eSCIMToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode, m
}

const patchOp = `"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"]`

// The kill switch end to end, for every way an identity provider
// deprovisions: an agent works; its owner is deprovisioned over SCIM; the
// very next call is refused as orphaned, saying when and what to do; the
// credential of an earlier call now verifies as revoked; a call held for
// approval is cancelled; reassigning the agent brings it back.
func TestSCIMDeprovisioningKillSwitch(t *testing.T) {
	e := newCredentialEnvWith(t, "scim: {token: "+e2eSCIMToken+"}\n")
	small := map[string]any{"item": "USB-C cables", "quantity": 10, "unit_price_usd": 12.5}

	// Without the token: 401.
	resp, err := http.Get("http://" + e.addr + "/scim/v2/Users")
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("SCIM without a token: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()

	shapes := []struct {
		name, method, body string
	}{
		{"entra-legacy", "PATCH", `{` + patchOp + `,"Operations":[{"op":"Replace","path":"active","value":"False"}]}`},
		{"rfc-boolean", "PATCH", `{` + patchOp + `,"Operations":[{"op":"replace","path":"active","value":false}]}`},
		{"okta-pathless", "PATCH", `{` + patchOp + `,"Operations":[{"op":"replace","value":{"active":false}}]}`},
		{"okta-put", "PUT", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"%s","externalId":"00u%d",
			"name":{"givenName":"Leaver","familyName":"Number %d"},"emails":[{"value":"%s","type":"work","primary":true}],"active":false}`},
		{"delete", "DELETE", ""},
	}
	for i, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			email := fmt.Sprintf("leaver%d@example.com", i)
			bot := fmt.Sprintf("bot-%d", i)
			// The provider provisions the owner ...
			st, u := scimDo(t, e.addr, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
				"userName":%q,"externalId":"00u%d","name":{"givenName":"Leaver","familyName":"Number %d"},
				"emails":[{"value":%q,"type":"work","primary":true}],"active":true,"password":"placeholder"}`, email, i, i, email))
			if st != http.StatusCreated {
				t.Fatalf("POST /Users: %d %v", st, u)
			}
			id := u["id"].(string)
			if st, l := scimDo(t, e.addr, "GET", `/Users?filter=userName%20eq%20%22`+strings.ToUpper(email)+`%22`, ""); st != 200 || l["totalResults"] != float64(1) {
				t.Fatalf("filter by userName: %d %v", st, l)
			}
			// ... who gets an agent that works, with a credential per call.
			token := agent(t, e.cfg, bot, email)
			cs := connectHTTP(t, "http://"+e.addr+"/mcp/acme", token)
			first := callFull(t, cs, "place_order", small)
			if first.isError {
				t.Fatalf("allowed call failed: %s", first.text)
			}
			cred, decision := receipt(t, first.meta)
			credFile := filepath.Join(t.TempDir(), "receipt.jwt")
			if err := os.WriteFile(credFile, []byte(cred), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, _, err := run(t, "credentials", "verify", "--config", e.cfg, "--file", credFile); err != nil {
				t.Fatalf("credential before: %v", err)
			}

			// A call held for the owner's approval.
			held := make(chan callResult, 1)
			heldErr := make(chan error, 1)
			hcs := connectHTTP(t, "http://"+e.addr+"/mcp/acme", token)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				res, err := hcs.CallTool(ctx, &mcp.CallToolParams{Name: "place_order",
					Arguments: map[string]any{"item": "laptop batteries", "quantity": 10, "unit_price_usd": 130 + i}})
				if err != nil {
					heldErr <- err
					return
				}
				var parts []string
				for _, c := range res.Content {
					if tc, ok := c.(*mcp.TextContent); ok {
						parts = append(parts, tc.Text)
					}
				}
				held <- callResult{text: strings.Join(parts, "\n"), isError: res.IsError}
			}()
			side := newApproverSide(t, e.cfg)
			ap := side.pending(t, "place_order")

			// The provider deprovisions the owner.
			before := time.Now().UTC().Truncate(time.Second)
			body := sh.body
			if sh.method == "PUT" {
				body = fmt.Sprintf(sh.body, email, i, i, email)
			}
			st, got := scimDo(t, e.addr, sh.method, "/Users/"+id, body)
			switch {
			case sh.method == "DELETE" && st != http.StatusNoContent:
				t.Fatalf("DELETE: %d %v", st, got)
			case sh.method != "DELETE" && (st != http.StatusOK || got["active"] != false):
				t.Fatalf("%s: %d %v", sh.method, st, got)
			}
			if sh.method == "DELETE" {
				if st, _ := scimDo(t, e.addr, "GET", "/Users/"+id, ""); st != http.StatusNotFound {
					t.Errorf("GET after DELETE: %d", st)
				}
			} else if st, g := scimDo(t, e.addr, "GET", "/Users/"+id, ""); st != 200 || g["active"] != false {
				t.Errorf("GET after deprovisioning: %d %v", st, g)
			}

			// The held call ends refused (or its request is closed).
			select {
			case r := <-held:
				if !r.isError || !strings.Contains(r.text, "cancel") {
					t.Errorf("held call: %+v", r)
				}
			case err := <-heldErr:
				t.Logf("held call closed: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("the held call did not end")
			}
			if a, err := side.st.GetApproval(context.Background(), ap.ID); err != nil || a.State != store.ApprovalCancelled || !strings.Contains(a.Reason, email) {
				t.Errorf("approval after deprovisioning: %s %q %v", a.State, a.Reason, err)
			}

			// The very next call: refused as orphaned, with when and what to do.
			cs2 := connectHTTP(t, "http://"+e.addr+"/mcp/acme", token)
			r := callFull(t, cs2, "place_order", small)
			if !r.isError {
				t.Fatalf("call after deprovisioning went through: %s", r.text)
			}
			for _, want := range []string{"orphaned", email, "reassign", "decommission"} {
				if !strings.Contains(r.text, want) {
					t.Errorf("refusal %q lacks %q", r.text, want)
				}
			}
			if !strings.Contains(r.text, before.Format("2006-01-02T15:")) {
				t.Errorf("refusal %q does not say when (%s)", r.text, before.Format(time.RFC3339))
			}
			// The earlier call's credential, unexpired, is now revoked.
			if _, _, err := run(t, "credentials", "verify", "--config", e.cfg, "--file", credFile); err == nil || !strings.Contains(err.Error(), "revoked") {
				t.Errorf("credential %v after deprovisioning: %v", decision["credential_id"], err)
			}
			out, _, err := run(t, "agents", "list", "--config", e.cfg, "--orphaned")
			if err != nil || !strings.Contains(out, bot) {
				t.Errorf("agents list --orphaned: %v\n%s", err, out)
			}
			out, _, err = run(t, "agents", "show", "--config", e.cfg, bot)
			if err != nil || !strings.Contains(out, "orphaned") || !strings.Contains(out, "agent_orphaned") || !strings.Contains(out, "credentials_revoked") {
				t.Errorf("agents show: %v\n%s", err, out)
			}

			// Reassigning brings it back.
			out, _, err = run(t, "agents", "reassign", "--config", e.cfg, bot, "--to", "owner@example.com", "--reason", "team lead takes over")
			if err != nil || !strings.Contains(out, "active") {
				t.Fatalf("agents reassign: %v\n%s", err, out)
			}
			// (The CLI is another process: the gateway sees its change at
			// its next read of the store's generation, within 100 ms.)
			time.Sleep(150 * time.Millisecond)
			if r := callFull(t, cs2, "place_order", small); r.isError {
				t.Errorf("call after reassign: %s", r.text)
			}
		})
	}

	out, _, err := run(t, "audit", "export", "--config", e.cfg)
	for _, typ := range []string{"user_deactivated", "user_deleted", "agent_orphaned", "credentials_revoked", "approvals_cancelled", "agent_reassigned"} {
		if err != nil || !strings.Contains(out, `"`+typ+`"`) {
			t.Errorf("audit export lacks %s (%v)", typ, err)
		}
	}
	if _, _, err := run(t, "audit", "verify", "--config", e.cfg); err != nil {
		t.Errorf("audit verify: %v", err)
	}
}

// The CLI's lifecycle commands against the store a running gateway uses:
// the gateway refuses from its next call after its registry rereads the
// store's generation (at most GenerationMaxAge, 100 ms, later).
func TestLifecycleCommandsStopARunningGateway(t *testing.T) {
	e := newCredentialEnv(t)
	small := map[string]any{"item": "USB-C cables", "quantity": 10, "unit_price_usd": 12.5}
	cs := connectHTTP(t, "http://"+e.addr+"/mcp/acme", e.token)
	// after waits out the gateway's generation cache, then calls.
	after := func() callResult {
		time.Sleep(150 * time.Millisecond)
		return callFull(t, cs, "place_order", small)
	}
	if r := callFull(t, cs, "place_order", small); r.isError {
		t.Fatalf("first call: %s", r.text)
	}
	if _, _, err := run(t, "stop", "--config", e.cfg, "--all"); err == nil {
		t.Error("stop without --reason was accepted")
	}
	out, _, err := run(t, "stop", "--config", e.cfg, "--owner", "owner@example.com", "--reason", "incident 7")
	if err != nil || !strings.Contains(out, "procurement-bot") {
		t.Fatalf("stop: %v\n%s", err, out)
	}
	if r := after(); !r.isError || !strings.Contains(r.text, "suspended") || !strings.Contains(r.text, "incident 7") {
		t.Errorf("call after stop: %+v", r)
	}
	if _, _, err := run(t, "resume", "--config", e.cfg, "--all"); err != nil {
		t.Fatal(err)
	}
	if r := after(); r.isError {
		t.Errorf("call after resume: %s", r.text)
	}
	if _, _, err := run(t, "users", "create", "--config", e.cfg, "--email", "next@example.com"); err != nil {
		t.Fatal(err)
	}
	out, _, err = run(t, "users", "deactivate", "--config", e.cfg, "owner@example.com", "--reason", "left")
	if err != nil || !strings.Contains(out, "1 agent(s) changed") {
		t.Fatalf("users deactivate: %v\n%s", err, out)
	}
	if r := after(); !r.isError || !strings.Contains(r.text, "orphaned") {
		t.Errorf("call after deactivate: %+v", r)
	}
	out, _, err = run(t, "users", "show", "--config", e.cfg, "owner@example.com")
	if err != nil || !strings.Contains(out, "false") || !strings.Contains(out, "procurement-bot (orphaned)") {
		t.Errorf("users show: %v\n%s", err, out)
	}
	if _, _, err := run(t, "users", "activate", "--config", e.cfg, "owner@example.com"); err != nil {
		t.Fatal(err)
	}
	if r := after(); !r.isError {
		t.Error("activating the owner brought the orphaned agent back")
	}
	if _, _, err := run(t, "agents", "reassign", "--config", e.cfg, "procurement-bot", "--to", "next@example.com"); err != nil {
		t.Fatal(err)
	}
	if r := after(); r.isError {
		t.Errorf("call after reassign: %s", r.text)
	}
	if _, _, err := run(t, "agents", "suspend", "--config", e.cfg, "procurement-bot", "--reason", "x"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, "agents", "resume", "--config", e.cfg, "procurement-bot"); err != nil {
		t.Fatal(err)
	}
	out, _, err = run(t, "agents", "decommission", "--config", e.cfg, "procurement-bot", "--reason", "retired")
	if err != nil || !strings.Contains(out, "agent tokens revoked: 1") {
		t.Fatalf("decommission: %v\n%s", err, out)
	}
	time.Sleep(150 * time.Millisecond)
	if r, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "place_order", Arguments: small}); err == nil && !r.IsError {
		t.Error("a decommissioned agent's call went through")
	}
	out, _, err = run(t, "agents", "show", "--config", e.cfg, "procurement-bot", "--json")
	var shown struct {
		State   string
		History []map[string]any
	}
	if err != nil || json.Unmarshal([]byte(out), &shown) != nil || shown.State != "decommissioned" || len(shown.History) < 6 {
		t.Errorf("agents show --json: %v\n%s", err, out)
	}
	if _, _, err := run(t, "audit", "verify", "--config", e.cfg); err != nil {
		t.Errorf("audit verify: %v", err)
	}
}
