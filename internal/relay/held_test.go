package relay_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// A pass-through call the gate holds (approval) turns its answer into an
// event stream: progress notifications when the agent gave a progress
// token, keep-alive comments when it did not; the upstream's answer (here
// a JSON one) follows on the same stream.
func TestHeldCallStreams(t *testing.T) {
	ce := newCredEnv(t)
	sid, ver := ce.rawSession(t, "/mcp/acme", "2025-11-25")
	for i, tc := range []struct {
		meta     string
		want     []string
		unwanted string
	}{
		{``, []string{": waiting for approval by the test", ": still waiting", `{"jsonrpc":"2.0","id":10,"result":`}, "notifications/progress"},
		{`,"_meta":{"progressToken":"p-1"}`, []string{`"method":"notifications/progress"`, `"progressToken":"p-1"`, `"progress":2`, `"message":"still waiting"`, `{"jsonrpc":"2.0","id":11,"result":`}, ": waiting"},
	} {
		body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"meta","arguments":{"text":"hold-me-%d"}%s}}`, 10+i, i, tc.meta)
		req, _ := http.NewRequest("POST", ce.url+"/mcp/acme", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+ce.token)
		req.Header.Set("Mcp-Session-Id", sid)
		for k, v := range ver {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
			t.Errorf("case %d: content type %q, want an event stream", i, ct)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(raw), w) {
				t.Errorf("case %d: the stream lacks %q:\n%s", i, w, raw)
			}
		}
		if strings.Contains(string(raw), tc.unwanted) {
			t.Errorf("case %d: the stream has %q:\n%s", i, tc.unwanted, raw)
		}
	}
}
