// Package acme is a demo MCP server for a fictional company, Acme Corp. Its
// tools span the scopes interlock's policy cares about: spending money
// (place_order, issue_refund), infrastructure (provision_servers), personal
// data (get_customer_record), plain reads (list_open_tickets, search_docs) and
// a no-op (echo) for benchmarks and tests.
//
// State lives in memory behind one mutex, and every id comes from a counter,
// so a fresh server answers the same calls with the same results; tests can
// assert them. Invalid input and business-rule failures are tool errors
// (results with isError set), never protocol errors.
//
// The package must not write to stdout (a stdio server owns it) and must not
// reach the network: it is a closed world, as its openWorldHint annotations
// say. The one exception is verification mode (Options.Verifier), where the
// caller's verify.Verifier fetches interlock's JWKS and status lists.
package acme

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/verify"
)

// Limits the tools enforce as business rules.
const (
	// MaxOrderQuantity is the largest quantity place_order accepts.
	MaxOrderQuantity = 1000
	// MaxServersPerRequest is the largest count provision_servers accepts.
	MaxServersPerRequest = 20
	// maxSearchResults caps the snippets search_docs returns.
	maxSearchResults = 3
)

// Environments and Sizes are the values provision_servers accepts.
var (
	Environments = []string{"development", "staging", "production"}
	Sizes        = []string{"small", "medium", "large"}
)

// Options configures a server. The zero value is usable.
type Options struct {
	// Now returns the current time; it stamps orders, servers and refunds.
	// Default time.Now.
	Now func() time.Time
	// Logger receives one record per tool call (and, with a Verifier, one
	// per refused call). Default: discard.
	Logger *slog.Logger
	// Verifier, when set, turns on verification mode: every tools/call
	// must carry an interlock credential in
	// params._meta["io.interlock/credential"] that verifies and names
	// exactly that call, or the tool does not run (see verify.go). Nil
	// (the default) accepts every call.
	Verifier *verify.Verifier
	// Upstream is the name interlock knows this server by, which a
	// credential's action must name. Default "acme". Used only with a
	// Verifier.
	Upstream string
}

// NewServer returns an MCP server named "acme" with its seven tools
// registered and a fresh in-memory state.
func NewServer(opts Options) *mcp.Server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	st := newState(opts.Now, opts.Logger)
	s := mcp.NewServer(&mcp.Implementation{
		Name:    "acme",
		Title:   "Acme Corp operations",
		Version: "1.0.0",
	}, &mcp.ServerOptions{
		Instructions: "Acme Corp's operations tools: orders, refunds, servers, customers, support tickets and documentation. " +
			"Amounts are in US dollars.",
		Logger: opts.Logger,
	})
	st.register(s)
	if opts.Verifier != nil {
		if opts.Upstream == "" {
			opts.Upstream = DefaultUpstream
		}
		s.AddReceivingMiddleware(verifyCalls(opts.Verifier, opts.Upstream, opts.Logger))
	}
	return s
}

// Order is a placed order.
type Order struct {
	OrderID          string  `json:"order_id" jsonschema:"the order's id, e.g. ORD-1004"`
	Item             string  `json:"item" jsonschema:"what was ordered"`
	Quantity         int     `json:"quantity" jsonschema:"how many units"`
	UnitPriceUSD     float64 `json:"unit_price_usd" jsonschema:"price of one unit in US dollars"`
	TotalUSD         float64 `json:"total_usd" jsonschema:"quantity times unit price, rounded to cents"`
	RefundedTotalUSD float64 `json:"refunded_total_usd" jsonschema:"sum of refunds issued against the order"`
	Status           string  `json:"status" jsonschema:"placed, partially_refunded or refunded"`
	CreatedAt        string  `json:"created_at" jsonschema:"RFC 3339 time the order was placed"`
}

// Server is one provisioned server.
type Server struct {
	ServerID    string `json:"server_id" jsonschema:"the server's id, e.g. srv-0001"`
	Environment string `json:"environment" jsonschema:"development, staging or production"`
	Size        string `json:"size" jsonschema:"small, medium or large"`
	Status      string `json:"status" jsonschema:"provisioning"`
	CreatedAt   string `json:"created_at" jsonschema:"RFC 3339 time the request was accepted"`
}

// Address is a postal address.
type Address struct {
	Street     string `json:"street"`
	City       string `json:"city"`
	PostalCode string `json:"postal_code"`
	Country    string `json:"country" jsonschema:"ISO 3166-1 alpha-2 code"`
}

// Customer is a customer record. It is personal data.
type Customer struct {
	CustomerID string  `json:"customer_id"`
	Name       string  `json:"name"`
	Email      string  `json:"email"`
	Plan       string  `json:"plan" jsonschema:"free, team or enterprise"`
	Address    Address `json:"address"`
}

// Ticket is a support ticket.
type Ticket struct {
	TicketID string `json:"ticket_id"`
	Subject  string `json:"subject"`
	Status   string `json:"status" jsonschema:"open or closed"`
	Priority string `json:"priority" jsonschema:"low, normal or urgent"`
	OpenedAt string `json:"opened_at" jsonschema:"RFC 3339 time the ticket was opened"`
}

// Refund is an issued refund.
type Refund struct {
	RefundID         string  `json:"refund_id" jsonschema:"the refund's id, e.g. RF-0001"`
	OrderID          string  `json:"order_id"`
	AmountUSD        float64 `json:"amount_usd"`
	RefundedTotalUSD float64 `json:"refunded_total_usd" jsonschema:"sum of all refunds against the order so far"`
	Status           string  `json:"status" jsonschema:"issued"`
	CreatedAt        string  `json:"created_at"`
}

// Doc is one page of Acme's documentation.
type Doc struct {
	Title string
	URL   string
	Body  string
}

// Tool inputs and outputs.
type (
	placeOrderIn struct {
		Item         string  `json:"item" jsonschema:"the catalogue item to order, e.g. 'laptop'"`
		Quantity     int     `json:"quantity" jsonschema:"how many units, at least 1"`
		UnitPriceUSD float64 `json:"unit_price_usd" jsonschema:"price of one unit in US dollars, more than 0"`
	}
	provisionServersIn struct {
		Count       int    `json:"count" jsonschema:"how many servers, 1 to 20"`
		Environment string `json:"environment" jsonschema:"where the servers run"`
		Size        string `json:"size" jsonschema:"the machine size"`
	}
	provisionServersOut struct {
		Servers []Server `json:"servers" jsonschema:"the servers being provisioned"`
	}
	customerIn struct {
		CustomerID string `json:"customer_id" jsonschema:"the customer's id, e.g. CUST-001"`
	}
	ticketsOut struct {
		Tickets []Ticket `json:"tickets" jsonschema:"the customer's open tickets, oldest first"`
	}
	issueRefundIn struct {
		OrderID   string  `json:"order_id" jsonschema:"the order to refund, e.g. ORD-1001"`
		AmountUSD float64 `json:"amount_usd" jsonschema:"amount to refund in US dollars, more than 0 and at most what is left to refund"`
	}
	searchDocsIn struct {
		Query string `json:"query" jsonschema:"words to look for in Acme's documentation"`
	}
	echoIn struct {
		Text string `json:"text" jsonschema:"the text to return"`
	}
)

// state is the server's in-memory world.
type state struct {
	now func() time.Time
	log *slog.Logger

	mu         sync.Mutex
	orders     map[string]*Order
	nextOrder  int
	nextServer int
	nextRefund int
	customers  map[string]Customer
	tickets    map[string][]Ticket // by customer id
	docs       []Doc
}

func newState(now func() time.Time, log *slog.Logger) *state {
	st := &state{
		now:       now,
		log:       log,
		orders:    make(map[string]*Order),
		nextOrder: 1001,
		customers: make(map[string]Customer),
		tickets:   make(map[string][]Ticket),
		docs:      builtinDocs(),
	}
	for _, c := range builtinCustomers() {
		st.customers[c.CustomerID] = c
	}
	for _, t := range builtinTickets() {
		st.tickets[t.customer] = append(st.tickets[t.customer], t.Ticket)
	}
	// Three orders exist before the server starts, so refunds can be tried
	// without placing an order first.
	for _, o := range []struct {
		item  string
		qty   int
		price float64
		when  string
	}{
		{"laptop", 2, 1299.00, "2026-10-01T09:30:00Z"},
		{"monitor", 5, 249.99, "2026-10-12T14:05:00Z"},
		{"usb-c cable", 40, 9.50, "2026-10-20T08:15:00Z"},
	} {
		st.addOrder(o.item, o.qty, o.price, o.when)
	}
	return st
}

// addOrder records a new order; the caller holds mu or owns st exclusively.
func (st *state) addOrder(item string, qty int, price float64, createdAt string) *Order {
	o := &Order{
		OrderID:      fmt.Sprintf("ORD-%d", st.nextOrder),
		Item:         item,
		Quantity:     qty,
		UnitPriceUSD: price,
		TotalUSD:     cents(float64(qty) * price),
		Status:       "placed",
		CreatedAt:    createdAt,
	}
	st.nextOrder++
	st.orders[o.OrderID] = o
	return o
}

func (st *state) stamp() string { return st.now().UTC().Format(time.RFC3339) }

func (st *state) register(s *mcp.Server) {
	mcp.AddTool(s, &mcp.Tool{
		Name:  "place_order",
		Title: "Place an order",
		Description: "Orders quantity units of an item from Acme's suppliers at the given unit price and charges the company card. " +
			"Spends money. Returns the order with its id and total.",
		InputSchema: inputSchema[placeOrderIn](func(p map[string]*jsonschema.Schema) {
			p["item"].MinLength = ptr(1)
			p["quantity"].Minimum = ptr(1.0)
			p["unit_price_usd"].ExclusiveMinimum = ptr(0.0)
		}),
		Annotations: &mcp.ToolAnnotations{
			Title:           "Place an order",
			DestructiveHint: ptr(false), // creates an order; changes nothing that exists
			OpenWorldHint:   ptr(false),
		},
	}, st.placeOrder)

	mcp.AddTool(s, &mcp.Tool{
		Name:  "provision_servers",
		Title: "Provision servers",
		Description: "Starts provisioning count new servers of one size in one environment. " +
			"Changes infrastructure and costs money. Returns the new servers' ids.",
		InputSchema: inputSchema[provisionServersIn](func(p map[string]*jsonschema.Schema) {
			p["count"].Minimum = ptr(1.0)
			p["count"].Maximum = ptr(float64(MaxServersPerRequest))
			p["environment"].Enum = anys(Environments)
			p["size"].Enum = anys(Sizes)
		}),
		Annotations: &mcp.ToolAnnotations{
			Title:           "Provision servers",
			DestructiveHint: ptr(false), // adds servers; removes none
			OpenWorldHint:   ptr(false),
		},
	}, st.provisionServers)

	mcp.AddTool(s, &mcp.Tool{
		Name:  "get_customer_record",
		Title: "Get a customer record",
		Description: "Returns one customer's record: name, email, plan and postal address. " +
			"The record is personal data.",
		InputSchema: inputSchema[customerIn](func(p map[string]*jsonschema.Schema) {
			p["customer_id"].MinLength = ptr(1)
		}),
		Annotations: &mcp.ToolAnnotations{
			Title:         "Get a customer record",
			ReadOnlyHint:  true,
			OpenWorldHint: ptr(false),
		},
	}, st.getCustomerRecord)

	mcp.AddTool(s, &mcp.Tool{
		Name:        "list_open_tickets",
		Title:       "List open support tickets",
		Description: "Lists a customer's open support tickets, oldest first.",
		InputSchema: inputSchema[customerIn](func(p map[string]*jsonschema.Schema) {
			p["customer_id"].MinLength = ptr(1)
		}),
		Annotations: &mcp.ToolAnnotations{
			Title:         "List open support tickets",
			ReadOnlyHint:  true,
			OpenWorldHint: ptr(false),
		},
	}, st.listOpenTickets)

	mcp.AddTool(s, &mcp.Tool{
		Name:  "issue_refund",
		Title: "Issue a refund",
		Description: "Refunds part or all of an order to the customer's original payment method. " +
			"Moves money out and cannot be undone. Returns the refund's id.",
		InputSchema: inputSchema[issueRefundIn](func(p map[string]*jsonschema.Schema) {
			p["order_id"].MinLength = ptr(1)
			p["amount_usd"].ExclusiveMinimum = ptr(0.0)
		}),
		Annotations: &mcp.ToolAnnotations{
			Title:           "Issue a refund",
			DestructiveHint: ptr(true), // changes the order's balance irreversibly
			OpenWorldHint:   ptr(false),
		},
	}, st.issueRefund)

	mcp.AddTool(s, &mcp.Tool{
		Name:        "search_docs",
		Title:       "Search the documentation",
		Description: "Searches Acme's internal documentation and returns up to three matching snippets, best first.",
		InputSchema: inputSchema[searchDocsIn](func(p map[string]*jsonschema.Schema) {
			p["query"].MinLength = ptr(1)
		}),
		Annotations: &mcp.ToolAnnotations{
			Title:         "Search the documentation",
			ReadOnlyHint:  true,
			OpenWorldHint: ptr(false),
		},
	}, st.searchDocs)

	mcp.AddTool(s, &mcp.Tool{
		Name:        "echo",
		Title:       "Echo",
		Description: "Returns the text it is given, unchanged.",
		InputSchema: inputSchema[echoIn](nil),
		Annotations: &mcp.ToolAnnotations{
			Title:         "Echo",
			ReadOnlyHint:  true,
			OpenWorldHint: ptr(false),
		},
	}, st.echo)
}

func (st *state) placeOrder(_ context.Context, _ *mcp.CallToolRequest, in placeOrderIn) (*mcp.CallToolResult, Order, error) {
	item := strings.TrimSpace(in.Item)
	switch {
	case item == "":
		return nil, Order{}, errors.New("item must not be empty")
	case in.Quantity <= 0:
		return nil, Order{}, fmt.Errorf("quantity must be positive, got %d", in.Quantity)
	case in.Quantity > MaxOrderQuantity:
		return nil, Order{}, fmt.Errorf("quantity %d is over the limit of %d per order", in.Quantity, MaxOrderQuantity)
	case !positive(in.UnitPriceUSD):
		return nil, Order{}, fmt.Errorf("unit_price_usd must be a positive number, got %v", in.UnitPriceUSD)
	}
	st.mu.Lock()
	o := *st.addOrder(item, in.Quantity, in.UnitPriceUSD, st.stamp())
	st.mu.Unlock()
	st.log.Info("acme: order placed", "order_id", o.OrderID, "total_usd", o.TotalUSD)
	return nil, o, nil
}

func (st *state) provisionServers(_ context.Context, _ *mcp.CallToolRequest, in provisionServersIn) (*mcp.CallToolResult, provisionServersOut, error) {
	switch {
	case in.Count <= 0:
		return nil, provisionServersOut{}, fmt.Errorf("count must be positive, got %d", in.Count)
	case in.Count > MaxServersPerRequest:
		return nil, provisionServersOut{}, fmt.Errorf("count %d is over the limit of %d per request", in.Count, MaxServersPerRequest)
	case !slices.Contains(Environments, in.Environment):
		return nil, provisionServersOut{}, fmt.Errorf("environment must be one of %s, got %q", strings.Join(Environments, ", "), in.Environment)
	case !slices.Contains(Sizes, in.Size):
		return nil, provisionServersOut{}, fmt.Errorf("size must be one of %s, got %q", strings.Join(Sizes, ", "), in.Size)
	}
	out := provisionServersOut{Servers: make([]Server, 0, in.Count)}
	st.mu.Lock()
	at := st.stamp()
	for range in.Count {
		st.nextServer++
		out.Servers = append(out.Servers, Server{
			ServerID:    fmt.Sprintf("srv-%04d", st.nextServer),
			Environment: in.Environment,
			Size:        in.Size,
			Status:      "provisioning",
			CreatedAt:   at,
		})
	}
	st.mu.Unlock()
	st.log.Info("acme: servers provisioning", "count", in.Count, "environment", in.Environment, "size", in.Size)
	return nil, out, nil
}

func (st *state) getCustomerRecord(_ context.Context, _ *mcp.CallToolRequest, in customerIn) (*mcp.CallToolResult, Customer, error) {
	st.mu.Lock()
	c, ok := st.customers[strings.TrimSpace(in.CustomerID)]
	st.mu.Unlock()
	if !ok {
		return nil, Customer{}, fmt.Errorf("no customer with id %q", in.CustomerID)
	}
	st.log.Info("acme: customer record read", "customer_id", c.CustomerID)
	return nil, c, nil
}

func (st *state) listOpenTickets(_ context.Context, _ *mcp.CallToolRequest, in customerIn) (*mcp.CallToolResult, ticketsOut, error) {
	id := strings.TrimSpace(in.CustomerID)
	st.mu.Lock()
	_, known := st.customers[id]
	out := ticketsOut{Tickets: []Ticket{}}
	for _, t := range st.tickets[id] {
		if t.Status == "open" {
			out.Tickets = append(out.Tickets, t)
		}
	}
	st.mu.Unlock()
	if !known {
		return nil, ticketsOut{}, fmt.Errorf("no customer with id %q", in.CustomerID)
	}
	st.log.Info("acme: tickets listed", "customer_id", id, "open", len(out.Tickets))
	return nil, out, nil
}

func (st *state) issueRefund(_ context.Context, _ *mcp.CallToolRequest, in issueRefundIn) (*mcp.CallToolResult, Refund, error) {
	if !positive(in.AmountUSD) {
		return nil, Refund{}, fmt.Errorf("amount_usd must be a positive number, got %v", in.AmountUSD)
	}
	amount := cents(in.AmountUSD)
	st.mu.Lock()
	defer st.mu.Unlock()
	o, ok := st.orders[strings.TrimSpace(in.OrderID)]
	if !ok {
		return nil, Refund{}, fmt.Errorf("no order with id %q", in.OrderID)
	}
	left := cents(o.TotalUSD - o.RefundedTotalUSD)
	if amount > left {
		return nil, Refund{}, fmt.Errorf("amount_usd %.2f is more than the %.2f left to refund on order %s", amount, left, o.OrderID)
	}
	o.RefundedTotalUSD = cents(o.RefundedTotalUSD + amount)
	o.Status = "partially_refunded"
	if o.RefundedTotalUSD >= o.TotalUSD {
		o.Status = "refunded"
	}
	st.nextRefund++
	r := Refund{
		RefundID:         fmt.Sprintf("RF-%04d", st.nextRefund),
		OrderID:          o.OrderID,
		AmountUSD:        amount,
		RefundedTotalUSD: o.RefundedTotalUSD,
		Status:           "issued",
		CreatedAt:        st.stamp(),
	}
	st.log.Info("acme: refund issued", "refund_id", r.RefundID, "order_id", r.OrderID, "amount_usd", r.AmountUSD)
	return nil, r, nil
}

func (st *state) searchDocs(_ context.Context, _ *mcp.CallToolRequest, in searchDocsIn) (*mcp.CallToolResult, any, error) {
	terms := strings.Fields(strings.ToLower(in.Query))
	if len(terms) == 0 {
		return nil, nil, errors.New("query must contain at least one word")
	}
	type hit struct {
		doc   Doc
		score int
	}
	var hits []hit
	for _, d := range st.docs { // docs never change after newState
		text := strings.ToLower(d.Title + " " + d.Body)
		score := 0
		for _, t := range terms {
			score += strings.Count(text, t)
		}
		if score > 0 {
			hits = append(hits, hit{d, score})
		}
	}
	sort.SliceStable(hits, func(i, j int) bool { return hits[i].score > hits[j].score })
	if len(hits) > maxSearchResults {
		hits = hits[:maxSearchResults]
	}
	st.log.Info("acme: docs searched", "terms", len(terms), "hits", len(hits))
	res := &mcp.CallToolResult{}
	if len(hits) == 0 {
		res.Content = []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("No documentation matches %q.", in.Query)}}
		return res, nil, nil
	}
	for _, h := range hits {
		res.Content = append(res.Content, &mcp.TextContent{
			Text: fmt.Sprintf("%s (%s)\n%s", h.doc.Title, h.doc.URL, h.doc.Body),
		})
	}
	return res, nil, nil
}

func (st *state) echo(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
}

// inputSchema infers T's schema and lets edit adjust its properties.
func inputSchema[T any](edit func(props map[string]*jsonschema.Schema)) *jsonschema.Schema {
	s, err := jsonschema.For[T](nil)
	if err != nil {
		panic(fmt.Sprintf("acme: schema for %T: %v", *new(T), err)) // a programming error, caught by tests
	}
	if edit != nil {
		edit(s.Properties)
	}
	return s
}

func positive(f float64) bool { return f > 0 && !math.IsInf(f, 0) && !math.IsNaN(f) }

// cents rounds a dollar amount to whole cents.
func cents(f float64) float64 { return math.Round(f*100) / 100 }

func ptr[T any](v T) *T { return &v }

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
