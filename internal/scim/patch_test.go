package scim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// rfcApply is a small generic RFC 7644 §3.5.2 PATCH applier over a JSON
// document, written independently of the package, for differential tests
// of the RFC forms (boolean active, lower-case ops, plain paths).
func rfcApply(doc map[string]any, ops []any) (map[string]any, error) {
	for _, o := range ops {
		op := o.(map[string]any)
		name := strings.ToLower(op["op"].(string))
		path, _ := op["path"].(string)
		if path == "" {
			if name == "remove" {
				return nil, fmt.Errorf("noTarget")
			}
			for k, v := range op["value"].(map[string]any) {
				if err := rfcAt(doc, name, k, v); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := rfcAt(doc, name, path, op["value"]); err != nil {
			return nil, err
		}
	}
	return doc, nil
}

var rfcPath = regexp.MustCompile(`^(\w+)(?:\[(\w+) eq "([^"]*)"\])?(?:\.(\w+))?$`)

// key finds a member by case-insensitive name (RFC 7643 §2.1).
func key(m map[string]any, name string) string {
	for k := range m {
		if strings.EqualFold(k, name) {
			return k
		}
	}
	return name
}

func rfcAt(doc map[string]any, op, path string, v any) error {
	p := rfcPath.FindStringSubmatch(path)
	if p == nil {
		return fmt.Errorf("invalidPath %q", path)
	}
	attr, fAttr, fVal, sub := key(doc, p[1]), p[2], p[3], p[4]
	cur, exists := doc[attr]
	if fAttr != "" { // attr[fAttr eq "fVal"](.sub)
		arr, _ := cur.([]any)
		var kept []any
		matched := false
		for _, el := range arr {
			m := el.(map[string]any)
			s, _ := m[key(m, fAttr)].(string)
			if !strings.EqualFold(s, fVal) {
				kept = append(kept, m)
				continue
			}
			matched = true
			switch {
			case op == "remove" && sub == "":
				continue // value removed
			case op == "remove":
				delete(m, key(m, sub))
			case sub == "":
				m = v.(map[string]any)
			default:
				m[key(m, sub)] = v
				if strings.EqualFold(sub, "primary") && v == true {
					clearOthers(arr, m)
				}
			}
			kept = append(kept, m)
		}
		if !matched && op == "replace" {
			return fmt.Errorf("noTarget")
		}
		if len(kept) == 0 {
			delete(doc, attr)
		} else {
			doc[attr] = kept
		}
		return nil
	}
	if sub != "" { // complex singular attribute
		m, _ := cur.(map[string]any)
		if op == "remove" {
			delete(m, key(m, sub))
			return nil
		}
		if m == nil {
			m = map[string]any{}
			doc[attr] = m
		}
		m[key(m, sub)] = v
		return nil
	}
	switch {
	case op == "remove":
		delete(doc, attr)
	case !exists:
		doc[attr] = v
	default:
		switch c := cur.(type) {
		case map[string]any: // complex: given sub-attributes replace, others stay
			for k, x := range v.(map[string]any) {
				c[key(c, k)] = x
			}
		case []any:
			if op == "replace" {
				doc[attr] = v
				return nil
			}
			for _, x := range v.([]any) {
				dup := false
				for _, y := range c {
					dup = dup || reflect.DeepEqual(x, y)
				}
				if !dup {
					c = append(c, x)
					if xm, ok := x.(map[string]any); ok && xm["primary"] == true {
						clearOthers(c, xm)
					}
				}
			}
			doc[attr] = c
		default:
			doc[attr] = v
		}
	}
	return nil
}

func clearOthers(arr []any, keep map[string]any) {
	for _, el := range arr {
		if m := el.(map[string]any); reflect.ValueOf(m).UnsafePointer() != reflect.ValueOf(keep).UnsafePointer() {
			if _, ok := m["primary"]; ok {
				m["primary"] = false
			}
		}
	}
}

// toDoc and fromDoc convert between User and its JSON document, written
// here rather than borrowed from the package.
func toDoc(u User) map[string]any {
	d := map[string]any{"userName": u.UserName, "active": u.Active}
	for k, v := range map[string]string{"externalId": u.ExternalID, "displayName": u.DisplayName} {
		if v != "" {
			d[k] = v
		}
	}
	name := map[string]any{}
	for k, v := range map[string]string{"givenName": u.GivenName, "familyName": u.FamilyName, "formatted": u.Formatted} {
		if v != "" {
			name[k] = v
		}
	}
	if len(name) > 0 {
		d["name"] = name
	}
	var emails, roles []any
	for _, e := range u.Emails {
		emails = append(emails, map[string]any{"value": e.Value, "type": e.Type, "primary": e.Primary})
	}
	for _, r := range u.Roles {
		roles = append(roles, map[string]any{"value": r})
	}
	if emails != nil {
		d["emails"] = emails
	}
	if roles != nil {
		d["roles"] = roles
	}
	return d
}

func fromDoc(d map[string]any) User {
	str := func(m map[string]any, k string) string { s, _ := m[key(m, k)].(string); return s }
	u := User{UserName: str(d, "userName"), ExternalID: str(d, "externalId"), DisplayName: str(d, "displayName")}
	u.Active, _ = d[key(d, "active")].(bool)
	if n, ok := d[key(d, "name")].(map[string]any); ok {
		u.GivenName, u.FamilyName, u.Formatted = str(n, "givenName"), str(n, "familyName"), str(n, "formatted")
	}
	es, _ := d[key(d, "emails")].([]any)
	for _, e := range es {
		m := e.(map[string]any)
		p, _ := m["primary"].(bool)
		u.Emails = append(u.Emails, Email{Value: str(m, "value"), Type: str(m, "type"), Primary: p})
	}
	rs, _ := d[key(d, "roles")].([]any)
	for _, r := range rs {
		u.Roles = append(u.Roles, str(r.(map[string]any), "value"))
	}
	return u
}

func normalize(u User) User {
	if len(u.Emails) == 0 {
		u.Emails = nil
	}
	if len(u.Roles) == 0 {
		u.Roles = nil
	}
	u.ID, u.Created, u.LastModified = "", u.Created.UTC(), u.LastModified.UTC()
	return u
}

func TestPatchMatchesRFCApplier(t *testing.T) {
	base := User{
		ID: "id-1", UserName: "alice@example.com", ExternalID: "ext-1", DisplayName: "Alice",
		GivenName: "Alice", FamilyName: "Liddell", Formatted: "Alice Liddell",
		Emails: []Email{{Value: "alice@example.com", Type: "work", Primary: true}, {Value: "al@home.example", Type: "home"}},
		Active: true, Roles: []string{"a", "b"},
	}
	for _, ops := range []string{
		`{"op":"replace","path":"active","value":false}`,
		`{"op":"add","path":"active","value":false}`,
		`{"op":"replace","value":{"active":false}}`,
		`{"op":"remove","path":"active"}`,
		`{"op":"replace","path":"active","value":false},{"op":"replace","path":"active","value":true}`,
		`{"op":"replace","path":"userName","value":"alice2@example.com"}`,
		`{"op":"replace","path":"displayName","value":"Al"}`,
		`{"op":"add","path":"displayName","value":"Al"}`,
		`{"op":"remove","path":"displayName"}`,
		`{"op":"remove","path":"externalId"}`,
		`{"op":"add","path":"externalId","value":"ext-2"}`,
		`{"op":"replace","path":"name.givenName","value":"Ally"}`,
		`{"op":"add","path":"name.familyName","value":"Smith"}`,
		`{"op":"remove","path":"name.givenName"}`,
		`{"op":"replace","path":"name","value":{"givenName":"Ally"}}`,
		`{"op":"add","path":"name","value":{"formatted":"A. L."}}`,
		`{"op":"remove","path":"name"}`,
		`{"op":"replace","path":"emails","value":[{"value":"new@example.com","type":"work","primary":true}]}`,
		`{"op":"add","path":"emails","value":[{"value":"other@example.com","type":"other","primary":false}]}`,
		`{"op":"add","path":"emails","value":[{"value":"other@example.com","type":"other","primary":true}]}`,
		`{"op":"replace","path":"emails[type eq \"work\"].value","value":"moved@example.com"}`,
		`{"op":"replace","path":"emails[type eq \"home\"].primary","value":true}`,
		`{"op":"replace","path":"emails[type eq \"work\"]","value":{"value":"w@example.com","type":"work","primary":true}}`,
		`{"op":"remove","path":"emails[type eq \"work\"]"}`,
		`{"op":"remove","path":"emails[value eq \"al@home.example\"]"}`,
		`{"op":"remove","path":"emails"}`,
		`{"op":"add","path":"roles","value":[{"value":"c"}]}`,
		`{"op":"add","path":"roles","value":[{"value":"a"}]}`,
		`{"op":"replace","path":"roles","value":[{"value":"z"}]}`,
		`{"op":"remove","path":"roles[value eq \"a\"]"}`,
		`{"op":"remove","path":"roles"}`,
		`{"op":"replace","value":{"displayName":"Al","externalId":"ext-9","name":{"familyName":"Smith"}}}`,
		`{"op":"add","value":{"emails":[{"value":"x@example.com","type":"x","primary":false}],"active":false}}`,
		`{"op":"replace","path":"displayName","value":"Al"},{"op":"replace","path":"active","value":false},{"op":"add","path":"roles","value":[{"value":"c"}]}`,
		`{"op":"replace","path":"UserName","value":"ALICE@example.com"},{"op":"Replace","path":"ACTIVE","value":false}`,
	} {
		t.Run(ops, func(t *testing.T) {
			body := `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[` + ops + `]}`
			got, err := applyPatch(base, []byte(body), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatalf("package: %v", err)
			}
			var msg map[string]any
			if err := json.Unmarshal([]byte(body), &msg); err != nil {
				t.Fatal(err)
			}
			doc, err := rfcApply(toDoc(base), msg["Operations"].([]any))
			if err != nil {
				t.Fatalf("RFC applier: %v", err)
			}
			want := fromDoc(doc)
			if g, w := normalize(got), normalize(want); !reflect.DeepEqual(g, w) {
				t.Errorf("package and RFC applier differ\npackage %+v\n    RFC %+v", g, w)
			}
			if got.ID != base.ID {
				t.Errorf("id changed")
			}
		})
	}
}

// Documented departures from the letter of the RFC.
func TestPatchLeniency(t *testing.T) {
	base := User{ID: "id-1", UserName: "bob", Active: true}
	log := slog.New(slog.DiscardHandler)
	for _, c := range []struct {
		ops  string
		want func(User) bool
	}{
		// Replace of a filtered value that is not there adds it (RFC:
		// noTarget), so a bundle that also deactivates cannot fail on it.
		{`{"op":"Replace","path":"emails[type eq \"work\"].value","value":"bob@example.com"},{"op":"Replace","path":"active","value":"False"}`,
			func(u User) bool {
				return !u.Active && reflect.DeepEqual(u.Emails, []Email{{Value: "bob@example.com", Type: "work"}})
			}},
		// A single object where an array belongs.
		{`{"op":"add","path":"emails","value":{"value":"b@example.com","primary":"True"}}`,
			func(u User) bool {
				return reflect.DeepEqual(u.Emails, []Email{{Value: "b@example.com", Primary: true}})
			}},
		// Roles as bare strings (seen from custom Okta apps).
		{`{"op":"add","path":"roles","value":["r1","r2"]}`, func(u User) bool { return reflect.DeepEqual(u.Roles, []string{"r1", "r2"}) }},
		// URN-qualified core paths and mixed-case op.
		{`{"op":"rEpLaCe","path":"urn:ietf:params:scim:schemas:core:2.0:User:active","value":"fAlSe"}`, func(u User) bool { return !u.Active }},
		// The whole enterprise extension object, path-less.
		{`{"op":"add","value":{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"x"},"active":false}}`,
			func(u User) bool { return !u.Active }},
	} {
		body := `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[` + c.ops + `]}`
		got, err := applyPatch(base, []byte(body), log)
		if err != nil || !c.want(got) {
			t.Errorf("%s: %+v, %v", c.ops, got, err)
		}
	}
}

// expectedActive is the fuzz oracle: reading the accepted body on its own,
// what must active end up as? ok is false when an accepted operation set
// active to something that is neither a boolean nor "true"/"false".
func expectedActive(t *testing.T, body []byte, start bool) (active, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var msg map[string]any
	if err := dec.Decode(&msg); err != nil {
		t.Fatalf("accepted a body that does not decode: %v", err)
	}
	member := func(m map[string]any, name string) (any, bool) {
		for k, v := range m {
			if strings.EqualFold(k, name) {
				return v, true
			}
		}
		return nil, false
	}
	isActive := func(path string) bool {
		path = strings.TrimSpace(path)
		if len(path) > len(schemaUser)+1 && strings.EqualFold(path[:len(schemaUser)+1], schemaUser+":") {
			path = path[len(schemaUser)+1:]
		}
		return strings.EqualFold(path, "active")
	}
	set := func(v any) bool {
		switch b := v.(type) {
		case bool:
			active = b
			return true
		case string:
			if strings.EqualFold(b, "true") || strings.EqualFold(b, "false") {
				active = strings.EqualFold(b, "true")
				return true
			}
		}
		return false
	}
	active = start
	opsv, _ := member(msg, "Operations")
	for _, o := range opsv.([]any) {
		om := o.(map[string]any)
		opv, _ := member(om, "op")
		op := strings.ToLower(opv.(string))
		pathv, _ := member(om, "path")
		path, _ := pathv.(string)
		value, _ := member(om, "value")
		if strings.TrimSpace(path) != "" {
			if isActive(path) {
				if op == "remove" {
					active = false
				} else if !set(value) {
					return false, false
				}
			}
			continue
		}
		obj := value.(map[string]any)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return strings.ToLower(keys[i]) < strings.ToLower(keys[j]) })
		for _, k := range keys {
			if isActive(k) && !set(obj[k]) {
				return false, false
			}
		}
	}
	return active, true
}

func FuzzPatch(f *testing.F) {
	for _, s := range []string{
		entraDisableLegacy, entraDisableFlag, entraDisableDoc, entraEnableLegacy, entraPathless, entraAttrs,
		entraUpdateMulti, entraUpdateSingle, oktaDeactivate, oktaReactivate, oktaPassword,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"remove","path":"active"}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":"maybe"}}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"emails[type eq \"work\" and primary eq true].value","value":"x@y"}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"remove","path":"roles","value":[{"value":"a"}]}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false,"urn:ietf:params:scim:schemas:core:2.0:User:active":"True"}}]}`,
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, body []byte, startActive bool) {
		base := User{ID: "id-1", UserName: "alice", Active: startActive, GivenName: "A",
			Emails: []Email{{Value: "a@example.com", Type: "work", Primary: true}}, Roles: []string{"a"}}
		got, err := applyPatch(base, body, log)
		if err != nil {
			var ae *apiError
			if !asAPIError(err, &ae) || ae.status != 400 || ae.scimType == "" {
				t.Fatalf("error is not a 400 SCIM error: %v", err)
			}
			return
		}
		want, ok := expectedActive(t, body, startActive)
		if !ok {
			t.Fatalf("accepted an undefined value for active: %s", body)
		}
		if got.Active != want {
			t.Fatalf("active = %v, the body says %v: %s", got.Active, want, body)
		}
		if got.ID != base.ID || got.UserName == "" {
			t.Fatalf("id or userName lost: %+v", got)
		}
		primaries := 0
		for _, e := range got.Emails {
			if e.Value == "" {
				t.Fatalf("email without value: %+v", got.Emails)
			}
			if e.Primary {
				primaries++
			}
		}
		if primaries > 1 {
			t.Fatalf("two primary emails: %+v", got.Emails)
		}
		if base.Emails[0] != (Email{Value: "a@example.com", Type: "work", Primary: true}) || base.Roles[0] != "a" {
			t.Fatalf("the input user was modified")
		}
	})
}

func asAPIError(err error, target **apiError) bool {
	ae, ok := err.(*apiError)
	*target = ae
	return ok
}
