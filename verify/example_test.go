package verify_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/verify"
)

// exampleTB lets the test fixture run outside a test: failures are fatal,
// cleanups are the caller's.
type exampleTB struct{ testing.TB }

func (exampleTB) Helper()                   {}
func (exampleTB) Fatal(args ...any)         { log.Fatal(args...) }
func (exampleTB) Fatalf(f string, a ...any) { log.Fatalf(f, a...) }
func (exampleTB) Cleanup(func())            {}

// exampleFixture stands in for interlock: a server publishing a JWKS and a
// status list, and a credential for acme.pay valid at fixedNow.
func exampleFixture() (issuer, token string, stop func()) {
	f := newFixture(exampleTB{})
	return f.issuer, f.token(f.claims(3)), f.srv.Close
}

// fixedNow is the example's clock.
func fixedNow() time.Time { return t0 }

func ExampleVerifier_Verify() {
	issuer, token, stop := exampleFixture()
	defer stop()
	ctx := context.Background()
	args := json.RawMessage(`{"amount": 120.5, "to": "acct-42", "memo": "é"}`)

	v, err := verify.New(verify.Options{Issuer: issuer, Now: fixedNow})
	if err != nil {
		log.Fatal(err)
	}
	cred, err := v.Verify(ctx, token, &verify.Call{Upstream: "acme", Tool: "pay", Arguments: args})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("agent %s (owner %s) may call %s.%s\n", cred.AgentID, cred.Owner, cred.Upstream, cred.Tool)

	// The same credential for other arguments is refused.
	_, err = v.Verify(ctx, token, &verify.Call{Upstream: "acme", Tool: "pay", Arguments: json.RawMessage(`{"amount": 9999}`)})
	fmt.Println(errors.Is(err, verify.ErrMismatch))
	// Output:
	// agent agent-7 (owner alice@example.com) may call acme.pay
	// true
}
