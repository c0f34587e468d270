package ciba

import (
	"encoding/json"
	"net/url"
	"slices"
	"testing"
	"unicode/utf8"
)

// FuzzBackchannelRequest: the parser never panics, and every request it
// accepts is well-formed.
func FuzzBackchannelRequest(f *testing.F) {
	good := `[{"type":"interlock_tool_call","upstream":"acme","tool":"place_order","arguments":{"item":"x","quantity":2}}]`
	for _, s := range []string{
		"scope=openid&authorization_details=" + url.QueryEscape(good),
		"scope=openid&login_hint=a%40b.c&binding_message=Order+42&requested_expiry=60&client_notification_token=abc&authorization_details=" + url.QueryEscape(good),
		"scope=openid&authorization_details=%5B%7B%22type%22%3A%22interlock_tool_call%22%2C%22upstream%22%3A%22a%22%2C%22tool%22%3A%22t%22%2C%22arguments%22%3A%7B%22a%22%3A%7B%22b%22%3A%5B1%2C%7B%7D%5D%7D%7D%7D%5D",
		"scope=openid&authorization_details=[{\"type\":\"interlock_tool_call\",\"upstream\":\"a\",\"tool\":\"t\",\"arguments\":{\"a\":1,\"a\":2}}]",
		"scope=openid+profile&authorization_details=[]",
		"scope=openid&login_hint=x&id_token_hint=y",
		"authorization_details=[{}]&scope=openid&requested_expiry=-1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		r, e := ParseRequest(form)
		if e != nil {
			if r != nil || e.Code == "" || e.Status != 400 {
				t.Fatalf("error %+v with request %+v", e, r)
			}
			return
		}
		if !slices.Equal(r.Scope, []string{"openid"}) {
			t.Fatalf("scope %v", r.Scope)
		}
		if !validName(r.Call.Upstream) || !validTool(r.Call.Tool) {
			t.Fatalf("call %+v", r.Call)
		}
		var args map[string]any
		if err := json.Unmarshal(r.Call.Arguments, &args); err != nil || args == nil {
			t.Fatalf("arguments %s: %v", r.Call.Arguments, err)
		}
		if err := checkJSON(r.Call.Arguments); err != nil {
			t.Fatalf("arguments %s: %v", r.Call.Arguments, err)
		}
		var det []map[string]json.RawMessage
		if err := json.Unmarshal(r.Details, &det); err != nil || len(det) != 1 || string(det[0]["type"]) != `"interlock_tool_call"` {
			t.Fatalf("details %s", r.Details)
		}
		if r.LoginHint != "" && !validEmail(r.LoginHint) {
			t.Fatalf("login hint %q", r.LoginHint)
		}
		if r.BindingMessage != "" && (checkBindingMessage(r.BindingMessage) != "" || !utf8.ValidString(r.BindingMessage)) {
			t.Fatalf("binding message %q", r.BindingMessage)
		}
		if r.RequestedExpiry < 0 {
			t.Fatalf("expiry %v", r.RequestedExpiry)
		}
		if r.ClientNotificationToken != "" && !b64token(r.ClientNotificationToken) {
			t.Fatalf("token %q", r.ClientNotificationToken)
		}
		if d := descriptionSafe(body); !utf8.ValidString(d) {
			t.Fatal("description not UTF-8")
		}
	})
}
