package policy

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/interlock-dev/interlock/internal/catalog"
)

func schema(props ...string) json.RawMessage {
	m := map[string]any{}
	for _, p := range props {
		m[p] = map[string]any{"type": "string"}
	}
	b, _ := json.Marshal(map[string]any{"type": "object", "properties": m})
	return b
}

// acmeTools are the demo upstream's tools as the catalog lists them.
func acmeTools() []catalog.Tool {
	return []catalog.Tool{
		{Upstream: "acme", Name: "place_order", InputSchema: schema("item", "quantity", "unit_price_usd")},
		{Upstream: "acme", Name: "provision_servers", InputSchema: schema("count", "environment", "size")},
		{Upstream: "acme", Name: "get_customer_record", InputSchema: schema("customer_id")},
		{Upstream: "acme", Name: "list_open_tickets", InputSchema: schema("customer_id")},
		{Upstream: "acme", Name: "issue_refund", InputSchema: schema("order_id", "amount_usd")},
		{Upstream: "acme", Name: "search_docs", InputSchema: schema("query")},
		{Upstream: "acme", Name: "echo", InputSchema: schema("text")},
	}
}

func TestLint(t *testing.T) {
	src := `version: 1
tools:
  - {match: "acme.place_order", amount: 'args.quantity * args.price'}
  - {match: "acme.nothing_*", risk: low}
  - {match: "acme.*", risk: medium}
rules:
  - {id: env, when: 'args.environment == "production" && args["region"] == "eu"', effect: deny}
  - {id: fine, when: 'has(args.customer_id) && args.count > 1.0', effect: allow}
  - {id: shadowed, when: '[1].all(args, args > 0)', effect: allow}
budgets:
  - {id: b, per: global, window: 1h, when: 'args.budget_code == "x"', sum: 1, limit: 1}
lookups:
  - {id: t, upstream: acme, tool: list_open_tickets, arguments: '{"customer_id": args.customer_id, "status": "open"}', result: 'true'}
  - {id: u, upstream: elsewhere, tool: x, arguments: '{}', result: 'true'}
  - {id: v, upstream: acme, tool: list_closed_tickets, arguments: '{}', result: 'true'}
`
	p := mustParse(t, src)
	got := p.Lint(acmeTools())
	want := []string{
		`test.yaml:3:58: tools[0] (acme.place_order) amount: reads args.price, which none of acme.place_order takes`,
		`test.yaml:4: tools[1] (acme.nothing_*): the glob "acme.nothing_*" matches no discovered tool`,
		`test.yaml:7:58: rule "env" when: reads args.region, which no discovered tool takes`,
		`test.yaml:11:45: budget "b" when: reads args.budget_code, which no discovered tool takes`,
		`test.yaml:13:65: lookup "t" arguments: acme.list_open_tickets does not take [status]`,
		`test.yaml:14: lookup "u": no discovered tool comes from upstream "elsewhere"`,
		`test.yaml:15: lookup "v": upstream "acme" has no tool "list_closed_tickets"`,
	}
	var lines []string
	for _, p := range got {
		lines = append(lines, p.String())
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestLintDemoPolicyIsClean(t *testing.T) {
	p, err := Load("../../examples/acme/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Lint(acmeTools()); len(got) != 0 {
		t.Errorf("problems: %v", got)
	}
}

func TestLintUnreadableSchema(t *testing.T) {
	p := mustParse(t, "version: 1\nrules:\n  - {id: r, when: 'args.anything == 1', effect: allow}\n")
	tools := []catalog.Tool{{Upstream: "x", Name: "y", InputSchema: json.RawMessage(`not json`)}}
	if got := p.Lint(tools); len(got) != 0 {
		t.Errorf("a tool whose schema cannot be read may take anything; got %v", got)
	}
}
