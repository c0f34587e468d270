package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/testenv"
)

// A notification sent through one store (replica) reaches the subscribers
// of another on the same schema, on the right topic only, and not those of
// a store on another schema.
func TestChangesAcrossReplicas(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	schema := newSchema(t, dsn)
	a, b := openSchema(t, dsn, schema), openSchema(t, dsn, schema)
	other := openSchema(t, dsn, newSchema(t, dsn))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	got := make(chan string, 16)
	a.Subscribe(ctx, store.TopicApprovals, func(id string) { got <- "approvals:" + id })
	a.Subscribe(ctx, store.TopicPrincipals, func(id string) { got <- "principals:" + id })
	strange := make(chan string, 16)
	other.Subscribe(ctx, store.TopicApprovals, func(id string) { strange <- id })

	// LISTEN takes effect asynchronously: notify until the first arrives.
	deadline := time.Now().Add(30 * time.Second)
	for first := ""; first == ""; {
		if time.Now().After(deadline) {
			t.Fatal("no notification arrived")
		}
		if err := b.Notify(ctx, store.TopicApprovals, "apr_warmup"); err != nil {
			t.Fatal(err)
		}
		select {
		case first = <-got:
		case <-time.After(100 * time.Millisecond):
		}
	}
	for len(got) > 0 {
		<-got
	}
	if err := b.Notify(ctx, store.TopicPrincipals, "agent-7"); err != nil {
		t.Fatal(err)
	}
	if err := b.Notify(ctx, store.TopicApprovals, "apr_1"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"principals:agent-7", "approvals:apr_1"} {
		select {
		case g := <-got:
			if g != want {
				t.Errorf("got %q, want %q", g, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not arrive", want)
		}
	}
	select {
	case id := <-strange:
		t.Errorf("a store on another schema heard %q", id)
	default:
	}
}

// A change to a user, agent or token (a generation bump) on one replica is
// announced to the others' principal caches in the same transaction.
func TestPrincipalChangesAnnounced(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	schema := newSchema(t, dsn)
	a, b := openSchema(t, dsn, schema), openSchema(t, dsn, schema)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 64)
	a.Subscribe(ctx, store.TopicPrincipals, func(id string) { got <- id })
	now := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no notification for a user change")
		}
		u := store.User{ID: fmt.Sprintf("u%d", i), Email: fmt.Sprintf("u%d@example.com", i), Active: true, Source: "local", CreatedAt: now, UpdatedAt: now}
		if err := b.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
