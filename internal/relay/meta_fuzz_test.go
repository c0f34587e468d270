package relay

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// decodeJSON decodes one JSON value keeping numbers exact.
func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// fuzzReceipt is what the gate's receipt looks like once the tracker has
// encoded it.
var fuzzReceipt = map[string]json.RawMessage{
	MetaCredential:          json.RawMessage(`"eyJhbGciOiJFZERTQSJ9.eyJqdGkiOiJ4In0.c2ln"`),
	"io.interlock/decision": json.RawMessage(`{"id":"d1","effect":"allow","rule":"r","credential_id":"urn:uuid:x"}`),
}

// isResultResponse reports whether raw is a JSON-RPC result response (as
// the relay parses it) whose result is an object with an object, null or
// absent _meta: one the receipt must always be merged into.
func isResultResponse(raw []byte) bool {
	m, err := parseMessage(raw)
	if err != nil || !m.isResponse() {
		return false
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return false
	}
	var result map[string]json.RawMessage
	if json.Unmarshal(fields["result"], &result) != nil || result == nil {
		return false
	}
	old, ok := result["_meta"]
	if !ok || isJSONNull(old) {
		return true
	}
	var meta map[string]json.RawMessage
	return json.Unmarshal(old, &meta) == nil && meta != nil
}

func FuzzWithResultMeta(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}`,
		`{"jsonrpc":"2.0","id":"a","result":{"content":[],"isError":true,"_meta":{"upstream/own":"kept","n":7}}}`,
		`{"jsonrpc":"2.0","id":2,"result":{"_meta":null,"structuredContent":{"x":1e400}}}`,
		`{"jsonrpc":"2.0","id":3,"result":{"_meta":{"io.interlock/credential":"forged"}}}`,
		`{"jsonrpc":"2.0","id":4,"error":{"code":-32042,"message":"no"}}`,
		`{"jsonrpc":"2.0","id":5,"result":null}`,
		`{"jsonrpc":"2.0","id":6,"result":5}`,
		`{"jsonrpc":"2.0","id":7,"result":{"_meta":5}}`,
		`{"jsonrpc":"2.0","id":8,"result":{"a":1,"a":2,"_meta":{"b":1},"_meta":{"c":2}}}`,
		`{"jsonrpc":"2.0","id":9,"result":{"big":12345678901234567890123,"s":"\u00e9\ud83d\ude00"}}`,
		`{"jsonrpc":"2.0","id":10,"Result":{}}`,
		`[{"jsonrpc":"2.0","id":1,"result":{}}]`,
		`{"jsonrpc":"2.0","id":11,"result":{},"extra":[1,{"k":"v"}]}`,
		``, `{`, `null`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		in := append([]byte(nil), raw...)
		out, err := withResultMeta(raw, fuzzReceipt)
		if !bytes.Equal(in, raw) {
			t.Fatal("withResultMeta changed its input")
		}
		if !isResultResponse(raw) {
			if err == nil && !json.Valid(out) {
				t.Fatalf("invalid JSON out of %q: %q", raw, out)
			}
			return
		}
		if err != nil {
			t.Fatalf("a result response %q got no receipt: %v", raw, err)
		}
		if !json.Valid(out) {
			t.Fatalf("invalid JSON out of %q: %q", raw, out)
		}
		before, err := decodeJSON(raw)
		if err != nil {
			t.Fatal(err)
		}
		after, err := decodeJSON(out)
		if err != nil {
			t.Fatalf("output %q: %v", out, err)
		}
		b, a := before.(map[string]any), after.(map[string]any)
		bRes, aRes := b["result"].(map[string]any), a["result"].(map[string]any)
		aMeta, ok := aRes["_meta"].(map[string]any)
		if !ok {
			t.Fatalf("no result._meta object in %q", out)
		}
		for k, v := range fuzzReceipt {
			want, _ := decodeJSON(v)
			if !reflect.DeepEqual(aMeta[k], want) {
				t.Fatalf("result._meta[%q] = %v, want %v (out %q)", k, aMeta[k], want, out)
			}
		}
		if bMeta, ok := bRes["_meta"].(map[string]any); ok {
			for k, v := range bMeta {
				if _, receipt := fuzzReceipt[k]; !receipt && !reflect.DeepEqual(aMeta[k], v) {
					t.Fatalf("the upstream's result._meta[%q] changed: %v -> %v", k, v, aMeta[k])
				}
			}
			for k := range aMeta {
				if _, receipt := fuzzReceipt[k]; !receipt {
					if _, had := bMeta[k]; !had {
						t.Fatalf("result._meta[%q] appeared from nowhere", k)
					}
				}
			}
		} else if len(aMeta) != len(fuzzReceipt) {
			t.Fatalf("result._meta %v holds more than the receipt", aMeta)
		}
		delete(aRes, "_meta")
		delete(bRes, "_meta")
		if !reflect.DeepEqual(aRes, bRes) {
			t.Fatalf("other result fields changed:\n in  %v\n out %v", bRes, aRes)
		}
		delete(a, "result")
		delete(b, "result")
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("other response fields changed:\n in  %v\n out %v", b, a)
		}
		// What comes out is still the same JSON-RPC response.
		m, err := parseMessage(out)
		if err != nil || !m.isResponse() {
			t.Fatalf("output %q is no longer a response: %v", out, err)
		}
	})
}

func FuzzSetMeta(f *testing.F) {
	for _, s := range []string{
		`{"name":"echo","arguments":{"text":"hi"}}`,
		`{"name":"echo","_meta":{"progressToken":"p1","io.interlock/intent":"x"}}`,
		`{"name":"echo","_meta":{"io.interlock/credential":"agent-supplied"}}`,
		`{"name":"echo","_meta":null}`,
		`{"_meta":5}`, `{"_meta":[]}`, `null`, ``, `[]`, `"s"`, `{"a":1,"a":{"b":2}}`,
		`{"n":12345678901234567890123,"s":"\ud800"}`,
	} {
		f.Add([]byte(s), "eyJhbGciOiJFZERTQSJ9.e30.c2ln")
	}
	f.Fuzz(func(t *testing.T, params []byte, cred string) {
		out, err := setMeta(json.RawMessage(params), MetaCredential, cred)
		var fields map[string]json.RawMessage
		isObject := len(params) == 0 || isJSONNull(params) || (json.Unmarshal(params, &fields) == nil && fields != nil)
		metaOK := true
		if isObject {
			if old, ok := fields["_meta"]; ok && !isJSONNull(old) {
				var m map[string]json.RawMessage
				metaOK = json.Unmarshal(old, &m) == nil && m != nil
			}
		}
		if !isObject || !metaOK {
			if err == nil && !json.Valid(out) {
				t.Fatalf("invalid JSON out of %q: %q", params, out)
			}
			return
		}
		if err != nil {
			t.Fatalf("params object %q: %v", params, err)
		}
		if !json.Valid(out) {
			t.Fatalf("invalid JSON out of %q: %q", params, out)
		}
		after, err := decodeJSON(out)
		if err != nil {
			t.Fatal(err)
		}
		a, ok := after.(map[string]any)
		if !ok {
			t.Fatalf("params %q became %q, not an object", params, out)
		}
		b := map[string]any{}
		if len(params) > 0 && !isJSONNull(params) {
			v, err := decodeJSON(params)
			if err != nil {
				t.Fatal(err)
			}
			b = v.(map[string]any)
		}
		aMeta, ok := a["_meta"].(map[string]any)
		if !ok {
			t.Fatalf("no _meta object in %q", out)
		}
		// The credential as JSON would decode it (invalid UTF-8 becomes U+FFFD).
		enc, _ := json.Marshal(cred)
		want, _ := decodeJSON(enc)
		if !reflect.DeepEqual(aMeta[MetaCredential], want) {
			t.Fatalf("_meta credential %v, want %v", aMeta[MetaCredential], want)
		}
		bMeta, _ := b["_meta"].(map[string]any)
		for k, v := range bMeta {
			if k != MetaCredential && !reflect.DeepEqual(aMeta[k], v) {
				t.Fatalf("_meta[%q] changed: %v -> %v", k, v, aMeta[k])
			}
		}
		if len(aMeta) != len(bMeta)+1 && !(len(aMeta) == len(bMeta) && hadCred(bMeta)) {
			t.Fatalf("_meta %v from %v: keys added or lost", aMeta, bMeta)
		}
		delete(a, "_meta")
		delete(b, "_meta")
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("other params fields changed:\n in  %v\n out %v", b, a)
		}
	})
}

func hadCred(m map[string]any) bool {
	_, ok := m[MetaCredential]
	return ok
}
