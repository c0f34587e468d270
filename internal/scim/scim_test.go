package scim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// memDir is the in-memory Directory of the tests. It records the
// deactivations ReplaceUser would cascade.
type memDir struct {
	mu          sync.Mutex
	users       map[string]User
	order       []string
	deactivated []string
}

func newMemDir() *memDir { return &memDir{users: map[string]User{}} }

func (d *memDir) taken(userName, except string) bool {
	for id, u := range d.users {
		if id != except && strings.EqualFold(u.UserName, userName) {
			return true
		}
	}
	return false
}

func (d *memDir) CreateUser(_ context.Context, u User) (User, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.taken(u.UserName, "") {
		return User{}, ErrConflict
	}
	d.users[u.ID] = u
	d.order = append(d.order, u.ID)
	return u, nil
}

func (d *memDir) GetUser(_ context.Context, id string) (User, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	u, ok := d.users[id]
	if !ok {
		return User{}, ErrNotFound
	}
	return u, nil
}

func (d *memDir) ListUsers(_ context.Context, f Filter, startIndex, count int) ([]User, int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var all []User
	for _, id := range d.order {
		u, ok := d.users[id]
		if !ok {
			continue
		}
		match := false
		switch f.Attr {
		case "":
			match = true
		case "userName":
			match = strings.EqualFold(u.UserName, f.Value)
		case "externalId":
			match = u.ExternalID == f.Value
		case "emails.value":
			for _, e := range u.Emails {
				match = match || strings.EqualFold(e.Value, f.Value)
			}
		default:
			return nil, 0, fmt.Errorf("memDir: unexpected filter %q", f.Attr)
		}
		if match {
			all = append(all, u)
		}
	}
	lo := min(startIndex-1, len(all))
	hi := min(lo+count, len(all))
	return all[lo:hi], len(all), nil
}

func (d *memDir) ReplaceUser(_ context.Context, u User) (User, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old, ok := d.users[u.ID]
	if !ok {
		return User{}, ErrNotFound
	}
	if d.taken(u.UserName, u.ID) {
		return User{}, ErrConflict
	}
	if old.Active && !u.Active {
		d.deactivated = append(d.deactivated, u.ID)
	}
	d.users[u.ID] = u
	return u, nil
}

func (d *memDir) DeleteUser(_ context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.users[id]; !ok {
		return ErrNotFound
	}
	delete(d.users, id)
	return nil
}

const testToken = "tok-3f9a8c1d-secret"

var testNow = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

type fixture struct {
	dir  *memDir
	h    http.Handler
	logs *bytes.Buffer
}

func newFixture(t *testing.T, mod ...func(*Options)) *fixture {
	t.Helper()
	f := &fixture{dir: newMemDir(), logs: &bytes.Buffer{}}
	opts := Options{
		Directory: f.dir,
		Token:     testToken,
		BaseURL:   "https://gw.example.com/scim/v2",
		Logger:    slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:       func() time.Time { return testNow },
	}
	for _, m := range mod {
		m(&opts)
	}
	f.h = New(opts)
	t.Cleanup(func() {
		if strings.Contains(f.logs.String(), testToken) {
			t.Errorf("the bearer token was logged:\n%s", f.logs)
		}
	})
	return f
}

// seed stores the user the IdP bodies below refer to.
func (f *fixture) seed(active bool) User {
	u := User{
		ID: "5171a35d82074e068ce2", ExternalID: "aa1eca08-7179-4eeb-a0be-a519f7e5cd1a",
		UserName:  "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee",
		GivenName: "givenName", FamilyName: "familyName", Formatted: "givenName familyName",
		Emails: []Email{{Value: "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com", Type: "work", Primary: true}},
		Active: active, Roles: []string{"a", "b"},
		Created: testNow.Add(-time.Hour), LastModified: testNow.Add(-time.Hour),
	}
	f.dir.users[u.ID] = u
	f.dir.order = append(f.dir.order, u.ID)
	return u
}

func (f *fixture) user(t *testing.T, id string) User {
	t.Helper()
	u, err := f.dir.GetUser(context.Background(), id)
	if err != nil {
		t.Fatalf("GetUser(%s): %v", id, err)
	}
	return u
}

type reqOpt func(*http.Request)

func header(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

func (f *fixture) do(t *testing.T, method, target, body string, opts ...reqOpt) *httptest.ResponseRecorder {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	r.Header.Set("Authorization", "Bearer "+testToken)
	if body != "" {
		r.Header.Set("Content-Type", "application/scim+json")
	}
	for _, o := range opts {
		o(r)
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, r)
	return rec
}

func jsonBody(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if rec.Body.Len() == 0 {
		return nil
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/scim+json" {
		t.Errorf("Content-Type %q", ct)
	}
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("response is not JSON: %v\n%s", err, rec.Body)
	}
	return m
}

// checkUserResource checks the shape every returned User has.
func checkUserResource(t *testing.T, m map[string]any) {
	t.Helper()
	if !reflect.DeepEqual(m["schemas"], []any{schemaUser}) {
		t.Errorf("schemas = %v", m["schemas"])
	}
	if id, _ := m["id"].(string); id == "" {
		t.Errorf("no id in %v", m)
	}
	if _, ok := m["active"].(bool); !ok {
		t.Errorf("active is not a boolean: %#v", m["active"])
	}
	meta, _ := m["meta"].(map[string]any)
	if meta["resourceType"] != "User" || meta["created"] == nil || meta["lastModified"] == nil ||
		meta["location"] != "https://gw.example.com/scim/v2/Users/"+url.PathEscape(m["id"].(string)) {
		t.Errorf("meta = %v", meta)
	}
	for k, v := range m {
		if v == nil {
			t.Errorf("%s is null; absent values are left out", k)
		}
	}
}

func checkError(t *testing.T, rec *httptest.ResponseRecorder, status int, scimType string) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d: %s", rec.Code, status, rec.Body)
	}
	m := jsonBody(t, rec)
	if !reflect.DeepEqual(m["schemas"], []any{schemaError}) || m["status"] != fmt.Sprint(status) {
		t.Errorf("not an RFC 7644 §3.12 error: %s", rec.Body)
	}
	if got, _ := m["scimType"].(string); got != scimType {
		t.Errorf("scimType %q, want %q (%s)", got, scimType, rec.Body)
	}
	if d, _ := m["detail"].(string); d == "" {
		t.Errorf("no detail: %s", rec.Body)
	}
}

// Bodies exactly as Microsoft documents Entra ID sending them
// (MicrosoftDocs/entra-docs use-scim-to-provision-users-and-groups.md) and
// as standards.md §4.2 lists the feature-flag variants.
const (
	entraCreate = `{
    "schemas": [
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
    "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
    "userName": "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee",
    "active": true,
    "emails": [{
        "primary": true,
        "type": "work",
        "value": "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com"
    }],
    "meta": {
        "resourceType": "User"
    },
    "name": {
        "formatted": "givenName familyName",
        "familyName": "familyName",
        "givenName": "givenName"
    },
    "roles": []
}`
	entraUpdateMulti = `{
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [
            {
            "op": "Replace",
            "path": "emails[type eq \"work\"].value",
            "value": "updatedEmail@microsoft.com"
            },
            {
            "op": "Replace",
            "path": "name.familyName",
            "value": "updatedFamilyName"
            }
    ]
}`
	entraUpdateSingle = `{
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [{
        "op": "Replace",
        "path": "userName",
        "value": "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"
    }]
}`
	entraDisableDoc = `{
    "Operations": [
        {
            "op": "Replace",
            "path": "active",
            "value": false
        }
    ],
    "schemas": [
        "urn:ietf:params:scim:api:messages:2.0:PatchOp"
    ]
}`
	entraDisableLegacy = `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}`
	entraDisableFlag   = `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}`
	entraEnableLegacy  = `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"True"}]}`
	entraPathless      = `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{
		"displayName":"Larry Harris","name.givenName":"Larry","name.familyName":"Harris",
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber":"701984",
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department":"Finance"}}]}`
	entraAttrs = `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
		{"op":"Add","path":"displayName","value":"Larry Harris"},
		{"op":"Add","path":"name.givenName","value":"Larry"},
		{"op":"Replace","path":"externalId","value":"ext-2"},
		{"op":"Add","path":"title","value":"Accountant"},
		{"op":"Add","path":"phoneNumbers[type eq \"work\"].value","value":"+1 555 0100"},
		{"op":"Add","path":"addresses[type eq \"work\"].country","value":"ML"},
		{"op":"Add","path":"roles","value":[{"primary":"True","type":"WindowsAzureActiveDirectoryRole","value":"Admin"}]},
		{"op":"Add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":{"value":"m-1"}},
		{"op":"Replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department","value":"Finance"}]}`

	// Okta, as documented in okta-developer-docs scim-20/index.md.
	oktaCreate = `{
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
    "userName": "test.user@okta.local",
    "name": {
        "givenName": "Test",
        "familyName": "User"
    },
    "emails": [{
        "primary": true,
        "value": "test.user@okta.local",
        "type": "work"
    }],
    "displayName": "Test User",
    "locale": "en-US",
    "externalId": "00ujl29u0le5T6Aj10h7",
    "groups": [],
    "password": "1mz050nq",
    "active": true
}`
	oktaPut = `{
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
    "id": "%s",
    "userName": "test.user@okta.local",
    "name": {
        "givenName": "Another",
        "middleName": "Excited",
        "familyName": "User"
    },
    "emails": [{
        "primary": true,
        "value": "test.user@okta.local",
        "type": "work",
        "display": "test.user@okta.local"
    }],
    "active": %s,
    "groups": [],
    "meta": {
        "resourceType": "User"
    }
}`
	oktaDeactivate = `{
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [{
        "op": "replace",
        "value": {
            "active": false
        }
    }]
}`
	oktaReactivate = `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":true}}]}`
	oktaPassword   = `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"password":"pw-9d1f7e-never-logged"}}]}`
)

func TestEntraLifecycle(t *testing.T) {
	f := newFixture(t)
	// Test Connection: a random userName, expecting an empty ListResponse.
	rec := f.do(t, "GET", "/scim/v2/Users?filter="+url.QueryEscape(`userName eq "2f1b7bb6-0a5e-4e7b-9c35-1d1f0c1f3a44"`), "")
	m := jsonBody(t, rec)
	if rec.Code != 200 || m["totalResults"] != 0.0 || !reflect.DeepEqual(m["Resources"], []any{}) ||
		m["startIndex"] != 1.0 || m["itemsPerPage"] != 0.0 || !reflect.DeepEqual(m["schemas"], []any{schemaListResponse}) {
		t.Fatalf("empty query: %d %s", rec.Code, rec.Body)
	}

	rec = f.do(t, "POST", "/scim/v2/Users", entraCreate)
	if rec.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	m = jsonBody(t, rec)
	checkUserResource(t, m)
	id := m["id"].(string)
	if rec.Header().Get("Location") != m["meta"].(map[string]any)["location"] {
		t.Errorf("Location %q", rec.Header().Get("Location"))
	}
	want := User{ID: id, ExternalID: "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef", UserName: "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee",
		GivenName: "givenName", FamilyName: "familyName", Formatted: "givenName familyName",
		Emails: []Email{{Value: "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com", Type: "work", Primary: true}},
		Active: true, Created: testNow, LastModified: testNow}
	if got := f.user(t, id); !reflect.DeepEqual(got, want) {
		t.Fatalf("created\n got %+v\nwant %+v", got, want)
	}

	// Lookups as Entra sends them; userName is case-insensitive.
	for _, flt := range []string{
		`userName eq "test_user_00AA00aa-bb11-cc22-dd33-44ee44ee44ee"`,
		`emails[type eq "work"].value eq "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com"`,
		`externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"`,
		`emails[value eq "test_user_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com"]`,
		`userName eq "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee" and externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"`,
		`id eq "` + id + `"`,
	} {
		rec = f.do(t, "GET", "/scim/v2/Users?filter="+url.QueryEscape(flt), "")
		m = jsonBody(t, rec)
		res, _ := m["Resources"].([]any)
		if rec.Code != 200 || m["totalResults"] != 1.0 || len(res) != 1 {
			t.Fatalf("filter %s: %d %s", flt, rec.Code, rec.Body)
		}
		checkUserResource(t, res[0].(map[string]any))
	}
	for _, flt := range []string{
		`emails[type eq "home"].value eq "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com"`,
		`externalId eq "0A21F0F2-8d2a-4f8e-bf98-7363c4aed4ef"`, // caseExact
		`userName eq "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee" and externalId eq "other"`,
	} {
		rec = f.do(t, "GET", "/scim/v2/Users?filter="+url.QueryEscape(flt), "")
		if m = jsonBody(t, rec); rec.Code != 200 || m["totalResults"] != 0.0 {
			t.Fatalf("filter %s: %d %s", flt, rec.Code, rec.Body)
		}
	}

	rec = f.do(t, "GET", "/scim/v2/Users/"+id, "")
	checkUserResource(t, jsonBody(t, rec))

	steps := []struct {
		name, body string
		check      func(User) string
	}{
		{"update multi-valued", entraUpdateMulti, func(u User) string {
			if u.FamilyName != "updatedFamilyName" || len(u.Emails) != 1 || u.Emails[0] != (Email{"updatedEmail@microsoft.com", "work", true}) {
				return "not updated"
			}
			return ""
		}},
		{"update single-valued", entraUpdateSingle, func(u User) string {
			if u.UserName != "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com" {
				return "userName not updated"
			}
			return ""
		}},
		{"disable, legacy string False", entraDisableLegacy, inactive},
		{"enable, legacy string True", entraEnableLegacy, active},
		{"disable, aadOptscim062020", entraDisableFlag, inactive},
		{"enable, lower-case true", strings.Replace(entraEnableLegacy, "True", "true", 1), active},
		{"disable, documented body", entraDisableDoc, inactive},
		{"enable, upper-case TRUE", strings.Replace(entraEnableLegacy, "True", "TRUE", 1), active},
		{"path-less, dotted and URN keys", entraPathless, func(u User) string {
			if u.DisplayName != "Larry Harris" || u.GivenName != "Larry" || u.FamilyName != "Harris" || !u.Active {
				return "not updated"
			}
			return ""
		}},
		{"attributes kept and not kept", entraAttrs, func(u User) string {
			if u.ExternalID != "ext-2" || !reflect.DeepEqual(u.Roles, []string{"Admin"}) || u.DisplayName != "Larry Harris" {
				return "not updated"
			}
			return ""
		}},
		{"disable, string FALSE", strings.Replace(entraDisableLegacy, "False", "FALSE", 1), inactive},
	}
	for _, s := range steps {
		rec := f.do(t, "PATCH", "/scim/v2/Users/"+id, s.body)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", s.name, rec.Code, rec.Body)
		}
		m := jsonBody(t, rec)
		checkUserResource(t, m)
		u := f.user(t, id)
		if msg := s.check(u); msg != "" {
			t.Fatalf("%s: %s: %+v", s.name, msg, u)
		}
		if m["active"] != u.Active {
			t.Errorf("%s: response active %v, stored %v", s.name, m["active"], u.Active)
		}
		if !u.LastModified.Equal(testNow) || !u.Created.Equal(testNow) {
			t.Errorf("%s: timestamps %v %v", s.name, u.Created, u.LastModified)
		}
	}
	if len(f.dir.deactivated) != 4 {
		t.Errorf("deactivations %v, want 4", f.dir.deactivated)
	}

	rec = f.do(t, "DELETE", "/scim/v2/Users/"+id, "")
	if rec.Code != http.StatusNoContent || rec.Body.Len() != 0 {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	checkError(t, f.do(t, "GET", "/scim/v2/Users/"+id, ""), 404, "")
	checkError(t, f.do(t, "DELETE", "/scim/v2/Users/"+id, ""), 404, "")
}

func inactive(u User) string {
	if u.Active {
		return "still active"
	}
	return ""
}

func active(u User) string {
	if !u.Active {
		return "not active"
	}
	return ""
}

func TestOktaLifecycle(t *testing.T) {
	f := newFixture(t)
	rec := f.do(t, "GET", "/scim/v2/Users?filter=userName%20eq%20%22test.user%40okta.local%22&startIndex=1&count=100", "",
		header("User-Agent", "Okta SCIM Client 1.0.0"))
	if m := jsonBody(t, rec); rec.Code != 200 || m["totalResults"] != 0.0 || m["itemsPerPage"] != 0.0 || m["startIndex"] != 1.0 {
		t.Fatalf("existence check: %d %s", rec.Code, rec.Body)
	}
	// Okta sends application/json.
	rec = f.do(t, "POST", "/scim/v2/Users", oktaCreate, header("Content-Type", "application/json; charset=utf-8"))
	if rec.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	m := jsonBody(t, rec)
	checkUserResource(t, m)
	id := m["id"].(string)
	want := User{ID: id, ExternalID: "00ujl29u0le5T6Aj10h7", UserName: "test.user@okta.local", GivenName: "Test", FamilyName: "User",
		DisplayName: "Test User", Emails: []Email{{Value: "test.user@okta.local", Type: "work", Primary: true}}, Active: true,
		Created: testNow, LastModified: testNow}
	if got := f.user(t, id); !reflect.DeepEqual(got, want) {
		t.Fatalf("created\n got %+v\nwant %+v", got, want)
	}
	checkError(t, f.do(t, "POST", "/scim/v2/Users", strings.Replace(oktaCreate, "test.user@", "TEST.user@", 1)), 409, "uniqueness")

	rec = f.do(t, "GET", "/scim/v2/Users?filter=userName%20eq%20%22test.user%40okta.local%22&startIndex=1&count=100", "")
	if m := jsonBody(t, rec); m["totalResults"] != 1.0 {
		t.Fatalf("existence check after create: %s", rec.Body)
	}

	steps := []struct {
		name, method, body string
		check              func(User) string
	}{
		{"PUT update", "PUT", fmt.Sprintf(oktaPut, id, "true"), func(u User) string {
			if u.GivenName != "Another" || u.DisplayName != "" || u.ExternalID != "" || !u.Active {
				return "not replaced"
			}
			return ""
		}},
		{"PATCH deactivate", "PATCH", oktaDeactivate, inactive},
		{"PATCH reactivate", "PATCH", oktaReactivate, active},
		{"PATCH password sync", "PATCH", oktaPassword, active},
		{"AIW PUT deactivate", "PUT", fmt.Sprintf(oktaPut, id, "false"), inactive},
		{"AIW PUT without active keeps it", "PUT", strings.Replace(fmt.Sprintf(oktaPut, id, "true"), `"active": true,`, "", 1), inactive},
		{"AIW PUT reactivate", "PUT", fmt.Sprintf(oktaPut, id, "true"), active},
		{"PATCH deactivate again", "PATCH", oktaDeactivate, inactive},
		{"PATCH deactivate is idempotent", "PATCH", oktaDeactivate, inactive},
	}
	for _, s := range steps {
		rec := f.do(t, s.method, "/scim/v2/Users/"+id, s.body)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", s.name, rec.Code, rec.Body)
		}
		m := jsonBody(t, rec)
		checkUserResource(t, m)
		u := f.user(t, id)
		if msg := s.check(u); msg != "" {
			t.Fatalf("%s: %s: %+v", s.name, msg, u)
		}
		if m["active"] != u.Active || u.ID != id || !u.Created.Equal(testNow) {
			t.Errorf("%s: response %v, stored %+v", s.name, m["active"], u)
		}
	}
	if len(f.dir.deactivated) != 3 {
		t.Errorf("deactivations %v, want 3", f.dir.deactivated)
	}
	if strings.Contains(f.logs.String(), "pw-9d1f7e") || strings.Contains(f.logs.String(), "1mz050nq") {
		t.Errorf("a password was logged:\n%s", f.logs)
	}
}

func TestPagination(t *testing.T) {
	f := newFixture(t)
	for i := range 5 {
		body := strings.Replace(oktaCreate, "test.user@okta.local\",\n    \"name", fmt.Sprintf("u%d@okta.local\",\n    \"name", i), 1)
		if rec := f.do(t, "POST", "/scim/v2/Users", body); rec.Code != 201 {
			t.Fatalf("create %d: %s", i, rec.Body)
		}
	}
	for _, c := range []struct {
		query             string
		total, start, per int
	}{
		{"startIndex=1&count=2", 5, 1, 2},
		{"startIndex=5&count=2", 5, 5, 1},
		{"startIndex=0&count=100", 5, 1, 5},
		{"startIndex=9&count=2", 5, 9, 0},
		{"count=0", 5, 1, 0},
		{"count=-3", 5, 1, 0},
		{"", 5, 1, 5},
		{"count=100000", 5, 1, 5},
	} {
		rec := f.do(t, "GET", "/scim/v2/Users?"+c.query, "")
		m := jsonBody(t, rec)
		if rec.Code != 200 || m["totalResults"] != float64(c.total) || m["startIndex"] != float64(c.start) ||
			m["itemsPerPage"] != float64(c.per) || len(m["Resources"].([]any)) != c.per {
			t.Errorf("%s: %d %s", c.query, rec.Code, rec.Body)
		}
	}
}

func TestBadInput(t *testing.T) {
	patch := func(ops string) string {
		return `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[` + ops + `]}`
	}
	id := "5171a35d82074e068ce2"
	for _, c := range []struct {
		name, method, target, body string
		opts                       []reqOpt
		status                     int
		scimType                   string
	}{
		{"malformed JSON", "POST", "/Users", `{"schemas":`, nil, 400, invalidSyntax},
		{"trailing data", "POST", "/Users", entraCreate + `{}`, nil, 400, invalidSyntax},
		{"array body", "PATCH", "/Users/" + id, `[]`, nil, 400, invalidSyntax},
		{"unknown schema", "POST", "/Users", strings.Replace(oktaCreate, `"urn:ietf:params:scim:schemas:core:2.0:User"]`, `"urn:ietf:params:scim:schemas:core:2.0:User","urn:example:custom"]`, 1), nil, 400, invalidSyntax},
		{"Group schema", "POST", "/Users", strings.Replace(oktaCreate, `core:2.0:User"]`, `core:2.0:Group"]`, 1), nil, 400, invalidSyntax},
		{"no schemas", "POST", "/Users", `{"userName":"x"}`, nil, 400, invalidSyntax},
		{"unknown attribute", "POST", "/Users", strings.Replace(oktaCreate, `"locale"`, `"shoeSize"`, 1), nil, 400, invalidSyntax},
		{"unknown name sub-attribute", "POST", "/Users", strings.Replace(oktaCreate, `"givenName": "Test"`, `"nick": "Test"`, 1), nil, 400, invalidPath},
		{"userName a number", "POST", "/Users", strings.Replace(oktaCreate, `"test.user@okta.local",
    "name"`, `5, "name"`, 1), nil, 400, invalidValue},
		{"no userName", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"active":true}`, nil, 400, invalidValue},
		{"active maybe", "POST", "/Users", strings.Replace(oktaCreate, `"active": true`, `"active": "maybe"`, 1), nil, 400, invalidValue},
		{"active null", "PUT", "/Users/" + id, strings.Replace(oktaCreate, `"active": true`, `"active": null`, 1), nil, 400, invalidValue},
		{"active 0", "PUT", "/Users/" + id, strings.Replace(oktaCreate, `"active": true`, `"active": 0`, 1), nil, 400, invalidValue},
		{"emails an object", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x","emails":{"value":"a@b"}}`, nil, 400, invalidValue},
		{"two primary emails", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x","emails":[{"value":"a@b","primary":true},{"value":"c@d","primary":"True"}]}`, nil, 400, invalidValue},
		{"name a string", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x","name":"x y"}`, nil, 400, invalidValue},
		{"keys differing in case", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x","active":true,"Active":false}`, nil, 400, invalidSyntax},
		{"PATCH active maybe", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"active","value":"maybe"}`), nil, 400, invalidValue},
		{"PATCH active 0", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"active","value":0}`), nil, 400, invalidValue},
		{"PATCH active null", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"active","value":null}`), nil, 400, invalidValue},
		{"PATCH active yes", "PATCH", "/Users/" + id, patch(`{"op":"Replace","path":"active","value":"yes"}`), nil, 400, invalidValue},
		{"PATCH active object", "PATCH", "/Users/" + id, patch(`{"op":"replace","value":{"active":{"value":false}}}`), nil, 400, invalidValue},
		{"PATCH path-less active maybe", "PATCH", "/Users/" + id, patch(`{"op":"replace","value":{"active":"maybe"}}`), nil, 400, invalidValue},
		{"PATCH path-less active null", "PATCH", "/Users/" + id, patch(`{"op":"replace","value":{"active":null}}`), nil, 400, invalidValue},
		{"PATCH active with spaces", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"active","value":" false"}`), nil, 400, invalidValue},
		{"PATCH unknown attribute", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"shoeSize","value":"9"}`), nil, 400, invalidPath},
		{"PATCH path-less unknown attribute", "PATCH", "/Users/" + id, patch(`{"op":"replace","value":{"shoeSize":"9"}}`), nil, 400, invalidPath},
		{"PATCH unknown schema path", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"urn:example:ext:2.0:User:x","value":"9"}`), nil, 400, invalidPath},
		{"PATCH malformed path", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"emails[type eq \"work\".value","value":"x"}`), nil, 400, invalidPath},
		{"PATCH sub-attribute of active", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"active.value","value":false}`), nil, 400, invalidPath},
		{"PATCH bad value filter", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"emails[type co \"work\"].value","value":"x"}`), nil, 400, invalidFilter},
		{"PATCH unknown op", "PATCH", "/Users/" + id, patch(`{"op":"merge","path":"active","value":false}`), nil, 400, invalidSyntax},
		{"PATCH no op", "PATCH", "/Users/" + id, patch(`{"path":"active","value":false}`), nil, 400, invalidSyntax},
		{"PATCH replace without value", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"active"}`), nil, 400, invalidSyntax},
		{"PATCH remove without path", "PATCH", "/Users/" + id, patch(`{"op":"remove","value":{"active":true}}`), nil, 400, noTarget},
		{"PATCH id", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"id","value":"x"}`), nil, 400, mutability},
		{"PATCH path-less other id", "PATCH", "/Users/" + id, patch(`{"op":"replace","value":{"id":"x","active":false}}`), nil, 400, mutability},
		{"PATCH meta.created", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"meta.created","value":"x"}`), nil, 400, mutability},
		{"PATCH remove userName", "PATCH", "/Users/" + id, patch(`{"op":"remove","path":"userName"}`), nil, 400, invalidValue},
		{"PATCH userName a number", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"userName","value":5}`), nil, 400, invalidValue},
		{"PATCH path-less a string", "PATCH", "/Users/" + id, patch(`{"op":"replace","value":"false"}`), nil, 400, invalidValue},
		{"PATCH empty Operations", "PATCH", "/Users/" + id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[]}`, nil, 400, invalidSyntax},
		{"PATCH User schema", "PATCH", "/Users/" + id, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"Operations":[{"op":"replace","path":"active","value":false}]}`, nil, 400, invalidSyntax},
		{"PATCH unknown member", "PATCH", "/Users/" + id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}],"x":1}`, nil, 400, invalidSyntax},
		{"PATCH unknown user", "PATCH", "/Users/nope", entraDisableFlag, nil, 404, ""},
		{"PUT unknown user", "PUT", "/Users/nope", oktaCreate, nil, 404, ""},
		{"huge body", "POST", "/Users", `{"schemas":["` + strings.Repeat("x", 2<<20) + `"]}`, nil, 413, ""},
		{"huge chunked body", "PATCH", "/Users/" + id, `{"x":"` + strings.Repeat("x", 2<<20) + `"}`, []reqOpt{func(r *http.Request) { r.ContentLength = -1 }}, 413, ""},
		{"filter co", "GET", "/Users?filter=" + url.QueryEscape(`userName co "x"`), "", nil, 400, invalidFilter},
		{"filter or", "GET", "/Users?filter=" + url.QueryEscape(`userName eq "x" or userName eq "y"`), "", nil, 400, invalidFilter},
		{"filter unquoted", "GET", "/Users?filter=" + url.QueryEscape(`userName eq x`), "", nil, 400, invalidFilter},
		{"filter unterminated", "GET", "/Users?filter=" + url.QueryEscape(`userName eq "x`), "", nil, 400, invalidFilter},
		{"filter other attribute", "GET", "/Users?filter=" + url.QueryEscape(`title eq "x"`), "", nil, 400, invalidFilter},
		{"filter not", "GET", "/Users?filter=" + url.QueryEscape(`not (userName eq "x")`), "", nil, 400, invalidFilter},
		{"filter dangling and", "GET", "/Users?filter=" + url.QueryEscape(`userName eq "x" and`), "", nil, 400, invalidFilter},
		{"filter emails without value", "GET", "/Users?filter=" + url.QueryEscape(`emails[type eq "work"]`), "", nil, 400, invalidFilter},
		{"startIndex not a number", "GET", "/Users?startIndex=one", "", nil, 400, invalidValue},
		{"text/plain", "POST", "/Users", oktaCreate, []reqOpt{header("Content-Type", "text/plain")}, 415, ""},
		{"form", "PATCH", "/Users/" + id, entraDisableFlag, []reqOpt{header("Content-Type", "application/x-www-form-urlencoded")}, 415, ""},
		{"method", "DELETE", "/Users", "", nil, 405, ""},
		{"Groups", "GET", "/Groups", "", nil, 501, ""},
		{"unknown endpoint", "GET", "/Things", "", nil, 404, ""},
		{"unknown schema id", "GET", "/Schemas/urn:example", "", nil, 404, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			before := f.seed(true)
			rec := f.do(t, c.method, "/scim/v2"+c.target, c.body, c.opts...)
			checkError(t, rec, c.status, c.scimType)
			if after := f.user(t, id); !reflect.DeepEqual(after, before) {
				t.Errorf("the user changed on a refused request: %+v", after)
			}
			if c.status == 405 && rec.Header().Get("Allow") == "" {
				t.Errorf("405 without Allow")
			}
		})
	}
}

func TestAuth(t *testing.T) {
	for _, c := range []struct {
		name, token, auth, wantChallenge string
	}{
		{"no header", testToken, "", `Bearer realm="scim"`},
		{"wrong token", testToken, "Bearer " + testToken + "x", `Bearer realm="scim", error="invalid_token"`},
		{"prefix of the token", testToken, "Bearer " + testToken[:5], `Bearer realm="scim", error="invalid_token"`},
		{"basic", testToken, "Basic " + testToken, `Bearer realm="scim", error="invalid_token"`},
		{"bearer without token", testToken, "Bearer ", `Bearer realm="scim", error="invalid_token"`},
		{"no token configured", "", "Bearer ", `Bearer realm="scim", error="invalid_token"`},
		{"no token configured, no header", "", "", `Bearer realm="scim"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, func(o *Options) { o.Token = c.token })
			f.seed(true)
			for _, target := range []string{"/scim/v2/Users", "/scim/v2/ServiceProviderConfig", "/scim/v2/Nope"} {
				r := httptest.NewRequest("GET", target, nil)
				if c.auth != "" {
					r.Header.Set("Authorization", c.auth)
				}
				rec := httptest.NewRecorder()
				f.h.ServeHTTP(rec, r)
				checkError(t, rec, 401, "")
				if got := rec.Header().Get("WWW-Authenticate"); got != c.wantChallenge {
					t.Errorf("WWW-Authenticate %q, want %q", got, c.wantChallenge)
				}
			}
			rec := f.do(t, "PATCH", "/scim/v2/Users/5171a35d82074e068ce2", entraDisableFlag, header("Authorization", c.auth))
			checkError(t, rec, 401, "")
			if !f.user(t, "5171a35d82074e068ce2").Active {
				t.Error("an unauthenticated PATCH deactivated")
			}
		})
	}
	f := newFixture(t)
	if rec := f.do(t, "GET", "/scim/v2/Users", "", header("Authorization", "bearer "+testToken)); rec.Code != 200 {
		t.Errorf("lower-case scheme: %d", rec.Code)
	}
}

func TestMounting(t *testing.T) {
	f := newFixture(t)
	f.seed(true)
	mux := http.NewServeMux()
	mux.Handle("/scim/v2/", f.h)
	mux.Handle("/stripped/", http.StripPrefix("/stripped", f.h))
	for _, target := range []string{"/scim/v2/Users/5171a35d82074e068ce2", "/stripped/Users/5171a35d82074e068ce2", "/scim/v2/Users/5171a35d82074e068ce2/"} {
		r := httptest.NewRequest("GET", target, nil)
		r.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, r)
		if rec.Code != 200 {
			t.Errorf("%s: %d %s", target, rec.Code, rec.Body)
		}
	}
	// An id with a slash, escaped.
	f.dir.users["a/b"] = User{ID: "a/b", UserName: "slash", Active: true}
	if rec := f.do(t, "GET", "/scim/v2/Users/a%2Fb", ""); rec.Code != 200 {
		t.Errorf("escaped id: %d %s", rec.Code, rec.Body)
	}
}

func TestDiscovery(t *testing.T) {
	f := newFixture(t)
	rec := f.do(t, "GET", "/scim/v2/ServiceProviderConfig", "")
	m := jsonBody(t, rec)
	get := func(k string) any { return m[k].(map[string]any)["supported"] }
	if rec.Code != 200 || get("patch") != true || get("filter") != true || get("bulk") != false || get("changePassword") != false ||
		get("sort") != false || get("etag") != false || m["filter"].(map[string]any)["maxResults"] != float64(maxResults) {
		t.Errorf("ServiceProviderConfig: %s", rec.Body)
	}
	if as := m["authenticationSchemes"].([]any); len(as) != 1 || as[0].(map[string]any)["type"] != "oauthbearertoken" {
		t.Errorf("authenticationSchemes: %v", m["authenticationSchemes"])
	}
	rec = f.do(t, "GET", "/scim/v2/Schemas", "")
	m = jsonBody(t, rec)
	res := m["Resources"].([]any)
	if rec.Code != 200 || m["totalResults"] != 1.0 || res[0].(map[string]any)["id"] != schemaUser {
		t.Errorf("Schemas: %s", rec.Body)
	}
	var names []string
	for _, a := range res[0].(map[string]any)["attributes"].([]any) {
		names = append(names, a.(map[string]any)["name"].(string))
	}
	sort.Strings(names)
	if !reflect.DeepEqual(names, []string{"active", "displayName", "emails", "name", "roles", "userName"}) {
		t.Errorf("schema attributes %v", names)
	}
	if rec = f.do(t, "GET", "/scim/v2/Schemas/"+schemaUser, ""); rec.Code != 200 {
		t.Errorf("Schemas/User: %d", rec.Code)
	}
	rec = f.do(t, "GET", "/scim/v2/ResourceTypes", "")
	m = jsonBody(t, rec)
	rt := m["Resources"].([]any)[0].(map[string]any)
	if rt["endpoint"] != "/Users" || rt["schema"] != schemaUser {
		t.Errorf("ResourceTypes: %s", rec.Body)
	}
	if rec = f.do(t, "GET", "/scim/v2/ResourceTypes/User", ""); rec.Code != 200 {
		t.Errorf("ResourceTypes/User: %d", rec.Code)
	}
}
