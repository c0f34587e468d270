package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// JSON-RPC error codes used by the relay.
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
	codeMethodNotFound = -32601
	codeInvalidParams  = -32602
	codeInternalError  = -32603
	// codeUpstreamError is implementation-defined (-32000..-32019 are free for
	// servers): the upstream failed or went away while the call was in flight.
	codeUpstreamError = -32001
)

// message is one JSON-RPC message as the relay sees it. Raw holds the exact
// bytes received; the decoded fields are only what routing needs, so nothing
// the relay does not model is lost when the message is forwarded as Raw.
type message struct {
	Raw    json.RawMessage
	ID     json.RawMessage // nil for notifications
	Method string          // "" for responses
	Params json.RawMessage
	// HasResult/HasError mark a response.
	HasResult bool
	HasError  bool
	// credential is the action credential a gated request is forwarded
	// with (also in Params._meta); HTTP legs send it as a header.
	credential string
}

func (m *message) isRequest() bool      { return m.Method != "" && m.ID != nil }
func (m *message) isNotification() bool { return m.Method != "" && m.ID == nil }
func (m *message) isResponse() bool     { return m.Method == "" && m.ID != nil }

// envelope is the decoding target for one message. Result and Error are
// decoded as raw values only to learn whether they are present.
type envelope struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

var errNotJSONRPC = errors.New("not a JSON-RPC 2.0 message")

// envelopeKeys are the members of a message the relay reads; paramKeys
// and metaKeys those of a gated request's params and of their _meta that
// interlock reads. Each must appear at most once, and not beside another
// spelling of itself (see checkMembers).
var (
	envelopeKeys = []string{"jsonrpc", "id", "method", "params", "result", "error"}
	paramKeys    = []string{"name", "uri", "arguments", "_meta"}
	metaKeys     = []string{MetaCredential, "io.interlock/intent", "progressToken"}
)

// parseMessage decodes one JSON-RPC message. It keeps raw (not a copy).
func parseMessage(raw []byte) (message, error) {
	var e envelope
	if err := json.Unmarshal(raw, &e); err != nil {
		return message{}, fmt.Errorf("%w: %v", errNotJSONRPC, err)
	}
	if e.JSONRPC != "2.0" {
		return message{}, fmt.Errorf("%w: jsonrpc must be \"2.0\"", errNotJSONRPC)
	}
	if _, err := checkMembers(raw, envelopeKeys...); err != nil {
		return message{}, fmt.Errorf("%w: %w", errNotJSONRPC, err)
	}
	if isJSONNull(e.ID) {
		// MCP forbids null ids; a null id is only legal on an error response
		// to an unreadable request.
		if e.Error == nil {
			return message{}, fmt.Errorf("%w: id must not be null", errNotJSONRPC)
		}
	}
	m := message{Raw: raw, ID: e.ID, Method: e.Method, Params: e.Params,
		HasResult: e.Result != nil, HasError: e.Error != nil}
	switch {
	case m.Method != "" && (m.HasResult || m.HasError):
		return message{}, fmt.Errorf("%w: a message cannot have both method and result/error", errNotJSONRPC)
	case m.Method == "" && m.ID == nil:
		return message{}, fmt.Errorf("%w: neither method nor id", errNotJSONRPC)
	case m.Method == "" && !m.HasResult && !m.HasError:
		return message{}, fmt.Errorf("%w: a response needs result or error", errNotJSONRPC)
	}
	if m.ID != nil && !isJSONNull(m.ID) {
		switch m.ID[0] {
		case '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		default:
			return message{}, fmt.Errorf("%w: id must be a string or a number", errNotJSONRPC)
		}
	}
	return m, nil
}

// parseBody decodes an HTTP body holding one message or a batch (2025-03-26).
func parseBody(body []byte) (msgs []message, batch bool, err error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, false, fmt.Errorf("%w: empty body", errNotJSONRPC)
	}
	if trimmed[0] != '[' {
		m, err := parseMessage(body)
		if err != nil {
			return nil, false, err
		}
		return []message{m}, false, nil
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(trimmed, &raws); err != nil {
		return nil, true, fmt.Errorf("%w: %v", errNotJSONRPC, err)
	}
	if len(raws) == 0 {
		return nil, true, fmt.Errorf("%w: empty batch", errNotJSONRPC)
	}
	msgs = make([]message, 0, len(raws))
	for i, raw := range raws {
		m, err := parseMessage(raw)
		if err != nil {
			return nil, true, fmt.Errorf("batch element %d: %w", i, err)
		}
		msgs = append(msgs, m)
	}
	return msgs, true, nil
}

// responseID returns the id of a JSON-RPC response, or nil for anything
// else. It decodes only what it needs (a relay of responses calls it often).
func responseID(data []byte) json.RawMessage {
	if open, err := wholeObject(data); err == nil {
		if sp, err := findExact(data, open, "id", "method"); err == nil {
			id, method := sp[0], sp[1]
			switch {
			case method.found && string(data[method.vs:method.ve]) != `""`:
				return nil // a request or notification (or not JSON-RPC)
			case !id.found || isJSONNull(data[id.vs:id.ve]):
				return nil
			}
			return data[id.vs:id.ve]
		}
	}
	return decodedResponseID(data)
}

// decodedResponseID is responseID by decoding: for keys in other cases,
// duplicates and malformed input, read as encoding/json reads them.
func decodedResponseID(data []byte) json.RawMessage {
	var e struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	if json.Unmarshal(data, &e) != nil || e.Method != "" || isJSONNull(e.ID) {
		return nil
	}
	return e.ID
}

func isJSONNull(b json.RawMessage) bool {
	return len(b) == 4 && string(b) == "null"
}

// idKey turns an id into a map key that keeps 1 and "1" apart.
func idKey(id json.RawMessage) string { return string(id) }

// errorResponse encodes a JSON-RPC error response.
func errorResponse(id json.RawMessage, code int, msg string) []byte {
	if id == nil {
		id = json.RawMessage("null")
	}
	b, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   rpcError        `json:"error"`
	}{"2.0", id, rpcError{Code: code, Message: msg}})
	return b
}

type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// resultResponse encodes a JSON-RPC result response around an encoded result.
func resultResponse(id json.RawMessage, result []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(id) + len(result) + 40)
	b.WriteString(`{"jsonrpc":"2.0","id":`)
	b.Write(id)
	b.WriteString(`,"result":`)
	b.Write(result)
	b.WriteByte('}')
	return b.Bytes()
}

// toolErrorResult encodes a CallToolResult with isError set: the way a
// refused tool call is reported, so the model can read why.
func toolErrorResult(text string, meta map[string]any) []byte {
	type content struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	r := struct {
		Content []content      `json:"content"`
		IsError bool           `json:"isError"`
		Meta    map[string]any `json:"_meta,omitempty"`
	}{[]content{{"text", text}}, true, meta}
	b, _ := json.Marshal(r)
	return b
}

// callParams is the part of tools/call, prompts/get and resources/read params
// the gate needs.
type callParams struct {
	Name string `json:"name"`
	URI  string `json:"uri"`
}

// gatedName returns the name a gated request acts on (tool or prompt name,
// resource URI).
func gatedName(m *message) (string, error) {
	var p callParams
	if len(m.Params) == 0 {
		return "", errors.New("params missing")
	}
	if err := json.Unmarshal(m.Params, &p); err != nil {
		return "", fmt.Errorf("params: %w", err)
	}
	sp, err := checkMembers(m.Params, paramKeys...)
	if err != nil {
		return "", fmt.Errorf("params: %w", err)
	}
	if meta := slices.Index(paramKeys, "_meta"); sp != nil && sp[meta].found {
		if _, err := checkMembers(m.Params[sp[meta].vs:sp[meta].ve], metaKeys...); err != nil {
			return "", fmt.Errorf("params._meta: %w", err)
		}
	}
	if m.Method == "resources/read" {
		if p.URI == "" {
			return "", errors.New("params.uri missing")
		}
		return p.URI, nil
	}
	if p.Name == "" {
		return "", errors.New("params.name missing")
	}
	return p.Name, nil
}

// setParam returns params (absent or null: {}) with key set to value,
// keeping every other field. It serves for any JSON object.
func setParam(params json.RawMessage, key string, value any) (json.RawMessage, error) {
	v, err := encodeValue(value)
	if err != nil {
		return nil, err
	}
	return setMembers(params, nil, []member{{key, v}})
}

// setMeta returns params with _meta[key] set to value, keeping every other
// field of params and of _meta.
func setMeta(params json.RawMessage, key string, value any) (json.RawMessage, error) {
	v, err := encodeValue(value)
	if err != nil {
		return nil, err
	}
	return setMembers(params, []string{"_meta"}, []member{{key, v}})
}

// withResultMeta returns the response raw with the entries of meta merged
// into result._meta. A response that is not a result (an error) is
// returned unchanged.
func withResultMeta(raw []byte, meta map[string]json.RawMessage) ([]byte, error) {
	set := make([]member, 0, len(meta))
	for k, v := range meta {
		set = append(set, member{k, v})
	}
	// Map order is random; the members go in in one order every time.
	slices.SortFunc(set, func(a, b member) int { return strings.Compare(a.key, b.key) })
	if open, err := wholeObject(raw); err == nil {
		if spans, err := findMembers(raw, open, []string{"result"}); err == nil {
			if r := spans[0]; !r.found || isJSONNull(raw[r.vs:r.ve]) {
				return raw, nil
			}
			if out, err := spliceSet(raw, []string{"result", "_meta"}, set); err == nil {
				return out, nil
			}
		}
	}
	// Duplicate keys or malformed: as a decoder sees it.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, err
	}
	if res, ok := fields["result"]; !ok || isJSONNull(res) {
		return raw, nil
	}
	return decodeSet(raw, []string{"result", "_meta"}, set)
}

// withParams returns a request or notification with new params.
func withParams(m message, params json.RawMessage) (message, error) {
	raw, err := setMembers(m.Raw, nil, []member{{"params", params}})
	if err != nil {
		return m, err
	}
	m.Raw, m.Params = raw, params
	return m, nil
}

// withID returns a message with another id.
func withID(m message, id json.RawMessage) (message, error) {
	raw, err := setMembers(m.Raw, nil, []member{{"id", id}})
	if err != nil {
		return m, err
	}
	m.Raw, m.ID = raw, id
	return m, nil
}

// setMembers sets the members of set in obj's object at path: by splicing
// (see spliceSet), or, where the splice cannot decide (a duplicate key) or
// finds the input malformed, by decoding and encoding each level, which
// settles duplicates as encoding/json does and reports malformed input
// with its own error.
func setMembers(obj []byte, path []string, set []member) ([]byte, error) {
	if out, err := spliceSet(obj, path, set); err == nil {
		return out, nil
	}
	return decodeSet(obj, path, set)
}

// decodeSet is setMembers by decoding every level into a map.
func decodeSet(obj []byte, path []string, set []member) ([]byte, error) {
	var fields map[string]json.RawMessage
	if len(obj) > 0 && !isJSONNull(obj) {
		if err := json.Unmarshal(obj, &fields); err != nil {
			return nil, err
		}
	}
	if fields == nil {
		fields = map[string]json.RawMessage{}
	}
	if len(path) > 0 {
		inner, err := decodeSet(fields[path[0]], path[1:], set)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path[0], err)
		}
		fields[path[0]] = inner
	} else {
		for _, m := range set {
			fields[m.key] = m.value
		}
	}
	return json.Marshal(fields)
}

func quoteID(s string) json.RawMessage { return json.RawMessage(strconv.Quote(s)) }
