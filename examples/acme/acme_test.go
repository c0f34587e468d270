package acme_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

var fixedNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// connect starts a fresh acme server and returns a client session to it.
func connect(t *testing.T) *mcp.ClientSession {
	t.Helper()
	ctx := t.Context()
	server := acme.NewServer(acme.Options{Now: func() time.Time { return fixedNow }})
	st, ct := mcp.NewInMemoryTransports()
	ss, err := server.Connect(ctx, st, nil)
	if err != nil {
		t.Fatalf("server connect: %v", err)
	}
	t.Cleanup(func() { _ = ss.Close() })
	client := mcp.NewClient(&mcp.Implementation{Name: "acme-test", Version: "0"}, nil)
	cs, err := client.Connect(ctx, ct, nil)
	if err != nil {
		t.Fatalf("client connect: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

func call(t *testing.T, cs *mcp.ClientSession, tool string, args map[string]any) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s: protocol error: %v", tool, err)
	}
	return res
}

// decode turns a result's structured content into T.
func decode[T any](t *testing.T, res *mcp.CallToolResult) T {
	t.Helper()
	var v T
	if res.StructuredContent == nil {
		t.Fatalf("no structuredContent in %s", text(res))
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("structuredContent %s: %v", b, err)
	}
	return v
}

// text joins a result's text blocks.
func text(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

func TestToolsList(t *testing.T) {
	cs := connect(t)
	res, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		readOnly, destructive bool
	}
	wantTools := map[string]want{
		"place_order":         {readOnly: false, destructive: false},
		"provision_servers":   {readOnly: false, destructive: false},
		"get_customer_record": {readOnly: true},
		"list_open_tickets":   {readOnly: true},
		"issue_refund":        {readOnly: false, destructive: true},
		"search_docs":         {readOnly: true},
		"echo":                {readOnly: true},
	}
	var got []string
	for _, tool := range res.Tools {
		got = append(got, tool.Name)
		w, ok := wantTools[tool.Name]
		if !ok {
			t.Errorf("unexpected tool %q", tool.Name)
			continue
		}
		if tool.Title == "" || tool.Description == "" {
			t.Errorf("%s: title %q, description %q: both must be set", tool.Name, tool.Title, tool.Description)
		}
		a := tool.Annotations
		if a == nil {
			t.Errorf("%s: no annotations", tool.Name)
			continue
		}
		if a.ReadOnlyHint != w.readOnly {
			t.Errorf("%s: readOnlyHint = %v, want %v", tool.Name, a.ReadOnlyHint, w.readOnly)
		}
		if !w.readOnly && (a.DestructiveHint == nil || *a.DestructiveHint != w.destructive) {
			t.Errorf("%s: destructiveHint = %v, want %v", tool.Name, a.DestructiveHint, w.destructive)
		}
		if a.OpenWorldHint == nil || *a.OpenWorldHint {
			t.Errorf("%s: openWorldHint must be false, got %v", tool.Name, a.OpenWorldHint)
		}
	}
	if len(got) != len(wantTools) {
		t.Errorf("tools = %v, want the %d tools %v", got, len(wantTools), wantTools)
	}

	// provision_servers advertises its enums so agents (and interlock's
	// classifier) can see the allowed values.
	i := slices.IndexFunc(res.Tools, func(t *mcp.Tool) bool { return t.Name == "provision_servers" })
	if i < 0 {
		t.Fatal("no provision_servers")
	}
	schema, _ := json.Marshal(res.Tools[i].InputSchema)
	for _, s := range []string{`"enum":["development","staging","production"]`, `"enum":["small","medium","large"]`} {
		if !strings.Contains(string(schema), s) {
			t.Errorf("provision_servers input schema %s lacks %s", schema, s)
		}
	}
}

func TestTools(t *testing.T) {
	const at = "2026-11-27T12:00:00Z"
	tests := []struct {
		name    string
		tool    string
		args    map[string]any
		wantErr string // substring of the isError text; "" means success
		check   func(t *testing.T, res *mcp.CallToolResult)
	}{
		{
			name: "place_order",
			tool: "place_order",
			args: map[string]any{"item": "laptop stand", "quantity": 3, "unit_price_usd": 19.99},
			check: func(t *testing.T, res *mcp.CallToolResult) {
				got := decode[acme.Order](t, res)
				want := acme.Order{OrderID: "ORD-1004", Item: "laptop stand", Quantity: 3, UnitPriceUSD: 19.99,
					TotalUSD: 59.97, Status: "placed", CreatedAt: at}
				if got != want {
					t.Errorf("order = %+v, want %+v", got, want)
				}
			},
		},
		{name: "place_order zero quantity", tool: "place_order",
			args: map[string]any{"item": "pen", "quantity": 0, "unit_price_usd": 1}, wantErr: "quantity"},
		{name: "place_order quantity over limit", tool: "place_order",
			args: map[string]any{"item": "pen", "quantity": 5000, "unit_price_usd": 1}, wantErr: "over the limit"},
		{name: "place_order negative price", tool: "place_order",
			args: map[string]any{"item": "pen", "quantity": 1, "unit_price_usd": -2.5}, wantErr: "unit_price_usd"},
		{name: "place_order blank item", tool: "place_order",
			args: map[string]any{"item": "   ", "quantity": 1, "unit_price_usd": 1}, wantErr: "item must not be empty"},
		{name: "place_order missing item", tool: "place_order",
			args: map[string]any{"quantity": 1, "unit_price_usd": 1}, wantErr: "item"},
		{name: "place_order wrong type", tool: "place_order",
			args: map[string]any{"item": "pen", "quantity": "two", "unit_price_usd": 1}, wantErr: "quantity"},

		{
			name: "provision_servers",
			tool: "provision_servers",
			args: map[string]any{"count": 3, "environment": "production", "size": "large"},
			check: func(t *testing.T, res *mcp.CallToolResult) {
				got := decode[struct{ Servers []acme.Server }](t, res)
				var ids []string
				for _, s := range got.Servers {
					ids = append(ids, s.ServerID)
					if s.Environment != "production" || s.Size != "large" || s.Status != "provisioning" || s.CreatedAt != at {
						t.Errorf("server %+v: wrong fields", s)
					}
				}
				if want := []string{"srv-0001", "srv-0002", "srv-0003"}; !slices.Equal(ids, want) {
					t.Errorf("ids = %v, want %v", ids, want)
				}
			},
		},
		{name: "provision_servers unknown environment", tool: "provision_servers",
			args: map[string]any{"count": 1, "environment": "prod", "size": "small"}, wantErr: "environment"},
		{name: "provision_servers unknown size", tool: "provision_servers",
			args: map[string]any{"count": 1, "environment": "staging", "size": "huge"}, wantErr: "size"},
		{name: "provision_servers zero count", tool: "provision_servers",
			args: map[string]any{"count": 0, "environment": "staging", "size": "small"}, wantErr: "count"},
		{name: "provision_servers too many", tool: "provision_servers",
			args: map[string]any{"count": 21, "environment": "staging", "size": "small"}, wantErr: "count"},

		{
			name: "get_customer_record",
			tool: "get_customer_record",
			args: map[string]any{"customer_id": "CUST-002"},
			check: func(t *testing.T, res *mcp.CallToolResult) {
				got := decode[acme.Customer](t, res)
				if got.Name != "Grace Hopper" || got.Email != "grace@example.org" || got.Plan != "team" ||
					got.Address.City != "Arlington" || got.Address.Country != "US" {
					t.Errorf("record = %+v", got)
				}
			},
		},
		{name: "get_customer_record unknown id", tool: "get_customer_record",
			args: map[string]any{"customer_id": "CUST-999"}, wantErr: `no customer with id "CUST-999"`},
		{name: "get_customer_record empty id", tool: "get_customer_record",
			args: map[string]any{"customer_id": ""}, wantErr: "customer_id"},

		{
			name: "list_open_tickets",
			tool: "list_open_tickets",
			args: map[string]any{"customer_id": "CUST-001"},
			check: func(t *testing.T, res *mcp.CallToolResult) {
				got := decode[struct{ Tickets []acme.Ticket }](t, res)
				var ids []string
				for _, tk := range got.Tickets {
					ids = append(ids, tk.TicketID)
					if tk.Status != "open" {
						t.Errorf("ticket %s has status %q", tk.TicketID, tk.Status)
					}
				}
				if want := []string{"TCK-101", "TCK-107"}; !slices.Equal(ids, want) {
					t.Errorf("open tickets = %v, want %v (closed TCK-102 left out)", ids, want)
				}
			},
		},
		{
			name: "list_open_tickets none",
			tool: "list_open_tickets",
			args: map[string]any{"customer_id": "CUST-004"},
			check: func(t *testing.T, res *mcp.CallToolResult) {
				b, _ := json.Marshal(res.StructuredContent)
				if string(b) != `{"tickets":[]}` {
					t.Errorf("structuredContent = %s, want {\"tickets\":[]}", b)
				}
			},
		},
		{name: "list_open_tickets unknown customer", tool: "list_open_tickets",
			args: map[string]any{"customer_id": "nobody"}, wantErr: "no customer"},

		{
			name: "issue_refund",
			tool: "issue_refund",
			args: map[string]any{"order_id": "ORD-1001", "amount_usd": 100.5},
			check: func(t *testing.T, res *mcp.CallToolResult) {
				got := decode[acme.Refund](t, res)
				want := acme.Refund{RefundID: "RF-0001", OrderID: "ORD-1001", AmountUSD: 100.5,
					RefundedTotalUSD: 100.5, Status: "issued", CreatedAt: at}
				if got != want {
					t.Errorf("refund = %+v, want %+v", got, want)
				}
			},
		},
		{name: "issue_refund more than the order", tool: "issue_refund",
			args: map[string]any{"order_id": "ORD-1003", "amount_usd": 380.01}, wantErr: "more than the 380.00 left"},
		{name: "issue_refund unknown order", tool: "issue_refund",
			args: map[string]any{"order_id": "ORD-9", "amount_usd": 1}, wantErr: `no order with id "ORD-9"`},
		{name: "issue_refund zero amount", tool: "issue_refund",
			args: map[string]any{"order_id": "ORD-1001", "amount_usd": 0}, wantErr: "amount_usd"},

		{
			name: "search_docs",
			tool: "search_docs",
			args: map[string]any{"query": "Refund"},
			check: func(t *testing.T, res *mcp.CallToolResult) {
				if len(res.Content) == 0 || len(res.Content) > 3 {
					t.Fatalf("got %d snippets, want 1 to 3", len(res.Content))
				}
				first := res.Content[0].(*mcp.TextContent).Text
				if !strings.HasPrefix(first, "Refund policy (https://docs.acme.example/billing/refunds)") {
					t.Errorf("best match = %q, want the refund policy", first)
				}
			},
		},
		{
			name: "search_docs no match",
			tool: "search_docs",
			args: map[string]any{"query": "kubernetes"},
			check: func(t *testing.T, res *mcp.CallToolResult) {
				if got := text(res); got != `No documentation matches "kubernetes".` {
					t.Errorf("text = %q", got)
				}
			},
		},
		{name: "search_docs blank query", tool: "search_docs",
			args: map[string]any{"query": "  "}, wantErr: "at least one word"},

		{
			name: "echo",
			tool: "echo",
			args: map[string]any{"text": "  hello,\n\tworld ✓ {\"json\": true}  "},
			check: func(t *testing.T, res *mcp.CallToolResult) {
				if len(res.Content) != 1 {
					t.Fatalf("got %d content blocks, want 1", len(res.Content))
				}
				if got := text(res); got != "  hello,\n\tworld ✓ {\"json\": true}  " {
					t.Errorf("echo returned %q", got)
				}
				if res.StructuredContent != nil {
					t.Errorf("echo has structuredContent %v", res.StructuredContent)
				}
			},
		},
		{name: "echo missing text", tool: "echo", args: map[string]any{}, wantErr: "text"},
		{name: "echo extra argument", tool: "echo", args: map[string]any{"text": "x", "loud": true}, wantErr: "loud"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := connect(t) // fresh state: ids are predictable
			res := call(t, cs, tc.tool, tc.args)
			if tc.wantErr != "" {
				if !res.IsError {
					t.Fatalf("want a tool error containing %q, got success: %s", tc.wantErr, text(res))
				}
				if got := text(res); !strings.Contains(got, tc.wantErr) {
					t.Fatalf("error text %q does not contain %q", got, tc.wantErr)
				}
				return
			}
			if res.IsError {
				t.Fatalf("tool error: %s", text(res))
			}
			tc.check(t, res)
		})
	}
}

func TestUnknownToolIsProtocolError(t *testing.T) {
	cs := connect(t)
	_, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "delete_everything", Arguments: map[string]any{}})
	if err == nil || !strings.Contains(err.Error(), "delete_everything") {
		t.Fatalf("err = %v, want an unknown-tool protocol error", err)
	}
}

// State carries across calls in one server: ids count up and refunds add up.
func TestStateAcrossCalls(t *testing.T) {
	cs := connect(t)
	o1 := decode[acme.Order](t, call(t, cs, "place_order", map[string]any{"item": "desk", "quantity": 1, "unit_price_usd": 300}))
	o2 := decode[acme.Order](t, call(t, cs, "place_order", map[string]any{"item": "chair", "quantity": 2, "unit_price_usd": 150}))
	if o1.OrderID != "ORD-1004" || o2.OrderID != "ORD-1005" {
		t.Fatalf("order ids %s, %s; want ORD-1004, ORD-1005", o1.OrderID, o2.OrderID)
	}
	r1 := decode[acme.Refund](t, call(t, cs, "issue_refund", map[string]any{"order_id": o2.OrderID, "amount_usd": 100}))
	r2 := decode[acme.Refund](t, call(t, cs, "issue_refund", map[string]any{"order_id": o2.OrderID, "amount_usd": 200}))
	if r1.RefundID != "RF-0001" || r2.RefundID != "RF-0002" || r2.RefundedTotalUSD != 300 {
		t.Fatalf("refunds %+v, %+v", r1, r2)
	}
	res := call(t, cs, "issue_refund", map[string]any{"order_id": o2.OrderID, "amount_usd": 0.01})
	if !res.IsError || !strings.Contains(text(res), "0.00 left") {
		t.Fatalf("refund past the total: %s (isError %v)", text(res), res.IsError)
	}
	s1 := decode[struct{ Servers []acme.Server }](t, call(t, cs, "provision_servers", map[string]any{"count": 2, "environment": "staging", "size": "small"}))
	s2 := decode[struct{ Servers []acme.Server }](t, call(t, cs, "provision_servers", map[string]any{"count": 1, "environment": "development", "size": "medium"}))
	if s1.Servers[1].ServerID != "srv-0002" || s2.Servers[0].ServerID != "srv-0003" {
		t.Fatalf("server ids %+v then %+v", s1.Servers, s2.Servers)
	}
}

// Concurrent calls get distinct ids (run with -race to check the locking).
func TestConcurrentOrders(t *testing.T) {
	cs := connect(t)
	const n = 40
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "place_order",
				Arguments: map[string]any{"item": fmt.Sprintf("item-%d", i), "quantity": 1, "unit_price_usd": 1}})
			if err != nil || res.IsError {
				t.Errorf("call %d: %v %v", i, err, res)
				return
			}
			b, _ := json.Marshal(res.StructuredContent)
			var o acme.Order
			_ = json.Unmarshal(b, &o)
			ids[i] = o.OrderID
		})
	}
	wg.Wait()
	slices.Sort(ids)
	if got := slices.Compact(slices.Clone(ids)); len(got) != n {
		t.Fatalf("%d distinct ids from %d orders: %v", len(got), n, ids)
	}
	if ids[0] != "ORD-1004" || ids[n-1] != fmt.Sprintf("ORD-%d", 1004+n-1) {
		t.Fatalf("ids run %s..%s, want ORD-1004..ORD-%d", ids[0], ids[n-1], 1004+n-1)
	}
}

// Two fresh servers given the same calls answer the same.
func TestDeterministic(t *testing.T) {
	var outs [2]string
	for i := range outs {
		cs := connect(t)
		res := call(t, cs, "place_order", map[string]any{"item": "pen", "quantity": 7, "unit_price_usd": 0.35})
		b, _ := json.Marshal(res.StructuredContent)
		outs[i] = string(b)
	}
	if outs[0] != outs[1] {
		t.Fatalf("fresh servers differ:\n%s\n%s", outs[0], outs[1])
	}
	if !strings.Contains(outs[0], `"total_usd":2.45`) {
		t.Fatalf("total not rounded to cents: %s", outs[0])
	}
}
