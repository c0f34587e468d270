// Package catalog knows the tools of every upstream: it learns them from
// tools/list (refreshing when an upstream says its list changed), keeps their
// schemas and annotations, and derives default classification hints from
// MCP annotations and from names and descriptions. It can also call a tool
// on an upstream for policy lookups.
//
// It must not decide: hints are defaults that the policy's operator
// overrides always win over, and annotations are treated as untrusted hints.
//
// # Discovery
//
// A Catalog keeps one go-sdk MCP client session per upstream (Streamable
// HTTP with the upstream's headers added, or one long-lived stdio child in
// its own process group, reaped on Close). Start lists every upstream's
// tools in the background, through all pages, and again every
// Options.Refresh, when the upstream sends notifications/tools/list_changed,
// when NotifyListChanged is called (bursts coalesce) and after a session
// ends by itself. A failed upstream never blocks the others: its error is
// logged with its name, shown by Status, and retried with a backoff
// doubling from 0.5 s to at most 30 s; the tools it last listed stay.
//
// # Hints
//
// Hints gives every tool a default classification. Names are split into
// words at separators and case changes (place_order, placeOrder), titles and
// descriptions into words; a keyword also matches its regular inflections
// (orders, charged, provisioning, deletion) and a few irregular forms (paid,
// bought, spent). Rule 1 says when a name reads; of rules 2 to 7 the first
// that applies gives the three values:
//
//  1. A name reads when its first word is a reading verb (search, list, get,
//     read, fetch, query, describe, find, lookup, show, view, retrieve,
//     browse, count), or its last word is and its first is no changing verb
//     (customer_lookup).
//  2. Admin: admin, permission, role, grant, revoke, privilege; a user word
//     with a verb that creates, removes or changes a user's standing
//     (delete_user, create_user, suspend_user); "user management" in a title
//     or description → transactional, admin, critical.
//  3. Spend: order, purchase, buy, pay, charge, refund, invoice, transfer,
//     spend, checkout → transactional, spend, high.
//  4. Infrastructure: provision, deploy, server, instance, cluster, scale,
//     kubernetes (k8s, kubectl), terraform, dns, vm, infrastructure,
//     firewall, vpc, container → transactional, infrastructure, high.
//  5. Personal data: customer, patient, ssn, email, profile, pii, employee,
//     contact, person, phone, passport, salary, medical, user; address and
//     record only without a spend or infrastructure word (get_dns_record is
//     not personal data) → personal-data, risk high; the class is
//     informational if the name reads, transactional if a changing verb is
//     present (rule 6), else left to annotations or the default. In titles
//     and descriptions only phrases count ("personal data", "email address",
//     "date of birth", "patient", ...): "Lists a customer's open tickets"
//     reads tickets, not the customer.
//  6. A changing verb: destructive (delete, drop, destroy, remove, purge,
//     wipe, erase, truncate, terminate, kill, deprovision) anywhere in the
//     name, title or description, or another changing verb (create, update,
//     set, send, place, issue, run, ...) in a name that does not read →
//     transactional, write, high.
//  7. A name that reads → informational, read, low.
//
// Rules 2 to 5 look at the name first and at the title and description only
// when the name names no domain. In a name that reads, admin, spend and
// infrastructure words name what is read (list_orders, describe_instances,
// list_roles), so there only personal data counts, and only destructive
// verbs make it a write (other verb-like words there are usually nouns:
// get_post, list_updates).
//
// Annotations are then merged field by field. readOnlyHint true proposes
// informational, read, low; destructiveHint true (only when not read-only)
// proposes transactional, write, high; other annotations are ignored. For
// each field the stricter value wins (the heuristic's on a tie), so an
// annotation fills in what the words did not tell and can make a value
// stricter, never looser: delete_x with readOnlyHint true stays a
// transactional, high-risk write. A field nothing told is transactional,
// write, high ("default").
//
// Classification.Source names the decisive evidence per field:
// "heuristic:<name|title|description>:<keyword>" (the keyword's base form,
// e.g. "heuristic:description:charge"), "annotation:readOnlyHint",
// "annotation:destructiveHint" or "default". When both a heuristic and an
// annotation spoke, the other is appended with its fate:
// "heuristic:name:delete; annotation:readOnlyHint overruled",
// "heuristic:name:list; annotation:readOnlyHint agrees".
//
// The acme demo's tools come out as: place_order and issue_refund spend;
// provision_servers infrastructure; get_customer_record personal-data
// (informational, high); list_open_tickets and search_docs read
// (informational, low). echo has no telling word, so its readOnlyHint alone
// makes it informational, read, low, with every source
// "annotation:readOnlyHint": an untrusted hint, visible as such, that policy
// may confirm with an override.
package catalog

import "encoding/json"

// Request classes.
const (
	ClassInformational = "informational"
	ClassTransactional = "transactional"
)

// Data-source risks, lowest first.
var Risks = []string{"low", "medium", "high", "critical"}

// Action scopes.
const (
	ActionRead           = "read"
	ActionWrite          = "write"
	ActionSpend          = "spend"
	ActionInfrastructure = "infrastructure"
	ActionPersonalData   = "personal-data"
	ActionAdmin          = "admin"
)

// Actions lists every action scope.
var Actions = []string{ActionRead, ActionWrite, ActionSpend, ActionInfrastructure, ActionPersonalData, ActionAdmin}

// Classification is a tool's three dimensions. Source says where each value
// came from, per field ("class", "risk", "action"), e.g.
// "annotation:readOnlyHint", "heuristic:name", "policy:acme.place_order",
// "upstream:acme", "default:unclassified". Hints writes the forms the
// package documentation lists ("heuristic:name:order",
// "annotation:readOnlyHint", "default", with an agreeing or overruled
// second source appended after "; ").
type Classification struct {
	Class  string            `json:"class"`
	Risk   string            `json:"risk"`
	Action string            `json:"action"`
	Source map[string]string `json:"source"`
}

// Tool is one tool of one upstream as discovered.
type Tool struct {
	Upstream    string          `json:"upstream"`
	Name        string          `json:"name"`
	Title       string          `json:"title,omitempty"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"inputSchema,omitempty"`
	// Annotations as the upstream sent them (readOnlyHint, destructiveHint,
	// idempotentHint, openWorldHint, title, ...). Untrusted.
	Annotations map[string]any `json:"annotations,omitempty"`
	// Hint is the default classification from annotations and heuristics.
	Hint Classification `json:"hint"`
}

// FullName is "upstream.tool", the name policies match on.
func (t Tool) FullName() string { return t.Upstream + "." + t.Name }
