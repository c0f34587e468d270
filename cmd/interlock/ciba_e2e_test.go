package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/ciba"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
	"github.com/interlock-dev/interlock/internal/testenv"
	"github.com/interlock-dev/interlock/verify"
)

const cibaPolicy = `version: 1
default: deny
tools:
  - match: "acme.place_order"
    class: transactional
    action: spend
    amount: "args.quantity * args.unit_price_usd"
rules:
  - id: small-orders
    when: 'tool.name == "place_order" && call.amount < 400'
    effect: allow
    reason: "orders under $400 are automatic"
  - id: owner-approves-orders
    when: 'tool.name == "place_order" && call.amount >= 400'
    effect: approve
    approvers: [owner]
    reason: "orders from $400 need the owner's approval"
  - id: no-servers
    when: 'tool.name == "provision_servers"'
    effect: deny
    reason: "provisioning servers is never automated"
`

type cibaEnv struct {
	cfg, addr, issuer string
	tokens            map[string]string
	pingPort          int
	side              *approverSide
}

// newCIBAEnv is a gateway in front of acme (verifying every credential)
// with two agents: poll-bot (a poll client) and ping-bot (registered for
// ping delivery to a local notification endpoint the node client runs).
func newCIBAEnv(t *testing.T) *cibaEnv {
	t.Helper()
	addr := freeAddr(t)
	v, err := verify.New(verify.Options{Issuer: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	srv := acme.NewServer(acme.Options{Verifier: v})
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	t.Cleanup(up.Close)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(cibaPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, fmt.Sprintf(`listen: %s
public_url: http://%[1]s
storage: {dsn: interlock.db}
policy: {file: policy.yaml}
upstreams:
  - name: acme
    url: %s
`, addr, up.URL))
	e := &cibaEnv{cfg: cfg, addr: addr, issuer: "http://" + addr, tokens: map[string]string{}}
	e.tokens["poll-bot"] = agent(t, cfg, "poll-bot", "owner@example.com")
	e.tokens["ping-bot"] = agent(t, cfg, "ping-bot", "owner@example.com")
	// ping-bot's CIBA registration (docs/ciba.md: kept in the store).
	pingAddr := freeAddr(t)
	fmt.Sscanf(pingAddr[strings.LastIndexByte(pingAddr, ':')+1:], "%d", &e.pingPort)
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: filepath.Join(dir, "interlock.db"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	reg, _ := json.Marshal(ciba.Metadata{DeliveryMode: ciba.ModePing, NotificationEndpoint: "http://" + pingAddr + "/cb"})
	if _, err := st.PutMetaIfAbsent(context.Background(), app.CIBAClientKey+"ping-bot", reg); err != nil {
		t.Fatal(err)
	}
	st.Close()
	serveInProcess(t, cfg)
	e.side = newApproverSide(t, cfg)
	return e
}

// cibaResult is what ciba_client.mjs prints.
type cibaResult struct {
	OK                   bool            `json:"ok"`
	Ack                  map[string]any  `json:"ack"`
	Ping                 map[string]any  `json:"ping"`
	AccessToken          string          `json:"access_token"`
	TokenType            string          `json:"token_type"`
	ExpiresIn            float64         `json:"expires_in"`
	AuthorizationDetails json.RawMessage `json:"authorization_details"`
	Error                string          `json:"error"`
	Status               int             `json:"status"`
	Description          string          `json:"description"`
	Name                 string          `json:"name"`
	Message              string          `json:"message"`
	Challenges           []string        `json:"challenges"`
	Cause                string          `json:"cause"`
	Discovered           map[string]any  `json:"discovered"`
	Polls                []struct {
		At     int64  `json:"at"`
		Status int    `json:"status"`
		Error  string `json:"error"`
		Copy   bool   `json:"copy"`
	} `json:"polls"`
}

// openidClient runs one CIBA flow with openid-client in the background.
func (e *cibaEnv) openidClient(t *testing.T, opts map[string]any) <-chan cibaResult {
	t.Helper()
	node := testenv.Node(t)
	root := testenv.RepoRoot(t)
	modules := filepath.Join(root, "test", "peers", "node_modules")
	if _, err := os.Stat(filepath.Join(modules, "openid-client", "package.json")); err != nil {
		testenv.Skip(t, "npm peer openid-client is not installed: run `npm ci --prefix test/peers`")
	}
	opts["issuer"] = e.issuer
	if _, ok := opts["secret"]; !ok {
		opts["secret"] = e.tokens[opts["client_id"].(string)]
	}
	b, _ := json.Marshal(opts)
	ch := make(chan cibaResult, 1)
	go func() {
		cmd := exec.Command(node, filepath.Join(root, "cmd", "interlock", "testdata", "ciba_client.mjs"), string(b))
		cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var r cibaResult
		if err != nil {
			r.Message = fmt.Sprintf("node: %v\n%s", err, stderr.String())
		} else if err := json.Unmarshal(out, &r); err != nil {
			r.Message = fmt.Sprintf("ciba_client.mjs printed %q: %v", out, err)
		}
		ch <- r
	}()
	return ch
}

func wait(t *testing.T, ch <-chan cibaResult) cibaResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.Name == "" && !r.OK && r.Message != "" {
			t.Fatal(r.Message)
		}
		return r
	case <-time.After(90 * time.Second):
		t.Fatal("openid-client did not finish")
	}
	return cibaResult{}
}

func orderDetails(item string, qty int, price float64) (map[string]any, []any) {
	args := map[string]any{"item": item, "quantity": qty, "unit_price_usd": price}
	return args, []any{map[string]any{"type": "interlock_tool_call", "upstream": "acme", "tool": "place_order", "arguments": args}}
}

// pendingItem waits for the pending approval of the order of item.
func (e *cibaEnv) pendingItem(t *testing.T, item string) store.Approval {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		list, err := e.side.st.ListApprovals(context.Background(), store.ApprovalFilter{State: store.ApprovalPending})
		if err != nil {
			t.Fatal(err)
		}
		for _, ap := range list {
			if strings.Contains(string(ap.Arguments), `"item":"`+item+`"`) {
				return ap
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no pending approval for %s appeared", item)
	return store.Approval{}
}

// presentTwice presents an action credential with the MCP call it
// authorises: it goes through once (acme verifies it too), and a second
// presentation is refused.
func (e *cibaEnv) presentTwice(t *testing.T, token string, args map[string]any) {
	t.Helper()
	cs := connectHTTP(t, "http://"+e.addr+"/mcp/acme", e.tokens["poll-bot"])
	r := callWithMeta(t, cs, "place_order", args, mcp.Meta{"io.interlock/credential": token})
	if r.isError {
		t.Fatalf("call with the CIBA credential refused: %s", r.text)
	}
	if r.meta[acme.MetaVerifiedCredential] != payload(t, token)["jti"] {
		t.Errorf("acme verified %v", r.meta[acme.MetaVerifiedCredential])
	}
	if r := callWithMeta(t, cs, "place_order", args, mcp.Meta{"io.interlock/credential": token}); !r.isError || !strings.Contains(r.text, "no use left") {
		t.Fatalf("second presentation: %+v", r)
	}
}

// openid-client, an independent CIBA client, against interlock as the
// OpenID Provider: poll mode (approved, allowed, denied by the approver,
// denied by the policy, expired, slow_down, unknown approver, bad client
// secret) and ping mode. The access tokens verify with jose through
// interlock's JWKS and are usable once with the MCP call.
func TestCIBAWithOpenIDClient(t *testing.T) {
	e := newCIBAEnv(t)

	t.Run("poll: approved", func(t *testing.T) {
		args, det := orderDetails("laptop batteries", 10, 120)
		ch := e.openidClient(t, map[string]any{"client_id": "poll-bot", "details": det,
			"login_hint": "owner@example.com", "binding_message": "Order 1042: 10 laptop batteries"})
		ap := e.pendingItem(t, "laptop batteries")
		if ap.BindingMessage != "Order 1042: 10 laptop batteries" || ap.Source != "ciba" {
			t.Errorf("approval %+v", ap)
		}
		e.side.vote(t, ap.ID, "owner@example.com", true, "")
		r := wait(t, ch)
		if !r.OK || r.TokenType != "bearer" || r.AccessToken == "" {
			t.Fatalf("openid-client: %+v", r)
		}
		if r.Discovered["backchannel"] != e.issuer+"/oauth/backchannel" {
			t.Errorf("discovered %v", r.Discovered)
		}
		var got []map[string]any
		if err := json.Unmarshal(r.AuthorizationDetails, &got); err != nil || len(got) != 1 || got[0]["tool"] != "place_order" {
			t.Errorf("authorization_details %s", r.AuthorizationDetails)
		}
		_, revoked, digest, pl := joseVerify(t, e.issuer, r.AccessToken, args)
		subj, _ := pl["credentialSubject"].(map[string]any)
		action, _ := subj["action"].(map[string]any)
		auth, _ := subj["authorization"].([]any)
		if revoked || action["arguments_digest"] != digest || len(auth) != 1 || auth[0].(map[string]any)["approver"] != "owner@example.com" {
			t.Errorf("jose read revoked=%v subject=%v", revoked, subj)
		}
		e.presentTwice(t, r.AccessToken, args)
	})

	t.Run("poll: allowed by the policy (client_secret_basic)", func(t *testing.T) {
		args, det := orderDetails("USB-C cables", 4, 12.5)
		r := wait(t, e.openidClient(t, map[string]any{"client_id": "poll-bot", "auth": "basic", "details": det}))
		if !r.OK || len(r.Polls) != 1 {
			t.Fatalf("openid-client: %+v", r)
		}
		joseVerify(t, e.issuer, r.AccessToken, args)
		e.presentTwice(t, r.AccessToken, args)
	})

	t.Run("poll: denied by the approver", func(t *testing.T) {
		_, det := orderDetails("gold bars", 10, 130)
		ch := e.openidClient(t, map[string]any{"client_id": "poll-bot", "details": det})
		ap := e.pendingItem(t, "gold bars")
		e.side.vote(t, ap.ID, "owner@example.com", false, "we do not buy gold")
		r := wait(t, ch)
		if r.OK || r.Error != "access_denied" || !strings.Contains(r.Description, "owner@example.com denied this request: we do not buy gold") {
			t.Fatalf("openid-client: %+v", r)
		}
	})

	t.Run("denied by the policy", func(t *testing.T) {
		det := []any{map[string]any{"type": "interlock_tool_call", "upstream": "acme", "tool": "provision_servers", "arguments": map[string]any{"count": 2}}}
		r := wait(t, e.openidClient(t, map[string]any{"client_id": "poll-bot", "details": det}))
		if r.OK || r.Error != "access_denied" || r.Status != 403 || !strings.Contains(r.Description, "never automated") {
			t.Fatalf("openid-client: %+v", r)
		}
	})

	t.Run("poll: expired", func(t *testing.T) {
		_, det := orderDetails("late widgets", 10, 100)
		r := wait(t, e.openidClient(t, map[string]any{"client_id": "poll-bot", "details": det, "requested_expiry": 3}))
		if r.OK || r.Error != "expired_token" {
			t.Fatalf("openid-client: %+v", r)
		}
		if r.Ack["expires_in"] != 3.0 {
			t.Errorf("ack %v", r.Ack)
		}
	})

	t.Run("poll: slow_down", func(t *testing.T) {
		_, det := orderDetails("slow widgets", 10, 101)
		ch := e.openidClient(t, map[string]any{"client_id": "poll-bot", "details": det, "force_slow_down": true})
		ap := e.pendingItem(t, "slow widgets")
		time.Sleep(3500 * time.Millisecond) // after the first (doubled) poll
		e.side.vote(t, ap.ID, "owner@example.com", true, "")
		r := wait(t, ch)
		if !r.OK || len(r.Polls) != 3 || r.Polls[0].Error != "authorization_pending" || r.Polls[1].Error != "slow_down" || r.Polls[2].Error != "ok" {
			t.Fatalf("openid-client: %+v", r)
		}
		interval := r.Ack["interval"].(float64)
		if gap := time.Duration(r.Polls[2].At-r.Polls[1].At) * time.Millisecond; gap < time.Duration(interval+5)*time.Second-500*time.Millisecond {
			t.Errorf("after slow_down openid-client waited %v (interval %v s)", gap, interval)
		}
	})

	t.Run("unknown approver", func(t *testing.T) {
		_, det := orderDetails("hinted widgets", 10, 102)
		r := wait(t, e.openidClient(t, map[string]any{"client_id": "poll-bot", "details": det, "login_hint": "nobody@example.com"}))
		if r.OK || r.Error != "unknown_user_id" || r.Status != 400 {
			t.Fatalf("openid-client: %+v", r)
		}
	})

	t.Run("bad client secret", func(t *testing.T) {
		_, det := orderDetails("x", 1, 1)
		bad := "ilk_" + strings.Repeat("x", 43)
		r := wait(t, e.openidClient(t, map[string]any{"client_id": "poll-bot", "secret": bad, "details": det}))
		if r.OK || r.Error != "invalid_client" || r.Status != 401 {
			t.Fatalf("client_secret_post: %+v", r)
		}
		r = wait(t, e.openidClient(t, map[string]any{"client_id": "poll-bot", "secret": bad, "auth": "basic", "details": det}))
		if r.OK || r.Status != 401 || len(r.Challenges) != 1 || !strings.EqualFold(r.Challenges[0], "basic") {
			t.Fatalf("client_secret_basic: %+v", r)
		}
		// Another agent's (valid) token is no secret for poll-bot.
		r = wait(t, e.openidClient(t, map[string]any{"client_id": "poll-bot", "secret": e.tokens["ping-bot"], "details": det}))
		if r.OK || r.Error != "invalid_client" {
			t.Fatalf("another agent's token: %+v", r)
		}
	})

	t.Run("ping: approved", func(t *testing.T) {
		args, det := orderDetails("pinged widgets", 10, 103)
		ch := e.openidClient(t, map[string]any{"client_id": "ping-bot", "details": det,
			"ping_port": e.pingPort, "notification_token": "cnt-" + strings.Repeat("k", 40)})
		ap := e.pendingItem(t, "pinged widgets")
		e.side.vote(t, ap.ID, "owner@example.com", true, "")
		r := wait(t, ch)
		if !r.OK || r.Ping == nil || len(r.Polls) != 1 {
			t.Fatalf("openid-client: %+v", r)
		}
		body, _ := r.Ping["body"].(map[string]any)
		if body["auth_req_id"] != r.Ack["auth_req_id"] || r.Ping["content_type"] != "application/json" {
			t.Errorf("ping %v, ack %v", r.Ping, r.Ack)
		}
		_, _, _, pl := joseVerify(t, e.issuer, r.AccessToken, args)
		if subj, _ := pl["credentialSubject"].(map[string]any); subj["id"] == nil {
			t.Errorf("payload %v", pl)
		}
	})

	t.Run("ping: denied", func(t *testing.T) {
		_, det := orderDetails("denied pinged widgets", 10, 104)
		ch := e.openidClient(t, map[string]any{"client_id": "ping-bot", "details": det,
			"ping_port": e.pingPort, "notification_token": "cnt-" + strings.Repeat("d", 40)})
		ap := e.pendingItem(t, "denied pinged widgets")
		e.side.vote(t, ap.ID, "owner@example.com", false, "no")
		r := wait(t, ch)
		if r.OK || r.Error != "access_denied" || r.Ping == nil {
			t.Fatalf("openid-client: %+v", r)
		}
	})

	if _, _, err := run(t, "audit", "verify", "--config", e.cfg); err != nil {
		t.Errorf("audit verify: %v", err)
	}
}
