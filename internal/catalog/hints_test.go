package catalog

import (
	"reflect"
	"testing"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func ptr[T any](v T) *T { return &v }

// want is an expected classification; a non-empty source field must equal
// the classification's source for that field.
type want struct {
	class, action, risk          string
	classSrc, actionSrc, riskSrc string
}

func check(t *testing.T, got Classification, w want) {
	t.Helper()
	if got.Class != w.class || got.Action != w.action || got.Risk != w.risk {
		t.Errorf("got %s/%s/%s, want %s/%s/%s (sources %v)", got.Class, got.Action, got.Risk, w.class, w.action, w.risk, got.Source)
	}
	for field, src := range map[string]string{"class": w.classSrc, "action": w.actionSrc, "risk": w.riskSrc} {
		if src != "" && got.Source[field] != src {
			t.Errorf("source[%s] = %q, want %q", field, got.Source[field], src)
		}
	}
	for _, field := range []string{"class", "action", "risk"} {
		if got.Source[field] == "" {
			t.Errorf("source[%s] is empty", field)
		}
	}
}

func TestHints(t *testing.T) {
	readOnly := &mcp.ToolAnnotations{ReadOnlyHint: true}
	destructive := &mcp.ToolAnnotations{DestructiveHint: ptr(true)}
	notDestructive := &mcp.ToolAnnotations{DestructiveHint: ptr(false)}
	for _, tc := range []struct {
		tool mcp.Tool
		want want
	}{
		// Spend.
		{mcp.Tool{Name: "create_payment_intent", Description: "Creates a PaymentIntent to collect a payment from a customer."},
			want{ClassTransactional, ActionSpend, "high", "", "heuristic:name:pay", ""}},
		{mcp.Tool{Name: "createRefund", Description: "Refund a charge.", Annotations: notDestructive},
			want{ClassTransactional, ActionSpend, "high", "heuristic:name:refund", "heuristic:name:refund", "heuristic:name:refund"}},
		{mcp.Tool{Name: "transfer_funds", Description: "Moves money between two accounts."},
			want{ClassTransactional, ActionSpend, "high", "", "heuristic:name:transfer", ""}},
		{mcp.Tool{Name: "buy_domain", Description: "Registers a domain name for one year."},
			want{ClassTransactional, ActionSpend, "high", "", "heuristic:name:buy", ""}},
		{mcp.Tool{Name: "process", Description: "Charges the customer's card for the cart's total."},
			want{ClassTransactional, ActionSpend, "high", "heuristic:description:charge", "heuristic:description:charge", "heuristic:description:charge"}},
		// Infrastructure.
		{mcp.Tool{Name: "deploy_service", Description: "Deploys a new revision of a service."},
			want{ClassTransactional, ActionInfrastructure, "high", "", "heuristic:name:deploy", ""}},
		{mcp.Tool{Name: "scale_deployment", Description: "Sets the replica count of a deployment."},
			want{ClassTransactional, ActionInfrastructure, "high", "", "heuristic:name:scale", ""}},
		{mcp.Tool{Name: "terraform_apply", Description: "Applies a Terraform plan."},
			want{ClassTransactional, ActionInfrastructure, "high", "", "heuristic:name:terraform", ""}},
		{mcp.Tool{Name: "update_dns_record", Description: "Changes one record of a DNS zone."},
			want{ClassTransactional, ActionInfrastructure, "high", "", "heuristic:name:dns", ""}},
		{mcp.Tool{Name: "delete_cluster", Annotations: destructive},
			want{ClassTransactional, ActionInfrastructure, "high", "heuristic:name:cluster; annotation:destructiveHint agrees", "heuristic:name:cluster; annotation:destructiveHint agrees", ""}},
		// Admin.
		{mcp.Tool{Name: "delete_user", Description: "Deletes a user account."},
			want{ClassTransactional, ActionAdmin, "critical", "", "heuristic:name:delete_user", "heuristic:name:delete_user"}},
		{mcp.Tool{Name: "grant_role", Description: "Grants a role to a member."},
			want{ClassTransactional, ActionAdmin, "critical", "", "heuristic:name:grant", ""}},
		{mcp.Tool{Name: "set_permissions"},
			want{ClassTransactional, ActionAdmin, "critical", "", "heuristic:name:permission", ""}},
		{mcp.Tool{Name: "configure", Description: "Central user management: invite, suspend and remove people."},
			want{ClassTransactional, ActionAdmin, "critical", "", "heuristic:description:user management", ""}},
		// Personal data.
		{mcp.Tool{Name: "get_patient_chart", Annotations: readOnly},
			want{ClassInformational, ActionPersonalData, "high", "heuristic:name:get; annotation:readOnlyHint agrees", "heuristic:name:patient; annotation:readOnlyHint overruled", "heuristic:name:patient; annotation:readOnlyHint overruled"}},
		{mcp.Tool{Name: "list_users", Description: "Lists the organisation's users."},
			want{ClassInformational, ActionPersonalData, "high", "heuristic:name:list", "heuristic:name:user", ""}},
		{mcp.Tool{Name: "update_user_email", Description: "Changes a user's email address."},
			want{ClassTransactional, ActionPersonalData, "high", "heuristic:name:update", "heuristic:name:email", ""}},
		{mcp.Tool{Name: "crm_export", Description: "Exports contacts with their personal data.", Annotations: readOnly},
			want{ClassInformational, ActionPersonalData, "high", SourceReadOnlyHint, "heuristic:description:personal data; annotation:readOnlyHint overruled", ""}},
		// Writes.
		{mcp.Tool{Name: "delete_file", Annotations: readOnly}, // a lying annotation
			want{ClassTransactional, ActionWrite, "high", "heuristic:name:delete; annotation:readOnlyHint overruled", "heuristic:name:delete; annotation:readOnlyHint overruled", "heuristic:name:delete; annotation:readOnlyHint overruled"}},
		{mcp.Tool{Name: "drop_table", Description: "Drops a table."},
			want{ClassTransactional, ActionWrite, "high", "heuristic:name:drop", "heuristic:name:drop", "heuristic:name:drop"}},
		{mcp.Tool{Name: "create_issue", Description: "Opens a new issue in a repository."},
			want{ClassTransactional, ActionWrite, "high", "heuristic:name:create", "heuristic:name:create", "heuristic:name:create"}},
		{mcp.Tool{Name: "send_message", Description: "Posts a message to a channel."},
			want{ClassTransactional, ActionWrite, "high", "", "heuristic:name:send", ""}},
		{mcp.Tool{Name: "sync_mirror", Description: "Removes files that vanished upstream, then copies new ones."},
			want{ClassTransactional, ActionWrite, "high", "", "heuristic:name:sync", ""}},
		{mcp.Tool{Name: "get_cache", Description: "Returns a cached page; entries are deleted after a day."},
			want{ClassTransactional, ActionWrite, "high", "", "heuristic:description:delete", ""}},
		{mcp.Tool{Name: "list_things", Annotations: destructive},
			want{ClassTransactional, ActionWrite, "high", "annotation:destructiveHint; heuristic:name:list overruled", "annotation:destructiveHint; heuristic:name:list overruled", ""}},
		{mcp.Tool{Name: "frobnicate", Annotations: destructive},
			want{ClassTransactional, ActionWrite, "high", SourceDestructiveHint, SourceDestructiveHint, SourceDestructiveHint}},
		// Reads.
		{mcp.Tool{Name: "search_repositories", Description: "Search for GitHub repositories.", Annotations: readOnly},
			want{ClassInformational, ActionRead, "low", "heuristic:name:search; annotation:readOnlyHint agrees", "heuristic:name:search; annotation:readOnlyHint agrees", "heuristic:name:search; annotation:readOnlyHint agrees"}},
		{mcp.Tool{Name: "list_orders", Description: "Lists orders, newest first, in order of creation."},
			want{ClassInformational, ActionRead, "low", "heuristic:name:list", "heuristic:name:list", "heuristic:name:list"}},
		{mcp.Tool{Name: "describe_instances", Description: "Describes EC2 instances."},
			want{ClassInformational, ActionRead, "low", "", "heuristic:name:describe", ""}},
		{mcp.Tool{Name: "get_dns_record"},
			want{ClassInformational, ActionRead, "low", "", "heuristic:name:get", ""}},
		{mcp.Tool{Name: "readFile"},
			want{ClassInformational, ActionRead, "low", "", "heuristic:name:read", ""}},
		{mcp.Tool{Name: "weather_lookup", Description: "Looks up the forecast for a city."},
			want{ClassInformational, ActionRead, "low", "", "heuristic:name:lookup", ""}},
		{mcp.Tool{Name: "get_post", Description: "Returns one blog post."},
			want{ClassInformational, ActionRead, "low", "", "heuristic:name:get", ""}},
		{mcp.Tool{Name: "add", Description: "Adds two numbers.", Annotations: readOnly}, // a changing verb beats the annotation
			want{ClassTransactional, ActionWrite, "high", "heuristic:name:add; annotation:readOnlyHint overruled", "", ""}},
		{mcp.Tool{Name: "calculator", Description: "Evaluates an arithmetic expression.", Annotations: readOnly},
			want{ClassInformational, ActionRead, "low", SourceReadOnlyHint, SourceReadOnlyHint, SourceReadOnlyHint}},
		// Nothing known.
		{mcp.Tool{Name: "browser_navigate", Description: "Navigate to a URL."},
			want{ClassTransactional, ActionWrite, "high", SourceDefault, SourceDefault, SourceDefault}},
		{mcp.Tool{Name: "frobnicate", Annotations: notDestructive}, // destructiveHint false loosens nothing
			want{ClassTransactional, ActionWrite, "high", SourceDefault, SourceDefault, SourceDefault}},
	} {
		t.Run(tc.tool.Name, func(t *testing.T) {
			check(t, FromMCP("up", &tc.tool).Hint, tc.want)
		})
	}
}

// TestHintsAcme classifies the acme demo's real tool definitions.
func TestHintsAcme(t *testing.T) {
	tools := acmeTools(t)
	for name, w := range map[string]want{
		"place_order":         {ClassTransactional, ActionSpend, "high", "heuristic:name:order", "heuristic:name:order", "heuristic:name:order"},
		"issue_refund":        {ClassTransactional, ActionSpend, "high", "heuristic:name:refund; annotation:destructiveHint agrees", "heuristic:name:refund; annotation:destructiveHint agrees", "heuristic:name:refund; annotation:destructiveHint agrees"},
		"provision_servers":   {ClassTransactional, ActionInfrastructure, "high", "heuristic:name:provision", "heuristic:name:provision", "heuristic:name:provision"},
		"get_customer_record": {ClassInformational, ActionPersonalData, "high", "heuristic:name:get; annotation:readOnlyHint agrees", "heuristic:name:customer; annotation:readOnlyHint overruled", "heuristic:name:customer; annotation:readOnlyHint overruled"},
		"list_open_tickets":   {ClassInformational, ActionRead, "low", "heuristic:name:list; annotation:readOnlyHint agrees", "heuristic:name:list; annotation:readOnlyHint agrees", "heuristic:name:list; annotation:readOnlyHint agrees"},
		"search_docs":         {ClassInformational, ActionRead, "low", "heuristic:name:search; annotation:readOnlyHint agrees", "", ""},
		"echo":                {ClassInformational, ActionRead, "low", SourceReadOnlyHint, SourceReadOnlyHint, SourceReadOnlyHint},
	} {
		t.Run(name, func(t *testing.T) {
			tool, ok := tools[name]
			if !ok {
				t.Fatalf("acme has no tool %s", name)
			}
			check(t, FromMCP("acme", tool).Hint, w)
		})
	}
	if len(tools) != 7 {
		t.Errorf("acme has %d tools; this test knows 7", len(tools))
	}
}

// acmeTools lists the acme server's tools over an in-memory session.
func acmeTools(t *testing.T) map[string]*mcp.Tool {
	t.Helper()
	ctx := t.Context()
	ct, st := mcp.NewInMemoryTransports()
	ss, err := acme.NewServer(acme.Options{}).Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tools := make(map[string]*mcp.Tool)
	for _, tl := range res.Tools {
		tools[tl.Name] = tl
	}
	return tools
}

func TestFromMCP(t *testing.T) {
	tool := FromMCP("acme", &mcp.Tool{
		Name:        "place_order",
		Description: "Orders things.",
		InputSchema: map[string]any{"type": "object"},
		Annotations: &mcp.ToolAnnotations{Title: "Place an order", DestructiveHint: ptr(false), OpenWorldHint: ptr(false)},
	})
	if tool.FullName() != "acme.place_order" || tool.Title != "Place an order" || string(tool.InputSchema) != `{"type":"object"}` {
		t.Errorf("tool = %+v", tool)
	}
	wantAnn := map[string]any{"title": "Place an order", "destructiveHint": false, "openWorldHint": false}
	if !reflect.DeepEqual(tool.Annotations, wantAnn) {
		t.Errorf("annotations = %v, want %v", tool.Annotations, wantAnn)
	}
	if tool.Hint.Action != ActionSpend {
		t.Errorf("hint = %+v", tool.Hint)
	}
}

func TestMatches(t *testing.T) {
	for _, tc := range []struct {
		word, base string
		want       bool
	}{
		{"orders", "order", true}, {"ordered", "order", true}, {"charges", "charge", true},
		{"charging", "charge", true}, {"deletion", "delete", true}, {"dropped", "drop", true},
		{"transferred", "transfer", true}, {"payment", "pay", true}, {"queries", "query", true},
		{"provisioning", "provision", true}, {"servers", "server", true},
		{"payload", "pay", false}, {"address", "add", false}, {"account", "count", false},
		{"review", "view", false}, {"banner", "ban", false}, {"serverless", "server", false},
		{"postal", "post", false}, {"personal", "person", false},
	} {
		if got := matches(tc.word, keyword{base: tc.base}); got != tc.want {
			t.Errorf("matches(%q, %q) = %v, want %v", tc.word, tc.base, got, tc.want)
		}
	}
}

func TestNameWords(t *testing.T) {
	for in, want := range map[string][]string{
		"place_order":     {"place", "order"},
		"placeOrder":      {"place", "order"},
		"get-DNSRecord":   {"get", "dns", "record"},
		"s3.list_buckets": {"s3", "list", "buckets"},
		"":                nil,
	} {
		if got := nameWords(in); !reflect.DeepEqual(got, want) {
			t.Errorf("nameWords(%q) = %q, want %q", in, got, want)
		}
	}
}
