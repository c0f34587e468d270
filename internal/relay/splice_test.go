package relay

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func TestSpliceSet(t *testing.T) {
	v := []byte(`"V"`)
	for _, tc := range []struct {
		name, obj string
		path      []string
		want      string
		err       error // nil: success; errAny: some error
	}{
		{"empty input", ``, []string{"_meta"}, `{"_meta":{"k":"V"}}`, nil},
		{"null input", `null`, nil, `{"k":"V"}`, nil},
		{"empty object", `{}`, nil, `{"k":"V"}`, nil},
		{"empty object with space", `{ }`, []string{"_meta"}, `{"_meta":{"k":"V"} }`, nil},
		{"inserted first", `{"a":1}`, nil, `{"k":"V","a":1}`, nil},
		{"replaced in place", `{"a":1,"k":[1,{"x":"}"}],"b":2}`, nil, `{"a":1,"k":"V","b":2}`, nil},
		{"path created", `{"name":"t","arguments":{"x":1}}`, []string{"_meta"}, `{"_meta":{"k":"V"},"name":"t","arguments":{"x":1}}`, nil},
		{"null on the path", `{"_meta":null,"n":1}`, []string{"_meta"}, `{"_meta":{"k":"V"},"n":1}`, nil},
		{"into an existing object", "{\n \"_meta\" : { \"p\" : 1 } }", []string{"_meta"}, "{\n \"_meta\" : {\"k\":\"V\", \"p\" : 1 } }", nil},
		{"two levels", `{"result":{"content":[]}}`, []string{"result", "_meta"}, `{"result":{"_meta":{"k":"V"},"content":[]}}`, nil},
		{"escaped key matches", `{"\u005fmeta":{"k":0}}`, []string{"_meta"}, `{"\u005fmeta":{"k":"V"}}`, nil},
		{"keys inside strings are not keys", `{"x":"\"k\":1","y":"\\"}`, nil, `{"k":"V","x":"\"k\":1","y":"\\"}`, nil},
		{"duplicate on the path", `{"_meta":{},"_meta":{}}`, []string{"_meta"}, ``, errDuplicateKey},
		{"duplicate target", `{"k":1,"k":2}`, nil, ``, errDuplicateKey},
		{"not an object", `[1]`, nil, ``, errAny},
		{"path holds a string", `{"_meta":"x"}`, []string{"_meta"}, ``, errAny},
		{"unterminated", `{"a":[1,2}`, nil, ``, errAny},
		{"bad literal", `{"a":nul}`, nil, ``, errAny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := spliceSet([]byte(tc.obj), tc.path, []member{{"k", v}})
			switch {
			case tc.err == nil && err != nil:
				t.Fatalf("error %v", err)
			case tc.err == errAny && err == nil, tc.err != nil && tc.err != errAny && !errors.Is(err, tc.err):
				t.Fatalf("got %s, %v; want error %v", got, err, tc.err)
			case tc.err == nil && string(got) != tc.want:
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

var errAny = errors.New("any error")

// The splice agrees with decoding and re-encoding on every well-formed
// object: same members, same values, only the order and spacing kept.
func FuzzSpliceSet(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"name":"echo","arguments":{"text":"hi"}}`, `{"_meta":{"progressToken":1},"name":"x"}`,
		`{"_meta":null}`, `{"_meta":{"io.interlock/credential":"forged"}}`, `{"a":[{"b":{"c":[1,2,{"_meta":3}]}}],"_meta":{}}`,
		`{"\u005fmeta":{"x":true}}`, `{"_meta":5}`, `{"_meta":{},"_meta":{}}`, `{"n":-1.5e+3,"s":"\u2028\\\""}`,
	} {
		f.Add([]byte(s), "io.interlock/credential", true)
		f.Add([]byte(s), "progressToken", false)
	}
	f.Fuzz(func(t *testing.T, obj []byte, key string, nested bool) {
		var path []string
		if nested {
			path = []string{"_meta"}
		}
		set := []member{{key, []byte(`{"v":[1,"two"]}`)}}
		in := append([]byte(nil), obj...)
		got, err := spliceSet(obj, path, set)
		if string(in) != string(obj) {
			t.Fatal("spliceSet changed its input")
		}
		var top map[string]json.RawMessage
		if !json.Valid(obj) || json.Unmarshal(obj, &top) != nil || top == nil {
			return // the contract is for objects
		}
		want, werr := decodeSet(obj, path, set)
		if err != nil {
			if werr == nil && !errors.Is(err, errDuplicateKey) {
				t.Fatalf("splice failed (%v) where decoding worked: %s", err, want)
			}
			return
		}
		if werr != nil {
			t.Fatalf("splice worked (%s) where decoding failed: %v", got, werr)
		}
		g, gerr := decodeJSON(got)
		w, _ := decodeJSON(want)
		if gerr != nil || !reflect.DeepEqual(g, w) {
			t.Fatalf("splice %s (%v)\nwant   %s", got, gerr, want)
		}
	})
}

// The splicer's scanner accepts exactly what encoding/json accepts.
func FuzzSkipValue(f *testing.F) {
	for _, s := range []string{`{}`, `[1,-0.5e+3,"a\u00e9\n",true,false,null,{"k":[]}]`, `00`, `1.`, `-`, `"\x"`, `"\u12"`, `{"a":1,}`, `[1 2]`, ` "x" `, `{"a" 1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		end, err := skipValue(b, skipSpace(b, 0), 0)
		ok := err == nil && skipSpace(b, end) == len(b)
		if ok != json.Valid(b) {
			t.Fatalf("skipValue says %v (%v), json.Valid %v, for %q", ok, err, json.Valid(b), b)
		}
	})
}

// appendString writes what encoding/json reads back as the same string
// (as encoding/json's own encoding of it reads back).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "io.interlock/credential", "eyJh.eyJq.c2ln", `a"b\c`, "tab\there", "ünï", "\u2028", "<&>", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendString([]byte("x"), s)
		if got[0] != 'x' {
			t.Fatal("appendString lost what it appended to")
		}
		var back, want string
		if err := json.Unmarshal(got[1:], &back); err != nil {
			t.Fatalf("appendString(%q) = %s: %v", s, got[1:], err)
		}
		ref, _ := json.Marshal(s)
		json.Unmarshal(ref, &want)
		if back != want {
			t.Fatalf("appendString(%q) reads back as %q, want %q", s, back, want)
		}
	})
}

// The scanning responseID and isErrorAnswer read every message as the
// decoding ones do.
func FuzzResponseScan(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`, `{"jsonrpc":"2.0","id":"a","result":{"isError":true}}`,
		`{"jsonrpc":"2.0","id":2,"error":{"code":1,"message":"x"}}`, `{"jsonrpc":"2.0","method":"notifications/progress","params":{}}`,
		`{"ID":3,"Result":{"ISERROR":true}}`, `{"id":null,"error":null}`, `{"id":4,"result":5}`, `{"id":5,"result":{"isError":"yes"}}`,
		`{"id":6,"method":"","result":null}`, `{"id":7,"id":8}`, `{"\u0069d":9,"result":{"\u212aey":1}}`, `[1]`, `{"id":1}x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if got, want := responseID(raw), decodedResponseID(raw); string(got) != string(want) {
			t.Fatalf("responseID(%q) = %q, decoding says %q", raw, got, want)
		}
		if got, want := isErrorAnswer(raw), decodedIsErrorAnswer(raw); got != want {
			t.Fatalf("isErrorAnswer(%q) = %v, decoding says %v", raw, got, want)
		}
	})
}
