package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/notify"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
)

// approverSide is what an approver does through the console, done here
// through a second approval service on the gateway's store (as another
// replica would): find the pending request, vote on it.
type approverSide struct {
	st  store.Store
	svc *approval.Service
}

func newApproverSide(t *testing.T, cfg string) *approverSide {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(filepath.Dir(cfg), "interlock.db"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	al, err := audit.New(ctx, audit.Options{Store: st, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	svc, err := approval.New(approval.Options{Store: st, Audit: al, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return &approverSide{st: st, svc: svc}
}

// pending waits for the agent's pending approval request to appear.
func (a *approverSide) pending(t *testing.T, tool string) store.Approval {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		list, err := a.st.ListApprovals(context.Background(), store.ApprovalFilter{State: store.ApprovalPending})
		if err != nil {
			t.Fatal(err)
		}
		for _, ap := range list {
			if ap.Tool == tool {
				return ap
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no pending approval for %s appeared", tool)
	return store.Approval{}
}

func (a *approverSide) vote(t *testing.T, id, email string, approve bool, reason string) store.Approval {
	t.Helper()
	u, err := a.st.GetUserByEmail(context.Background(), email)
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.svc.Vote(context.Background(), id, u, approval.Vote{Approve: approve, Reason: reason, Method: "test-vote"})
	if err != nil {
		t.Fatalf("vote by %s: %v", email, err)
	}
	return got
}

type progressLog struct {
	mu   sync.Mutex
	msgs []string
}

func (p *progressLog) handler(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
	p.mu.Lock()
	p.msgs = append(p.msgs, req.Params.Message)
	p.mu.Unlock()
}

func (p *progressLog) all() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.msgs...)
}

func connectWithProgress(t *testing.T, url, token string, pl *progressLog) *mcp.ClientSession {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, &mcp.ClientOptions{ProgressNotificationHandler: pl.handler})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: bearerRT{token}}}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// payload decodes a JWT's payload (the signature is checked elsewhere).
func payload(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %q", token)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// A call the policy marks "approve" is held open (with progress
// notifications to the agent) until the owner approves; it then goes
// through with a credential that names the approver. A denial reaches the
// agent with who denied and why; an agent that gives up cancels its request.
func TestApprovalHoldsTheCall(t *testing.T) {
	e := newCredentialEnv(t)
	side := newApproverSide(t, e.cfg)
	big := map[string]any{"item": "laptop batteries", "quantity": 10, "unit_price_usd": 130}

	for _, tc := range []struct {
		endpoint, tool string
		price          float64
	}{
		{"/mcp/acme", "place_order", 120}, // pass-through: the answer turns into an event stream
		{"/mcp", "acme_place_order", 121}, // aggregated: message-level session
	} {
		t.Run("approve via "+tc.endpoint, func(t *testing.T) {
			pl := &progressLog{}
			cs := connectWithProgress(t, "http://"+e.addr+tc.endpoint, e.token, pl)
			args := map[string]any{"item": "laptop batteries", "quantity": 10, "unit_price_usd": tc.price}
			type result struct {
				res *mcp.CallToolResult
				err error
			}
			done := make(chan result, 1)
			go func() {
				p := &mcp.CallToolParams{Name: tc.tool, Arguments: args}
				p.SetProgressToken("held-1")
				res, err := cs.CallTool(context.Background(), p)
				done <- result{res, err}
			}()
			ap := side.pending(t, "place_order")
			if !strings.Contains(ap.BindingMessage, "$1,2") || !strings.Contains(ap.BindingMessage, "laptop batteries") {
				t.Errorf("binding message %q", ap.BindingMessage)
			}
			// The agent hears that its call waits, before anyone answers.
			deadline := time.Now().Add(30 * time.Second)
			for len(pl.all()) == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if msgs := pl.all(); len(msgs) == 0 || !strings.Contains(msgs[0], "waiting for approval by the agent's owner") || !strings.Contains(msgs[0], ap.ID) {
				t.Errorf("progress while held: %q", msgs)
			}
			side.vote(t, ap.ID, "owner@example.com", true, "")
			r := <-done
			if r.err != nil || r.res.IsError {
				t.Fatalf("approved call: %v %+v", r.err, r.res)
			}
			token, decision := receipt(t, r.res.Meta)
			if decision["approval_id"] != ap.ID || r.res.Meta[acme_verified] != decision["credential_id"] {
				t.Errorf("receipt %v, acme verified %v", decision, r.res.Meta[acme_verified])
			}
			subj := payload(t, token)["credentialSubject"].(map[string]any)
			auth, _ := subj["authorization"].([]any)
			if len(auth) != 1 || auth[0].(map[string]any)["approver"] != "owner@example.com" ||
				auth[0].(map[string]any)["approval_id"] != ap.ID || auth[0].(map[string]any)["kind"] != "approval" {
				t.Errorf("credential authorization = %v", subj["authorization"])
			}
		})
	}

	cs := connectHTTP(t, "http://"+e.addr+"/mcp/acme", e.token)
	t.Run("deny", func(t *testing.T) {
		done := make(chan callResult, 1)
		go func() { done <- callFull(t, cs, "place_order", big) }()
		ap := side.pending(t, "place_order")
		side.vote(t, ap.ID, "owner@example.com", false, "we have enough batteries")
		r := <-done
		if !r.isError || !strings.Contains(r.text, "owner@example.com denied this call") || !strings.Contains(r.text, "we have enough batteries") {
			t.Fatalf("denied call: %+v", r)
		}
	})
	t.Run("agent gives up", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "place_order", Arguments: map[string]any{"item": "x", "quantity": 10, "unit_price_usd": 150}})
			done <- err
		}()
		ap := side.pending(t, "place_order")
		cancel()
		<-done
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			got, err := side.st.GetApproval(context.Background(), ap.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.State == store.ApprovalCancelled {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Error("the approval request was not cancelled when the agent gave up")
	})
	// Operators see the requests and their outcomes.
	out, _, err := run(t, "approvals", "list", "--config", e.cfg)
	if err != nil || !strings.Contains(out, "approved") || !strings.Contains(out, "denied") || !strings.Contains(out, "cancelled") {
		t.Errorf("approvals list: %v\n%s", err, out)
	}
	out, _, err = run(t, "approvals", "list", "--config", e.cfg, "--state", "denied", "--json")
	var denied []map[string]any
	if err != nil || json.Unmarshal([]byte(out), &denied) != nil || len(denied) != 1 {
		t.Fatalf("approvals list --state denied --json: %v\n%s", err, out)
	}
	out, _, err = run(t, "approvals", "show", "--config", e.cfg, denied[0]["id"].(string))
	if err != nil || !strings.Contains(out, "DENIED") || !strings.Contains(out, "owner@example.com denied") || !strings.Contains(out, "we have enough batteries") {
		t.Errorf("approvals show: %v\n%s", err, out)
	}
	if _, _, err := run(t, "approvals", "list", "--config", e.cfg, "--state", "maybe"); err == nil {
		t.Error("approvals list --state maybe was accepted")
	}
	if _, _, err := run(t, "audit", "verify", "--config", e.cfg); err != nil {
		t.Errorf("audit verify: %v", err)
	}
}

const acme_verified = "io.acme/verified-credential"

// Approvers are told about a held call on every configured channel: here
// a signed webhook, whose receiver checks the signature, and the delivery
// is recorded in the audit log.
func TestApprovalNotifiesApprovers(t *testing.T) {
	const secret = "webhook-secret-for-the-e2e-test"
	got := make(chan map[string]any, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notify.VerifySignature([]byte(secret), r.Header.Get(notify.SignatureHeader), body, time.Now(), time.Minute); err != nil {
			t.Errorf("webhook signature: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var m map[string]any
		json.Unmarshal(body, &m)
		got <- m
	}))
	t.Cleanup(hook.Close)
	e := newCredentialEnvWith(t, fmt.Sprintf("notifications:\n  webhooks: [{url: %q, secret: %q}]\n", hook.URL, secret))
	side := newApproverSide(t, e.cfg)
	cs := connectHTTP(t, "http://"+e.addr+"/mcp/acme", e.token)
	done := make(chan callResult, 1)
	go func() {
		done <- callFull(t, cs, "place_order", map[string]any{"item": "monitors", "quantity": 5, "unit_price_usd": 300})
	}()
	ap := side.pending(t, "place_order")
	var m map[string]any
	select {
	case m = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook arrived")
	}
	if m["approval_id"] != ap.ID || !strings.Contains(fmt.Sprint(m["url"]), "/console/approvals/"+ap.ID) || !strings.Contains(fmt.Sprint(m["text"]), "$1,500") {
		t.Errorf("webhook body = %v", m)
	}
	side.vote(t, ap.ID, "owner@example.com", true, "")
	if r := <-done; r.isError {
		t.Fatalf("approved call: %+v", r)
	}
	// The delivery is in the audit log.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		out, _, err := run(t, "audit", "export", "--config", e.cfg)
		if err == nil && strings.Contains(out, `"notification"`) && strings.Contains(out, `"ok":true`) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Error("the webhook delivery is not in the audit log")
}
