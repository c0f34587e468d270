package storetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// ---- web push subscriptions ----

func newPush(id, userID string, created time.Time) store.PushSubscription {
	return store.PushSubscription{
		ID: "push-" + id, UserID: userID, Endpoint: "https://push.example.com/wpush/v2/" + id,
		P256dh:    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
		Auth:      "BTBZMqHH6r4Tts7J_aSIgg-" + id,
		UserAgent: "Mozilla/5.0 (Android 15; Mobile) " + id,
		CreatedAt: created,
	}
}

func checkPush(t *testing.T, got, want store.PushSubscription) {
	t.Helper()
	g, w := got, want
	g.CreatedAt, w.CreatedAt = time.Time{}, time.Time{}
	if g != w {
		t.Errorf("push subscription:\n got %+v\nwant %+v", got, want)
	}
	checkTime(t, want.ID+" CreatedAt", got.CreatedAt, want.CreatedAt)
}

func testPushSubscriptions(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	if err := s.CreateUser(ctx, newUser("u2", "b@example.com")); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	gen, err := s.Generation(ctx)
	if err != nil {
		t.Fatalf("Generation: %v", err)
	}
	p1 := newPush("1", "u1", t0.Add(time.Minute))
	p2 := newPush("2", "u1", t0)
	p2.UserAgent = "" // optional
	p3 := newPush("3", "u2", time.Time{})
	for _, p := range []store.PushSubscription{p1, p2, p3} {
		if err := s.SavePushSubscription(ctx, p); err != nil {
			t.Fatalf("SavePushSubscription(%s): %v", p.ID, err)
		}
	}
	list := func(user string) []store.PushSubscription {
		t.Helper()
		ps, err := s.ListPushSubscriptions(ctx, user)
		if err != nil {
			t.Fatalf("ListPushSubscriptions(%s): %v", user, err)
		}
		return ps
	}
	listIDs := func(user string) []string {
		t.Helper()
		return ids(list(user), func(p store.PushSubscription) string { return p.ID })
	}
	got := list("u1")
	if len(got) != 2 {
		t.Fatalf("ListPushSubscriptions(u1) = %v, want 2", ids(got, func(p store.PushSubscription) string { return p.ID }))
	}
	checkPush(t, got[0], p2) // creation order
	checkPush(t, got[1], p1)
	if got := list("u2"); len(got) != 1 {
		t.Fatalf("ListPushSubscriptions(u2) = %d subscriptions, want 1", len(got))
	} else {
		checkPush(t, got[0], p3)
	}
	for _, u := range []string{"nope", "", "bad\x00\xff"} {
		if got := list(u); len(got) != 0 {
			t.Errorf("ListPushSubscriptions(%q) = %v, want none", u, got)
		}
	}

	mod := func(id string, edit func(*store.PushSubscription)) store.PushSubscription {
		p := newPush(id, "u1", t0)
		edit(&p)
		return p
	}
	for _, tc := range []struct {
		name string
		p    store.PushSubscription
		want error
	}{
		{"unknown user", mod("4", func(p *store.PushSubscription) { p.UserID = "nope" }), store.ErrInvalid},
		{"empty user", mod("5", func(p *store.PushSubscription) { p.UserID = "" }), store.ErrInvalid},
		{"empty id", mod("6", func(p *store.PushSubscription) { p.ID = "" }), store.ErrInvalid},
		{"empty endpoint", mod("7", func(p *store.PushSubscription) { p.Endpoint = "" }), store.ErrInvalid},
		{"empty p256dh", mod("8", func(p *store.PushSubscription) { p.P256dh = "" }), store.ErrInvalid},
		{"empty auth", mod("9", func(p *store.PushSubscription) { p.Auth = "" }), store.ErrInvalid},
		{"long endpoint", mod("10", func(p *store.PushSubscription) {
			p.Endpoint += strings.Repeat("x", store.MaxPushEndpointLen)
		}), store.ErrInvalid},
		{"long p256dh", mod("11", func(p *store.PushSubscription) { p.P256dh = strings.Repeat("B", store.MaxPushKeyLen+1) }), store.ErrInvalid},
		{"long auth", mod("12", func(p *store.PushSubscription) { p.Auth = strings.Repeat("A", store.MaxPushKeyLen+1) }), store.ErrInvalid},
		{"long user agent", mod("13", func(p *store.PushSubscription) {
			p.UserAgent = strings.Repeat("u", store.MaxPushUserAgentLen+1)
		}), store.ErrInvalid},
		{"NUL in endpoint", mod("14", func(p *store.PushSubscription) { p.Endpoint += "\x00" }), store.ErrInvalid},
		{"invalid UTF-8 in user agent", mod("15", func(p *store.PushSubscription) { p.UserAgent = "\xff" }), store.ErrInvalid},
		{"another endpoint's id", mod("16", func(p *store.PushSubscription) { p.ID = p1.ID }), store.ErrAlreadyExists},
	} {
		wantErr(t, "SavePushSubscription "+tc.name, s.SavePushSubscription(ctx, tc.p), tc.want)
	}
	if got, want := listIDs("u1"), []string{p2.ID, p1.ID}; !slices.Equal(got, want) {
		t.Errorf("after refused saves ListPushSubscriptions(u1) = %v, want %v", got, want)
	}
	// At the limits.
	long := mod("17", func(p *store.PushSubscription) {
		p.Endpoint += strings.Repeat("é", (store.MaxPushEndpointLen-len(p.Endpoint))/2)
		p.UserAgent = strings.Repeat("u", store.MaxPushUserAgentLen)
		p.P256dh = strings.Repeat("B", store.MaxPushKeyLen)
		p.CreatedAt = t0.Add(time.Hour)
	})
	if err := s.SavePushSubscription(ctx, long); err != nil {
		t.Fatalf("SavePushSubscription at the limits: %v", err)
	}
	if got := list("u1"); len(got) != 3 {
		t.Fatalf("ListPushSubscriptions(u1) = %d subscriptions, want 3", len(got))
	} else {
		checkPush(t, got[2], long)
	}

	// A browser subscribing again (same endpoint) replaces its
	// subscription: new keys, new id, even another user.
	again := newPush("1", "u2", t0.Add(2*time.Hour))
	again.ID, again.P256dh, again.Auth, again.UserAgent = "push-1b", "BNewKey", "newauth", "Firefox"
	if err := s.SavePushSubscription(ctx, again); err != nil {
		t.Fatalf("SavePushSubscription again: %v", err)
	}
	if got, want := listIDs("u1"), []string{p2.ID, long.ID}; !slices.Equal(got, want) {
		t.Errorf("after re-subscription ListPushSubscriptions(u1) = %v, want %v", got, want)
	}
	if got := list("u2"); len(got) != 2 {
		t.Fatalf("ListPushSubscriptions(u2) = %d subscriptions, want 2", len(got))
	} else {
		checkPush(t, got[0], p3)
		checkPush(t, got[1], again)
	}
	// The replaced subscription's id is free again.
	p18 := newPush("18", "u1", t0)
	p18.ID = p1.ID
	if err := s.SavePushSubscription(ctx, p18); err != nil {
		t.Errorf("SavePushSubscription with a replaced subscription's id: %v", err)
	}

	if err := s.DeletePushSubscription(ctx, again.Endpoint); err != nil {
		t.Fatalf("DeletePushSubscription: %v", err)
	}
	if got, want := listIDs("u2"), []string{p3.ID}; !slices.Equal(got, want) {
		t.Errorf("after delete ListPushSubscriptions(u2) = %v, want %v", got, want)
	}
	for _, e := range []string{again.Endpoint, "https://push.example.com/nope", "", "bad\x00\xff"} {
		wantErr(t, fmt.Sprintf("DeletePushSubscription(%q)", e), s.DeletePushSubscription(ctx, e), store.ErrNotFound)
	}

	if g, err := s.Generation(ctx); err != nil || g != gen {
		t.Errorf("Generation = %d, %v; want %d (push subscriptions do not bump it)", g, err, gen)
	}
}
