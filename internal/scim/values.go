package scim

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"sort"
	"strings"
)

// readObject checks the media type, reads the body within the limit and
// decodes one JSON object.
func (h *handler) readObject(w http.ResponseWriter, r *http.Request) (map[string]any, error) {
	// A missing Content-Type is tolerated; a non-JSON one is not.
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != mediaType && mt != "application/json") {
			return nil, errorf(http.StatusUnsupportedMediaType, "", "Content-Type must be application/scim+json or application/json")
		}
	}
	if r.ContentLength > h.maxBody {
		return nil, errorf(http.StatusRequestEntityTooLarge, "", "the body exceeds %d bytes", h.maxBody)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errorf(http.StatusRequestEntityTooLarge, "", "the body exceeds %d bytes", h.maxBody)
		}
		return nil, &apiError{status: http.StatusBadRequest, scimType: invalidSyntax, detail: "the body could not be read", err: err}
	}
	return decodeObject(b)
}

// decodeObject decodes exactly one JSON object, numbers kept as
// json.Number so that a wrong type is reported rather than coerced.
func decodeObject(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, &apiError{status: http.StatusBadRequest, scimType: invalidSyntax, detail: "the body is not valid JSON", err: err}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badRequest(invalidSyntax, "the body has data after the JSON object")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, badRequest(invalidSyntax, "the body must be a JSON object")
	}
	return m, nil
}

// field is an object member under its original name.
type field struct {
	name string
	val  any
}

// foldKeys indexes an object's members by lower-cased name: SCIM attribute
// names are case-insensitive (RFC 7643 §2.1). Two members differing only in
// case are refused, since either reading would be a guess.
func foldKeys(m map[string]any) (map[string]field, error) {
	out := make(map[string]field, len(m))
	for k, v := range m {
		lk := strings.ToLower(k)
		if prev, dup := out[lk]; dup {
			return nil, badRequest(invalidSyntax, "members %s and %s differ only in case", q(prev.name), q(k))
		}
		out[lk] = field{name: k, val: v}
	}
	return out, nil
}

// sortedKeys returns the keys of a folded object in order, so that
// application and error reporting are deterministic.
func sortedKeys(fs map[string]field) []string {
	keys := make([]string, 0, len(fs))
	for k := range fs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return "an unsupported value"
}

// asString reads a string attribute; null means unassigned ("").
func asString(v any, attr string) (string, error) {
	switch s := v.(type) {
	case nil:
		return "", nil
	case string:
		return s, nil
	}
	return "", badRequest(invalidValue, "%s must be a string, not %s", attr, typeName(v))
}

// asBool reads a boolean attribute. Entra ID sends booleans as the strings
// "True" and "False"; those are accepted in any case. Anything else, null
// included, is refused: an unreadable "active" must never leave a user
// active.
func asBool(v any, attr string) (bool, error) {
	switch b := v.(type) {
	case bool:
		return b, nil
	case string:
		switch {
		case strings.EqualFold(b, "true"):
			return true, nil
		case strings.EqualFold(b, "false"):
			return false, nil
		}
		return false, badRequest(invalidValue, "%s must be true or false, not %s", attr, q(b))
	}
	return false, badRequest(invalidValue, "%s must be a boolean, not %s", attr, typeName(v))
}

// asArray reads a multi-valued attribute; null means none. lenient also
// takes a single value where an array belongs (PATCH values in the wild).
func asArray(v any, attr string, lenient bool) ([]any, error) {
	switch a := v.(type) {
	case nil:
		return nil, nil
	case []any:
		return a, nil
	}
	if lenient {
		return []any{v}, nil
	}
	return nil, badRequest(invalidValue, "%s must be an array, not %s", attr, typeName(v))
}

// Sub-attributes of emails and roles (RFC 7643 §2.4 multi-valued
// attributes), lower-cased.
var multiSubAttrs = map[string]bool{"value": true, "type": true, "primary": true, "display": true, "$ref": true}

// asEmail reads one value of "emails".
func asEmail(v any) (Email, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Email{}, badRequest(invalidValue, "an emails value must be an object, not %s", typeName(v))
	}
	fs, err := foldKeys(m)
	if err != nil {
		return Email{}, err
	}
	var e Email
	for _, k := range sortedKeys(fs) {
		f := fs[k]
		switch k {
		case "value":
			e.Value, err = asString(f.val, "emails.value")
		case "type":
			e.Type, err = asString(f.val, "emails.type")
		case "primary":
			if f.val != nil {
				e.Primary, err = asBool(f.val, "emails.primary")
			}
		case "display", "$ref":
			_, err = asString(f.val, "emails."+f.name)
		default:
			err = badRequest(invalidValue, "unknown sub-attribute emails.%s", f.name)
		}
		if err != nil {
			return Email{}, err
		}
	}
	if e.Value == "" {
		return Email{}, badRequest(invalidValue, "an emails value needs a value")
	}
	return e, nil
}

func asEmails(v any, lenient bool) ([]Email, error) {
	a, err := asArray(v, "emails", lenient)
	if err != nil {
		return nil, err
	}
	var out []Email
	for _, x := range a {
		e, err := asEmail(x)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, onePrimary(out)
}

func onePrimary(es []Email) error {
	n := 0
	for _, e := range es {
		if e.Primary {
			n++
		}
	}
	if n > 1 {
		return badRequest(invalidValue, "at most one email may be primary")
	}
	return nil
}

// asRole reads one value of "roles": an object with a "value" (Entra ID
// also sends type, display and a string "primary"), or a bare string.
func asRole(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case map[string]any:
		fs, err := foldKeys(x)
		if err != nil {
			return "", err
		}
		var val string
		for _, k := range sortedKeys(fs) {
			f := fs[k]
			switch {
			case k == "value":
				val, err = asString(f.val, "roles.value")
			case multiSubAttrs[k]:
				// Not kept.
			default:
				err = badRequest(invalidValue, "unknown sub-attribute roles.%s", f.name)
			}
			if err != nil {
				return "", err
			}
		}
		if val == "" {
			return "", badRequest(invalidValue, "a roles value needs a value")
		}
		return val, nil
	}
	return "", badRequest(invalidValue, "a roles value must be an object or a string, not %s", typeName(v))
}

func asRoles(v any, lenient bool) ([]string, error) {
	a, err := asArray(v, "roles", lenient)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, x := range a {
		r, err := asRole(x)
		if err != nil {
			return nil, err
		}
		out = appendRole(out, r)
	}
	return out, nil
}

func appendRole(rs []string, r string) []string {
	for _, x := range rs {
		if x == r {
			return rs
		}
	}
	return append(rs, r)
}

// setName merges the sub-attributes of a "name" object into u; sub-
// attributes not given are left alone (RFC 7644 §3.5.2.3 for complex
// attributes; for PUT the caller starts from an empty User).
func setName(u *User, v any) error {
	if v == nil {
		u.GivenName, u.FamilyName, u.Formatted = "", "", ""
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return badRequest(invalidValue, "name must be an object, not %s", typeName(v))
	}
	fs, err := foldKeys(m)
	if err != nil {
		return err
	}
	for _, k := range sortedKeys(fs) {
		if err := setNameSub(u, k, fs[k].name, fs[k].val, false); err != nil {
			return err
		}
	}
	return nil
}

// setNameSub sets (or with remove, clears) one sub-attribute of name.
func setNameSub(u *User, sub, orig string, v any, remove bool) error {
	var dst *string
	switch sub {
	case "givenname":
		dst = &u.GivenName
	case "familyname":
		dst = &u.FamilyName
	case "formatted":
		dst = &u.Formatted
	case "middlename", "honorificprefix", "honorificsuffix":
		if remove {
			return nil
		}
		_, err := asString(v, "name."+orig) // known, not kept
		return err
	default:
		return badRequest(invalidPath, "unknown sub-attribute name.%s", orig)
	}
	if remove {
		*dst = ""
		return nil
	}
	s, err := asString(v, "name."+orig)
	if err == nil {
		*dst = s
	}
	return err
}

// ignoredAttrs are RFC 7643 §4.1 User attributes interlock does not keep,
// lower-cased, with whether they are multi-valued. They are accepted (the
// identity providers' default mappings send several of them) and dropped.
var ignoredAttrs = map[string]bool{
	"nickname": false, "profileurl": false, "title": false, "usertype": false,
	"preferredlanguage": false, "locale": false, "timezone": false, "password": false,
	"phonenumbers": true, "ims": true, "photos": true, "addresses": true,
	"entitlements": true, "x509certificates": true,
}

// readOnlyAttrs cannot be written by a client (RFC 7643 §3.1, §4.1.2).
var readOnlyAttrs = map[string]bool{"id": true, "meta": true, "groups": true}

func cloneUser(u User) User {
	u.Emails = append([]Email(nil), u.Emails...)
	u.Roles = append([]string(nil), u.Roles...)
	return u
}
