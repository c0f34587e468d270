package relay

import (
	"errors"
	"strings"
	"testing"
)

// A gated request whose envelope, params or params._meta hold a member
// twice, or beside another spelling of it, is refused: interlock's decoder
// (encoding/json: names matched without regard to case, the last duplicate
// kept) and the upstream's may read different tools or arguments, and the
// policy must judge what the tool will run.
func TestAmbiguousMembersRefused(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		want      string // in the error; "" for accepted
	}{
		{"plain", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_docs","arguments":{"q":"x"}}}`, ""},
		{"other members in other cases are kept", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Extra":1,"extra":2}}`, ""},
		{"tool name in two cases", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"issue_refund","Name":"search_docs"}}`, `"Name" besides "name"`},
		{"tool name twice", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"issue_refund","name":"search_docs"}}`, `duplicate key "name"`},
		{"arguments in two cases", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Arguments":{"n":1},"arguments":{"n":2}}}`, `"Arguments" besides "arguments"`},
		{"escaped spelling", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","n\u0061me":"b"}}`, `duplicate key "name"`},
		{"Kelvin sign", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":{"io.interlock/credential":"x","io.interloc\u212a/credential":"y"}}}`, "besides"},
		{"params in two cases", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"PARAMS":{"name":"b"}}`, `"PARAMS" besides "params"`},
		{"method twice", `{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"a"}}`, `duplicate key "method"`},
		{"_meta in two cases", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":{},"_Meta":{"io.interlock/credential":"x"}}}`, `"_Meta" besides "_meta"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseMessage([]byte(tc.msg))
			if err == nil {
				_, err = gatedName(&m)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			case tc.want != "" && !errors.Is(err, errDuplicateKey) && !errors.Is(err, errFolded):
				t.Fatalf("error %v is not about an ambiguous member", err)
			}
		})
	}
}
