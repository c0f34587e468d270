package relay

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"
)

func FuzzParseBody(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":"a","result":{}}`,
		`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"x"}]`,
		`[]`, `{}`, `null`, `{"jsonrpc":"2.0","id":{},"method":"m"}`, " \n[", `{"jsonrpc":"2.0","id":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		msgs, _, err := parseBody(body)
		if err != nil {
			if msgs != nil {
				t.Fatal("messages returned with an error")
			}
			return
		}
		for _, m := range msgs {
			kinds := 0
			for _, k := range []bool{m.isRequest(), m.isNotification(), m.isResponse()} {
				if k {
					kinds++
				}
			}
			if kinds != 1 {
				t.Fatalf("message is %d kinds at once: %s", kinds, m.Raw)
			}
			if !json.Valid(m.Raw) {
				t.Fatalf("accepted invalid JSON: %q", m.Raw)
			}
			// What the relay derives from a message must itself parse.
			if m.isRequest() {
				for _, b := range [][]byte{errorResponse(m.ID, codeInternalError, "x"), resultResponse(m.ID, toolErrorResult("r", nil))} {
					if _, err := parseMessage(b); err != nil {
						t.Fatalf("derived response does not parse: %s: %v", b, err)
					}
				}
				if isGated(m.Method) {
					gatedName(&m) // must not panic
				}
			}
		}
	})
}

func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("id: 1\nevent: message\ndata: {\"a\":1}\n\n: keep\n\ndata: x\ndata: y\n\nretry: 100\n\n"))
	f.Add([]byte("data: no end"))
	f.Add([]byte("\r\n\r\ndata:\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		rd := newSSEReader(bytes.NewReader(in), 1<<16)
		defer rd.release()
		var raw bytes.Buffer
		for i := 0; i < 10000; i++ {
			ev, err := rd.next()
			if err != nil {
				if err != io.EOF && err != errEventTooLarge {
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			raw.Write(ev.Raw)
		}
		// Passing events on unchanged must never invent bytes.
		if raw.Len() > len(in) {
			t.Fatalf("relayed %d bytes from %d", raw.Len(), len(in))
		}
	})
}
