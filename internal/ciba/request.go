package ciba

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// DetailsType is the RFC 9396 authorization details type of the one
// action an authentication request asks for.
const DetailsType = "interlock_tool_call"

// Limits of a backchannel authentication request.
const (
	maxBody              = 64 << 10 // the whole form-encoded body
	maxBindingMessage    = 200      // runes
	maxNotificationToken = 1024
	maxLoginHint         = 254 // an email address
	maxJSONDepth         = 32
	maxNameLen           = 128
)

// ToolCall is the action asked for: a tools/call of Tool on Upstream with
// Arguments (a JSON object, compact).
type ToolCall struct {
	Upstream  string
	Tool      string
	Arguments json.RawMessage
}

// Request is a validated backchannel authentication request (CIBA §7.1)
// without its client authentication.
type Request struct {
	Scope                   []string
	LoginHint               string
	BindingMessage          string
	RequestedExpiry         time.Duration // 0: not given
	ClientNotificationToken string
	Call                    ToolCall
	// Details is the authorization_details to echo in the token response:
	// the one object, re-encoded with the arguments as received (compact).
	Details json.RawMessage
}

// Error is an OAuth error response: error code, description and HTTP
// status.
type Error struct {
	Status      int
	Code        string
	Description string
	challenge   bool // add WWW-Authenticate: Basic (invalid_client after Basic auth)
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

func errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Description: fmt.Sprintf(format, args...)}
}

func invalidRequest(format string, args ...any) *Error {
	return errorf(400, "invalid_request", format, args...)
}

func invalidDetails(format string, args ...any) *Error {
	return errorf(400, "invalid_authorization_details", format, args...)
}

// clientAuthParams are the parameters of client authentication, which
// the client authentication step reads (not ParseRequest).
var clientAuthParams = map[string]bool{
	"client_id": true, "client_secret": true, "client_assertion": true, "client_assertion_type": true,
}

// ParseRequest validates the parameters of a backchannel authentication
// request (the form, already decoded). It never panics; a nil *Error
// means every field of the returned Request is well-formed.
//
// Choices where CIBA leaves room (docs/ciba.md):
//   - scope must contain openid and nothing else;
//   - login_hint (an approver's email) is the only hint supported, and it
//     is optional: without it the approvers the policy rule names are
//     asked. id_token_hint and login_hint_token are invalid_request;
//   - signed requests (request) and user_code are not supported;
//   - authorization_details is required: a JSON array of exactly one
//     object of type interlock_tool_call with upstream, tool and
//     (optionally) arguments, and no other member;
//   - every parameter may appear once; unknown parameters are ignored.
func ParseRequest(form url.Values) (*Request, *Error) {
	for k, v := range form {
		if len(v) > 1 {
			return nil, invalidRequest("parameter %s is repeated", k)
		}
	}
	get := func(k string) (string, bool) {
		v, ok := form[k]
		if !ok {
			return "", false
		}
		return v[0], true
	}
	r := &Request{}

	scope, ok := get("scope")
	if !ok || strings.TrimSpace(scope) == "" {
		return nil, invalidRequest("scope is required and must contain openid")
	}
	hasOpenID := false
	for _, s := range strings.Fields(scope) {
		if s != "openid" {
			return nil, errorf(400, "invalid_scope", "unsupported scope %s: the only scope is openid (the action goes in authorization_details)", quote(s))
		}
		hasOpenID = true
		r.Scope = []string{"openid"}
	}
	if !hasOpenID {
		return nil, invalidRequest("scope must contain openid")
	}

	if _, ok := get("request"); ok {
		return nil, invalidRequest("signed authentication requests (request) are not supported")
	}
	if _, ok := get("request_uri"); ok {
		return nil, invalidRequest("request_uri is not supported")
	}
	if _, ok := get("user_code"); ok {
		return nil, invalidRequest("user_code is not supported")
	}
	hints := 0
	for _, h := range []string{"login_hint", "id_token_hint", "login_hint_token"} {
		if _, ok := get(h); ok {
			hints++
		}
	}
	if hints > 1 {
		return nil, invalidRequest("give at most one of login_hint, id_token_hint and login_hint_token")
	}
	if _, ok := get("id_token_hint"); ok {
		return nil, invalidRequest("id_token_hint is not supported: name the approver with login_hint (an email)")
	}
	if _, ok := get("login_hint_token"); ok {
		return nil, invalidRequest("login_hint_token is not supported: name the approver with login_hint (an email)")
	}
	if h, ok := get("login_hint"); ok {
		h = strings.TrimSpace(h)
		if !validEmail(h) {
			return nil, errorf(400, "unknown_user_id", "login_hint must be an approver's email address")
		}
		r.LoginHint = strings.ToLower(h)
	}

	if m, ok := get("binding_message"); ok {
		if err := checkBindingMessage(m); err != "" {
			return nil, errorf(400, "invalid_binding_message", "%s", err)
		}
		r.BindingMessage = m
	}

	if e, ok := get("requested_expiry"); ok {
		n, err := strconv.ParseInt(e, 10, 64)
		if err != nil || n < 1 || n > 86400 || strings.HasPrefix(e, "+") {
			return nil, invalidRequest("requested_expiry must be a positive number of seconds, at most 86400")
		}
		r.RequestedExpiry = time.Duration(n) * time.Second
	}

	if t, ok := get("client_notification_token"); ok {
		if t == "" || len(t) > maxNotificationToken || !b64token(t) {
			return nil, invalidRequest("client_notification_token must be 1 to 1024 characters of bearer token syntax (RFC 6750)")
		}
		r.ClientNotificationToken = t
	}

	raw, ok := get("authorization_details")
	if !ok || strings.TrimSpace(raw) == "" {
		return nil, invalidRequest("authorization_details is required: one object of type %s naming upstream, tool and arguments", DetailsType)
	}
	call, details, derr := parseDetails([]byte(raw))
	if derr != nil {
		return nil, derr
	}
	r.Call, r.Details = call, details
	return r, nil
}

// parseDetails validates authorization_details strictly.
func parseDetails(raw []byte) (ToolCall, json.RawMessage, *Error) {
	if err := checkJSON(raw); err != nil {
		return ToolCall{}, nil, invalidDetails("authorization_details is not valid JSON: %v", err)
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return ToolCall{}, nil, invalidDetails("authorization_details must be a JSON array")
	}
	if len(list) != 1 {
		return ToolCall{}, nil, invalidDetails("authorization_details must hold exactly one object (it has %d)", len(list))
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(list[0], &obj); err != nil || obj == nil {
		return ToolCall{}, nil, invalidDetails("authorization_details[0] must be a JSON object")
	}
	var typ string
	if err := json.Unmarshal(obj["type"], &typ); err != nil || typ != DetailsType {
		return ToolCall{}, nil, invalidDetails("authorization_details[0].type must be %s", DetailsType)
	}
	for k := range obj {
		switch k {
		case "type", "upstream", "tool", "arguments":
		default:
			return ToolCall{}, nil, invalidDetails("authorization_details[0] has an unknown member %s (allowed: type, upstream, tool, arguments)", quote(k))
		}
	}
	var c ToolCall
	if err := json.Unmarshal(obj["upstream"], &c.Upstream); err != nil || !validName(c.Upstream) {
		return ToolCall{}, nil, invalidDetails("authorization_details[0].upstream must be an upstream name (1 to %d of A-Z a-z 0-9 _ -)", maxNameLen)
	}
	if err := json.Unmarshal(obj["tool"], &c.Tool); err != nil || !validTool(c.Tool) {
		return ToolCall{}, nil, invalidDetails("authorization_details[0].tool must be a tool name (1 to %d of A-Z a-z 0-9 _ - . /)", maxNameLen)
	}
	args, ok := obj["arguments"]
	if !ok {
		args = json.RawMessage("{}")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(args, &m); err != nil || m == nil {
		return ToolCall{}, nil, invalidDetails("authorization_details[0].arguments must be a JSON object")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, args); err != nil {
		return ToolCall{}, nil, invalidDetails("authorization_details[0].arguments: %v", err)
	}
	c.Arguments = json.RawMessage(buf.Bytes())
	details, err := json.Marshal([]any{map[string]any{"type": DetailsType, "upstream": c.Upstream, "tool": c.Tool, "arguments": c.Arguments}})
	if err != nil {
		return ToolCall{}, nil, invalidDetails("authorization_details: %v", err)
	}
	return c, details, nil
}

// checkJSON reads raw as one JSON value and refuses duplicate object
// keys (whose meaning differs between parsers), nesting deeper than
// maxJSONDepth and trailing data.
func checkJSON(raw []byte) error {
	if !utf8.Valid(raw) {
		return errors.New("not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	type frame struct {
		obj    bool
		keys   map[string]bool
		expKey bool
	}
	var stack []*frame
	values := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.obj && top.expKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			k, _ := tok.(string)
			if top.keys[k] {
				return fmt.Errorf("duplicate key %s", quote(k))
			}
			top.keys[k] = true
			top.expKey = false
			continue
		}
		if len(stack) == 0 {
			values++
			if values > 1 {
				return errors.New("more than one value")
			}
		}
		switch d := tok.(type) {
		case json.Delim:
			switch d {
			case '{', '[':
				if len(stack) >= maxJSONDepth {
					return fmt.Errorf("nested deeper than %d", maxJSONDepth)
				}
				if top != nil && top.obj {
					top.expKey = true
				}
				stack = append(stack, &frame{obj: d == '{', keys: map[string]bool{}, expKey: d == '{'})
			case ']':
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].obj {
					stack[len(stack)-1].expKey = true
				}
			case '}':
				// handled above (an object closes when a key is expected)
				return errors.New("unexpected }")
			}
		default:
			if top != nil && top.obj {
				top.expKey = true
			}
		}
	}
	if len(stack) != 0 || values != 1 {
		return errors.New("incomplete")
	}
	return nil
}

// checkBindingMessage returns why m is not an acceptable binding message
// ("" when it is): 1 to maxBindingMessage printable characters on one
// line.
func checkBindingMessage(m string) string {
	if !utf8.ValidString(m) {
		return "binding_message must be UTF-8"
	}
	n := utf8.RuneCountInString(m)
	if n == 0 || strings.TrimSpace(m) == "" {
		return "binding_message must not be empty"
	}
	if n > maxBindingMessage {
		return fmt.Sprintf("binding_message is longer than %d characters", maxBindingMessage)
	}
	for _, c := range m {
		if !unicode.IsPrint(c) && c != ' ' {
			return "binding_message must be printable characters on one line"
		}
	}
	return ""
}

// b64token is RFC 6750 §2.1's token syntax.
func b64token(s string) bool {
	i := len(s)
	for i > 0 && s[i-1] == '=' {
		i--
	}
	if i == 0 {
		return false
	}
	for _, c := range []byte(s[:i]) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/", c) >= 0) {
			return false
		}
	}
	return true
}

func validName(s string) bool {
	if s == "" || len(s) > maxNameLen {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validTool(s string) bool {
	if s == "" || len(s) > maxNameLen {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("_-./", c) >= 0) {
			return false
		}
	}
	return true
}

// validEmail is a plain check: local@domain, printable ASCII, no spaces.
func validEmail(s string) bool {
	if len(s) < 3 || len(s) > maxLoginHint {
		return false
	}
	at := strings.LastIndexByte(s, '@')
	if at < 1 || at == len(s)-1 {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == ',' {
			return false
		}
	}
	return true
}

// quote quotes s for an error_description (whose charset excludes " and
// \), truncated.
func quote(s string) string {
	if len(s) > 60 {
		s = s[:60] + "..."
	}
	return "'" + s + "'"
}

// descriptionSafe maps s to the error_description charset (%x20-21 /
// %x23-5B / %x5D-7E): other characters become '?', quotes become '.
func descriptionSafe(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch {
		case c == '"':
			b.WriteByte('\'')
		case c == '\\':
			b.WriteByte('/')
		case c >= 0x20 && c <= 0x7e:
			b.WriteRune(c)
		default:
			b.WriteByte('?')
		}
	}
	out := b.String()
	if len(out) > 500 {
		out = out[:497] + "..."
	}
	return out
}
