package catalog

import (
	"encoding/json"
	"strings"
	"unicode"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Sources of a hint (Classification.Source values start with one of them).
const (
	// SourceDefault marks a value nothing told us: the strict default.
	SourceDefault = "default"
	// SourceReadOnlyHint and SourceDestructiveHint mark values taken from
	// the upstream's (untrusted) MCP annotations.
	SourceReadOnlyHint    = "annotation:readOnlyHint"
	SourceDestructiveHint = "annotation:destructiveHint"
	// sourceHeuristic prefixes heuristic sources:
	// "heuristic:<name|title|description>:<keyword>".
	sourceHeuristic = "heuristic:"
)

// Words joining a decisive source to another that agreed with it or lost
// to it, e.g. "heuristic:name:delete; annotation:readOnlyHint overruled".
const (
	agrees    = " agrees"
	overruled = " overruled"
)

// FromMCP converts a tool as the go-sdk client decoded it from tools/list
// into a catalog Tool of upstream, with its default classification (Hints).
func FromMCP(upstream string, t *mcp.Tool) Tool {
	tool := Tool{
		Upstream:    upstream,
		Name:        t.Name,
		Title:       t.Title,
		Description: t.Description,
		Annotations: annotationMap(t.Annotations),
	}
	if tool.Title == "" && t.Annotations != nil {
		tool.Title = t.Annotations.Title
	}
	if t.InputSchema != nil {
		if raw, err := json.Marshal(t.InputSchema); err == nil {
			tool.InputSchema = raw
		}
	}
	tool.Hint = Hints(tool.Name, tool.Title, tool.Description, tool.Annotations)
	return tool
}

// annotationMap renders annotations as a JSON-shaped map. The go-sdk
// decodes readOnlyHint and idempotentHint into plain booleans, so an absent
// hint and an explicit false look the same; both are the MCP default, and
// only true is kept. destructiveHint and openWorldHint are kept whenever
// the upstream sent them.
func annotationMap(a *mcp.ToolAnnotations) map[string]any {
	if a == nil {
		return nil
	}
	m := make(map[string]any)
	if a.Title != "" {
		m["title"] = a.Title
	}
	if a.ReadOnlyHint {
		m["readOnlyHint"] = true
	}
	if a.IdempotentHint {
		m["idempotentHint"] = true
	}
	if a.DestructiveHint != nil {
		m["destructiveHint"] = *a.DestructiveHint
	}
	if a.OpenWorldHint != nil {
		m["openWorldHint"] = *a.OpenWorldHint
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// Hints returns a tool's default classification from its name, title,
// description and MCP annotations (a map as in Tool.Annotations; only
// boolean true readOnlyHint and destructiveHint count). The rules are in the
// package documentation. Every field's Source says where its value came
// from. The result is a hint: operator overrides win over it, and it never
// trusts an annotation to loosen what the name or description suggests.
func Hints(name, title, description string, annotations map[string]any) Classification {
	h := heuristics(name, title, description)

	var ann proposal
	readOnly := annotations["readOnlyHint"] == true
	switch {
	case readOnly:
		ann = proposal{
			class:  value{ClassInformational, SourceReadOnlyHint},
			action: value{ActionRead, SourceReadOnlyHint},
			risk:   value{"low", SourceReadOnlyHint},
		}
	case annotations["destructiveHint"] == true: // meaningful only when not read-only
		ann = proposal{
			class:  value{ClassTransactional, SourceDestructiveHint},
			action: value{ActionWrite, SourceDestructiveHint},
			risk:   value{"high", SourceDestructiveHint},
		}
	}

	class := merge(h.class, ann.class, value{ClassTransactional, SourceDefault}, classRank)
	action := merge(h.action, ann.action, value{ActionWrite, SourceDefault}, actionRank)
	risk := merge(h.risk, ann.risk, value{"high", SourceDefault}, riskRank)
	return Classification{
		Class:  class.v,
		Action: action.v,
		Risk:   risk.v,
		Source: map[string]string{"class": class.src, "action": action.src, "risk": risk.src},
	}
}

// value is one proposed field value and where it came from; v == "" means
// the proposer has no opinion.
type value struct{ v, src string }

// proposal is what one kind of evidence says about the three fields.
type proposal struct{ class, action, risk value }

// merge combines the heuristic's and the annotation's value of one field:
// the stricter wins (the heuristic on a tie), the other is recorded as
// agreeing or overruled, and with neither the default applies.
func merge(h, a, def value, rank func(string) int) value {
	switch {
	case h.v == "" && a.v == "":
		return def
	case a.v == "":
		return h
	case h.v == "":
		return a
	}
	hr, ar := rank(h.v), rank(a.v)
	switch {
	case ar > hr:
		return value{a.v, a.src + "; " + h.src + overruled}
	case ar < hr:
		return value{h.v, h.src + "; " + a.src + overruled}
	default:
		return value{h.v, h.src + "; " + a.src + agrees}
	}
}

func classRank(c string) int {
	if c == ClassInformational {
		return 0
	}
	return 1
}

func riskRank(r string) int {
	for i, x := range Risks {
		if x == r {
			return i
		}
	}
	return len(Risks)
}

// actionRank orders actions for merging: read is the loosest; every other
// scope is equally strict here, so an annotation's write agrees with a more
// specific scope a heuristic found (spend, admin, ...) and the heuristic's
// scope stays.
func actionRank(a string) int {
	if a == ActionRead {
		return 0
	}
	return 1
}

// Word categories the heuristics look for.
type category int

const (
	catNone category = iota
	catRead
	catWrite
	catDestructive
	catPersonal
	catPersonalWeak // personal only when no spend or infrastructure word is present
	catInfra
	catSpend
	catAdmin
	catUser // "user"/"users": personal data; admin with a managing verb
)

// keyword is a vocabulary entry: the base word (used in Source) and the
// category. Forms is the irregular forms that also match.
type keyword struct {
	base  string
	cat   category
	forms []string
}

// vocabulary is built per call (no package state); it is small.
func vocabulary() []keyword {
	return []keyword{
		// Reading verbs (count only as the first word of a name, or the last
		// when the first is no other verb).
		{"search", catRead, nil}, {"list", catRead, nil}, {"get", catRead, nil},
		{"read", catRead, nil}, {"fetch", catRead, nil}, {"query", catRead, []string{"queries"}},
		{"describe", catRead, nil}, {"find", catRead, nil}, {"lookup", catRead, nil},
		{"show", catRead, nil}, {"view", catRead, nil}, {"retrieve", catRead, nil},
		{"browse", catRead, nil}, {"count", catRead, nil},

		// Destructive verbs.
		{"delete", catDestructive, nil}, {"drop", catDestructive, nil},
		{"destroy", catDestructive, []string{"destruction"}}, {"remove", catDestructive, []string{"removal"}},
		{"purge", catDestructive, nil}, {"wipe", catDestructive, nil}, {"erase", catDestructive, nil},
		{"truncate", catDestructive, nil}, {"terminate", catDestructive, nil}, {"kill", catDestructive, nil},
		{"deprovision", catDestructive, nil},

		// Other changing verbs.
		{"create", catWrite, nil}, {"update", catWrite, nil}, {"set", catWrite, nil},
		{"add", catWrite, nil}, {"insert", catWrite, nil}, {"modify", catWrite, nil},
		{"edit", catWrite, nil}, {"write", catWrite, nil}, {"put", catWrite, nil},
		{"patch", catWrite, nil}, {"post", catWrite, nil}, {"send", catWrite, nil},
		{"submit", catWrite, nil}, {"upload", catWrite, nil}, {"publish", catWrite, nil},
		{"cancel", catWrite, nil}, {"close", catWrite, nil}, {"approve", catWrite, nil},
		{"assign", catWrite, nil}, {"rename", catWrite, nil}, {"move", catWrite, nil},
		{"reset", catWrite, nil}, {"issue", catWrite, nil}, {"place", catWrite, nil},
		{"apply", catWrite, nil}, {"execute", catWrite, nil}, {"run", catWrite, nil},
		{"start", catWrite, nil}, {"stop", catWrite, nil}, {"restart", catWrite, nil},
		{"trigger", catWrite, nil}, {"enable", catWrite, nil}, {"disable", catWrite, nil},
		{"import", catWrite, nil}, {"sync", catWrite, nil}, {"invite", catWrite, nil},
		{"suspend", catWrite, nil}, {"deactivate", catWrite, nil}, {"ban", catWrite, nil},
		{"manage", catWrite, nil},

		// Spending money.
		{"order", catSpend, nil}, {"purchase", catSpend, nil}, {"buy", catSpend, []string{"bought"}},
		{"pay", catSpend, []string{"paid", "payout", "payouts"}}, {"charge", catSpend, nil},
		{"refund", catSpend, nil}, {"invoice", catSpend, nil}, {"transfer", catSpend, nil},
		{"spend", catSpend, []string{"spent"}}, {"checkout", catSpend, nil},

		// Infrastructure.
		{"provision", catInfra, nil}, {"deploy", catInfra, nil}, {"server", catInfra, nil},
		{"instance", catInfra, nil}, {"cluster", catInfra, nil}, {"scale", catInfra, nil},
		{"kubernetes", catInfra, []string{"k8s", "kubectl"}}, {"terraform", catInfra, nil},
		{"dns", catInfra, nil}, {"vm", catInfra, []string{"vms"}}, {"infrastructure", catInfra, nil},
		{"firewall", catInfra, nil}, {"vpc", catInfra, nil}, {"container", catInfra, nil},

		// Administration.
		{"admin", catAdmin, []string{"administrator", "administrators", "administration", "administrative"}},
		{"permission", catAdmin, nil}, {"role", catAdmin, nil}, {"grant", catAdmin, nil},
		{"revoke", catAdmin, []string{"revocation"}}, {"privilege", catAdmin, nil},

		// Personal data.
		{"customer", catPersonal, nil}, {"patient", catPersonal, nil}, {"ssn", catPersonal, nil},
		{"email", catPersonal, nil}, {"profile", catPersonal, nil}, {"pii", catPersonal, nil},
		{"employee", catPersonal, nil}, {"contact", catPersonal, nil}, {"person", catPersonal, []string{"people"}},
		{"phone", catPersonal, nil}, {"passport", catPersonal, nil}, {"salary", catPersonal, []string{"salaries"}},
		{"medical", catPersonal, nil},
		{"address", catPersonalWeak, nil}, {"record", catPersonalWeak, nil},
		{"user", catUser, nil},
	}
}

// descriptionPhrases are the personal-data signals in titles and
// descriptions. Single nouns such as "customer" are not enough there
// ("Lists a customer's open tickets" reads tickets, not the customer).
func descriptionPhrases() []string {
	return []string{
		"personal data", "personal information", "personally identifiable", "pii", "ssn",
		"social security", "date of birth", "email address", "postal address", "home address",
		"phone number", "medical record", "health record", "patient",
	}
}

// descriptionNoise are phrases whose words are not the signals they look
// like ("in order to", "free of charge").
func descriptionNoise() []string {
	return []string{
		"in order", "order by", "ordered by", "sort order", "sorted order", "in the order",
		"free of charge", "in charge",
	}
}

// hit is one keyword found in one text.
type hit struct {
	cat    category
	where  string // "name", "title" or "description"
	base   string
	offset int // word position, for "first" and "last"
}

func (h hit) source() string { return sourceHeuristic + h.where + ":" + h.base }

// scan finds every vocabulary word in words.
func scan(words []string, where string, vocab []keyword) []hit {
	var hits []hit
	for i, w := range words {
		for _, k := range vocab {
			if matches(w, k) {
				hits = append(hits, hit{cat: k.cat, where: where, base: k.base, offset: i})
				break
			}
		}
	}
	return hits
}

// matches reports whether word is keyword k or a regular inflection of it
// (plural, past, gerund, -er, -ment, -ion, with the final e dropped or the
// final consonant doubled where English does), or one of k's irregular
// forms.
func matches(word string, k keyword) bool {
	if word == k.base {
		return true
	}
	for _, f := range k.forms {
		if word == f {
			return true
		}
	}
	if len(k.base) < 3 {
		return false
	}
	suffixes := func(rest string, allowed ...string) bool {
		for _, s := range allowed {
			if rest == s {
				return true
			}
		}
		return false
	}
	if rest, ok := strings.CutPrefix(word, k.base); ok &&
		suffixes(rest, "s", "es", "ed", "ing", "er", "ers", "ment", "ments", "ion", "ions") {
		return true
	}
	if stem, ok := strings.CutSuffix(k.base, "e"); ok {
		if rest, ok := strings.CutPrefix(word, stem); ok && suffixes(rest, "ed", "ing", "ion", "ions") {
			return true
		}
	}
	last := k.base[len(k.base)-1:]
	if rest, ok := strings.CutPrefix(word, k.base+last); ok && suffixes(rest, "ed", "ing") {
		return true
	}
	if stem, ok := strings.CutSuffix(k.base, "y"); ok {
		if rest, ok := strings.CutPrefix(word, stem); ok && rest == "ies" {
			return true
		}
	}
	return false
}

// nameWords splits a tool name into lower-case words at separators, at
// lower-to-upper case changes and at letter-digit boundaries:
// "placeOrder", "place_order" and "place-order" all give [place order].
func nameWords(name string) []string {
	var words []string
	var cur []rune
	flush := func() {
		if len(cur) > 0 {
			words = append(words, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	rs := []rune(name)
	for i, r := range rs {
		switch {
		case !unicode.IsLetter(r) && !unicode.IsDigit(r):
			flush()
			continue
		case i > 0 && unicode.IsUpper(r) && (unicode.IsLower(rs[i-1]) || unicode.IsDigit(rs[i-1])):
			flush()
		case i > 0 && unicode.IsUpper(r) && unicode.IsUpper(rs[i-1]) && i+1 < len(rs) && unicode.IsLower(rs[i+1]):
			flush() // "DNSRecord" → dns record
		}
		cur = append(cur, r)
	}
	flush()
	return words
}

// textWords splits free text into lower-case words, dropping the noise
// phrases.
func textWords(text string) []string {
	words := strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
	joined := " " + strings.Join(words, " ") + " "
	for _, p := range descriptionNoise() {
		joined = strings.ReplaceAll(joined, " "+p+" ", " ")
	}
	return strings.Fields(joined)
}

// containsPhrase reports whether words contain phrase (space-separated words).
func containsPhrase(words []string, phrase string) bool {
	return strings.Contains(" "+strings.Join(words, " ")+" ", " "+phrase+" ")
}

// heuristics derives what a tool's name, title and description say about
// it. Fields it cannot tell are left empty.
func heuristics(name, title, description string) proposal {
	vocab := vocabulary()
	nw := nameWords(name)
	nameHits := scan(nw, "name", vocab)

	first := func(cat category, hits []hit) (hit, bool) {
		for _, h := range hits {
			if h.cat == cat {
				return h, true
			}
		}
		return hit{}, false
	}

	// Is the name a read? Its first word is a reading verb, or its last one
	// is and the first word is no other verb ("customer_lookup").
	var readVerb hit
	var isRead bool
	if len(nameHits) > 0 && nameHits[0].offset == 0 && nameHits[0].cat == catRead {
		readVerb, isRead = nameHits[0], true
	} else if n := len(nameHits); n > 0 && nameHits[n-1].offset == len(nw)-1 && nameHits[n-1].cat == catRead {
		firstIsVerb := len(nameHits) > 0 && nameHits[0].offset == 0 &&
			(nameHits[0].cat == catWrite || nameHits[0].cat == catDestructive)
		if !firstIsVerb {
			readVerb, isRead = nameHits[n-1], true
		}
	}

	// Titles and descriptions: domain words and destructive verbs, and
	// personal data only as phrases.
	var textHits []hit
	for _, t := range []struct{ where, text string }{{"title", title}, {"description", description}} {
		words := textWords(t.text)
		for _, h := range scan(words, t.where, vocab) {
			switch h.cat {
			case catSpend, catInfra, catAdmin, catDestructive:
				textHits = append(textHits, h)
			}
		}
		for _, p := range descriptionPhrases() {
			if containsPhrase(words, p) {
				textHits = append(textHits, hit{cat: catPersonal, where: t.where, base: p})
				break
			}
		}
		if containsPhrase(words, "user management") || containsPhrase(words, "manage users") {
			textHits = append(textHits, hit{cat: catAdmin, where: t.where, base: "user management"})
		}
	}

	// A changing verb in the name: destructive first, then other writes.
	// In a name that reads, only destructive verbs count (other verb-like
	// words there are usually nouns: get_post, list_updates).
	changeVerb, changes := first(catDestructive, nameHits)
	if !changes && !isRead {
		changeVerb, changes = first(catWrite, nameHits)
	}
	if !changes {
		changeVerb, changes = first(catDestructive, textHits)
	}

	// The domain (admin > spend > infrastructure > personal data), from the
	// name first, then from title and description. In a name that reads,
	// spend, infrastructure and admin words name what is read
	// (list_orders, describe_instances), so only personal data counts.
	domain := func(hits []hit, reading bool) (hit, bool) {
		if !reading {
			// User management: a user word with a verb that creates,
			// removes or changes the standing of a user.
			if u, ok := first(catUser, hits); ok {
				for _, h := range hits {
					if h.cat == catDestructive || (h.cat == catWrite && managesUsers(h.base)) {
						return hit{cat: catAdmin, where: u.where, base: h.base + "_user"}, true
					}
				}
			}
			for _, c := range []category{catAdmin, catSpend, catInfra} {
				if h, ok := first(c, hits); ok {
					return h, true
				}
			}
		}
		if h, ok := first(catPersonal, hits); ok {
			return h, true
		}
		if h, ok := first(catUser, hits); ok {
			return hit{cat: catPersonal, where: h.where, base: h.base}, true
		}
		if h, ok := first(catPersonalWeak, hits); ok {
			if _, spend := first(catSpend, hits); !spend {
				if _, infra := first(catInfra, hits); !infra {
					return hit{cat: catPersonal, where: h.where, base: h.base}, true
				}
			}
		}
		return hit{}, false
	}
	dom, ok := domain(nameHits, isRead)
	if !ok {
		var textDomain []hit
		for _, h := range textHits {
			if !isRead || h.cat == catPersonal {
				textDomain = append(textDomain, h)
			}
		}
		dom, ok = domain(textDomain, false)
	}

	var p proposal
	switch {
	case ok && dom.cat == catAdmin:
		p = proposal{value{ClassTransactional, dom.source()}, value{ActionAdmin, dom.source()}, value{"critical", dom.source()}}
	case ok && dom.cat == catSpend:
		p = proposal{value{ClassTransactional, dom.source()}, value{ActionSpend, dom.source()}, value{"high", dom.source()}}
	case ok && dom.cat == catInfra:
		p = proposal{value{ClassTransactional, dom.source()}, value{ActionInfrastructure, dom.source()}, value{"high", dom.source()}}
	case ok && dom.cat == catPersonal:
		p = proposal{action: value{ActionPersonalData, dom.source()}, risk: value{"high", dom.source()}}
		switch {
		case changes:
			p.class = value{ClassTransactional, changeVerb.source()}
		case isRead:
			p.class = value{ClassInformational, readVerb.source()}
		}
	case changes:
		p = proposal{value{ClassTransactional, changeVerb.source()}, value{ActionWrite, changeVerb.source()}, value{"high", changeVerb.source()}}
	case isRead:
		p = proposal{value{ClassInformational, readVerb.source()}, value{ActionRead, readVerb.source()}, value{"low", readVerb.source()}}
	}
	return p
}

// managesUsers reports whether a changing verb applied to a user is user
// management (admin) rather than an edit of the user's data.
func managesUsers(verb string) bool {
	switch verb {
	case "create", "add", "invite", "disable", "enable", "suspend", "deactivate", "ban", "manage", "reset":
		return true
	}
	return false
}
