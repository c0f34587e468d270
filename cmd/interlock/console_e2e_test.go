package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/internal/testenv"
)

// The whole story in a real browser: the owner enrols a passkey through a
// one-time link, an agent's $1,200 order is held, the request shows up in
// the owner's console, the owner approves with the passkey, and the held
// MCP call completes with a credential that names the owner and the
// webauthn-uv method.
func TestApproveInTheConsole(t *testing.T) {
	chromium := testenv.Chromium(t)
	e := newCredentialEnv(t)
	base := e.issuer + "/console"

	out, _, err := run(t, "users", "enroll", "--config", e.cfg, "--email", "owner@example.com")
	if err != nil {
		t.Fatalf("users enroll: %v", err)
	}
	link := out[strings.Index(out, base+"/enroll/"):]
	link = strings.TrimSpace(link)

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.NoFirstRun, chromedp.UserDataDir(t.TempDir()))
	tab, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(tab, 10*time.Second)
		defer cancel()
		chromedp.Cancel(cctx)
		cancelTab()
		cancelAlloc()
	})
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	if _, err := chromedp.Call(tab, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(tab, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{
		Options: &webauthn.VirtualAuthenticatorOptions{
			Protocol: webauthn.AuthenticatorProtocolCtap2, Ctap2version: webauthn.Ctap2versionCtap21,
			Transport: webauthn.AuthenticatorTransportInternal, HasResidentKey: true, HasUserVerification: true,
			IsUserVerified: true, AutomaticPresenceSimulation: true,
		}}); err != nil {
		t.Fatal(err)
	}
	waitJS := func(js string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(tab, 5*time.Second)
			ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+js+")"))
			cancel()
			if err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				page, _ := chromedp.Run(tab, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
				t.Fatalf("waiting for %s: %v\n%s", js, err, page)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	do := func(actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(tab, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("browser: %v", err)
		}
	}

	// Enrol, which also signs in.
	do(chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#enroll")), chromedp.Click(chromedp.CSS("#enroll")))
	waitJS(`document.body.dataset.page === "list"`)

	// The agent's order is held...
	pl := &progressLog{}
	cs := connectWithProgress(t, "http://"+e.addr+"/mcp/acme", e.token, pl)
	done := make(chan *mcp.CallToolResult, 1)
	go func() {
		p := &mcp.CallToolParams{Name: "place_order", Arguments: map[string]any{"item": "laptop batteries", "quantity": 10, "unit_price_usd": 120}}
		p.SetProgressToken("console")
		res, err := cs.CallTool(context.Background(), p)
		if err != nil {
			t.Errorf("held call: %v", err)
		}
		done <- res
	}()
	// ... and shows up live in the owner's console.
	waitJS(`document.querySelector("#pending li[data-id]") !== null`)
	id, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector("#pending li[data-id]").dataset.id`))
	if err != nil {
		t.Fatal(err)
	}
	do(chromedp.Navigate(base+"/approvals/"+id), chromedp.WaitVisible(chromedp.CSS("#approve")))
	page, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector("main").textContent`))
	if !strings.Contains(page, "$1,200") || !strings.Contains(page, "laptop batteries") {
		t.Errorf("detail page: %s", page)
	}
	do(chromedp.Click(chromedp.CSS("#approve")))
	waitJS(`document.getElementById("state") && document.getElementById("state").textContent === "approved"`)

	var res *mcp.CallToolResult
	select {
	case res = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the held call did not complete after the approval")
	}
	if res == nil || res.IsError {
		t.Fatalf("approved call: %+v", res)
	}
	token, decision := receipt(t, res.Meta)
	if decision["approval_id"] != id {
		t.Errorf("receipt names approval %v, want %s", decision["approval_id"], id)
	}
	auth := payload(t, token)["credentialSubject"].(map[string]any)["authorization"].([]any)
	a0 := auth[0].(map[string]any)
	if len(auth) != 1 || a0["approver"] != "owner@example.com" || a0["method"] != "webauthn-uv" || a0["approval_id"] != id {
		t.Errorf("credential authorization = %v", auth)
	}
	if res.Meta[acme_verified] != decision["credential_id"] {
		t.Errorf("acme verified %v, receipt %v", res.Meta[acme_verified], decision["credential_id"])
	}
	if len(pl.all()) == 0 {
		t.Error("no progress while the call was held")
	}
}
