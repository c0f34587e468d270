package scim

import (
	"encoding/json"
	"strings"
)

// This file reads the two places SCIM puts expressions: PATCH paths
// (RFC 7644 §3.5.2, `emails[type eq "work"].value`) and list filters
// (§3.4.2.2). Only what Entra ID, Okta and the IPSIE profile use is
// supported: `eq`, joined by `and`, on userName, externalId, id and emails;
// anything else is an invalidFilter, never a broader match.

type tokKind int

const (
	tWord tokKind = iota
	tString
	tLBrack
	tRBrack
	tParen
)

type token struct {
	kind tokKind
	text string // as written
	str  string // decoded, for tString
}

func lex(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch c {
		case ' ', '\t', '\r', '\n':
			i++
		case '[':
			toks = append(toks, token{kind: tLBrack, text: "["})
			i++
		case ']':
			toks = append(toks, token{kind: tRBrack, text: "]"})
			i++
		case '(', ')':
			toks = append(toks, token{kind: tParen, text: string(c)})
			i++
		case '"':
			j := i + 1
			for j < len(s) && s[j] != '"' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, badRequest(invalidFilter, "unterminated string in filter")
			}
			raw := s[i : j+1]
			var str string
			if err := json.Unmarshal([]byte(raw), &str); err != nil {
				return nil, badRequest(invalidFilter, "bad string %s in filter", q(raw))
			}
			toks = append(toks, token{kind: tString, text: raw, str: str})
			i = j + 1
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\r\n[]()\"", rune(s[j])) {
				j++
			}
			toks = append(toks, token{kind: tWord, text: s[i:j]})
			i = j
		}
	}
	return toks, nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// readName reads an ATTRNAME (RFC 7644 §3.10: ALPHA *(nameChar); "$ref"
// too) from the start of s.
func readName(s string) (name, rest string) {
	i := 0
	for i < len(s) {
		c := s[i]
		alpha := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if alpha || (i == 0 && c == '$') || (i > 0 && (c >= '0' && c <= '9' || c == '-' || c == '_')) {
			i++
			continue
		}
		break
	}
	return s[:i], s[i:]
}

// valCond is `attr eq value` inside brackets; value is a string, bool,
// json.Number or nil.
type valCond struct {
	attr  string // lower-cased
	value any
}

type valFilter []valCond

// parseValFilter reads `attr eq value (and attr eq value)*`.
func parseValFilter(toks []token) (valFilter, error) {
	var vf valFilter
	for i := 0; ; {
		if i+3 > len(toks) || toks[i].kind != tWord || toks[i+1].kind != tWord {
			return nil, badRequest(invalidFilter, "a value filter must be attribute eq value")
		}
		name, rest := readName(toks[i].text)
		if name == "" || rest != "" {
			return nil, badRequest(invalidFilter, "bad attribute %s in value filter", q(toks[i].text))
		}
		if !strings.EqualFold(toks[i+1].text, "eq") {
			return nil, badRequest(invalidFilter, "only the eq operator is supported, not %s", q(toks[i+1].text))
		}
		v, err := literal(toks[i+2])
		if err != nil {
			return nil, err
		}
		vf = append(vf, valCond{attr: strings.ToLower(name), value: v})
		i += 3
		if i == len(toks) {
			return vf, nil
		}
		if toks[i].kind != tWord || !strings.EqualFold(toks[i].text, "and") {
			return nil, badRequest(invalidFilter, "only and may join value filter terms")
		}
		i++
	}
}

func literal(t token) (any, error) {
	if t.kind == tString {
		return t.str, nil
	}
	if t.kind == tWord {
		switch strings.ToLower(t.text) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		case "null":
			return nil, nil
		}
		var n json.Number
		if json.Unmarshal([]byte(t.text), &n) == nil {
			return n, nil
		}
	}
	return nil, badRequest(invalidFilter, "bad value %s in filter", q(t.text))
}

// checkEmailFilter: a filter on emails may test value, type and primary.
func checkEmailFilter(vf valFilter) error {
	for _, c := range vf {
		switch c.attr {
		case "value", "type":
			if _, ok := c.value.(string); !ok {
				return badRequest(invalidFilter, "emails.%s is compared with a string", c.attr)
			}
		case "primary":
			if _, ok := condBool(c.value); !ok {
				return badRequest(invalidFilter, "emails.primary is compared with true or false")
			}
		default:
			return badRequest(invalidFilter, "emails cannot be filtered on %s", q(c.attr))
		}
	}
	return nil
}

func condBool(v any) (bool, bool) {
	switch b := v.(type) {
	case bool:
		return b, true
	case string:
		if strings.EqualFold(b, "true") || strings.EqualFold(b, "false") {
			return strings.EqualFold(b, "true"), true
		}
	}
	return false, false
}

// matchEmail: value and type compare case-insensitively (caseExact=false).
func (vf valFilter) matchEmail(e Email) bool {
	for _, c := range vf {
		switch c.attr {
		case "value":
			if s, _ := c.value.(string); !strings.EqualFold(s, e.Value) {
				return false
			}
		case "type":
			if s, _ := c.value.(string); !strings.EqualFold(s, e.Type) {
				return false
			}
		case "primary":
			if b, _ := condBool(c.value); b != e.Primary {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// attrPath is a parsed PATCH path.
type attrPath struct {
	raw    string
	ext    bool   // an enterprise extension attribute: accepted, not kept
	attr   string // lower-cased
	filter valFilter
	sub    string // lower-cased sub-attribute, or ""
}

// parsePath reads `[URN:]attr[.sub]` or `[URN:]attr[filter][.sub]`.
func parsePath(p string) (attrPath, error) {
	ap := attrPath{raw: p}
	s := strings.TrimSpace(p)
	if hasPrefixFold(s, "urn:") {
		switch {
		case hasPrefixFold(s, schemaUser+":"):
			s = s[len(schemaUser)+1:]
		case strings.EqualFold(s, schemaEnterpriseUser) || hasPrefixFold(s, schemaEnterpriseUser+":"):
			ap.ext = true
			return ap, nil
		default:
			return ap, badRequest(invalidPath, "unsupported schema in path %s", q(p))
		}
	}
	name, rest := readName(s)
	if name == "" || name[0] == '$' {
		return ap, badRequest(invalidPath, "malformed path %s", q(p))
	}
	ap.attr = strings.ToLower(name)
	if strings.HasPrefix(rest, "[") {
		end, inStr := -1, false
		for i := 1; i < len(rest) && end < 0; i++ {
			switch {
			case inStr && rest[i] == '\\':
				i++
			case rest[i] == '"':
				inStr = !inStr
			case !inStr && rest[i] == ']':
				end = i
			}
		}
		if end < 0 {
			return ap, badRequest(invalidPath, "malformed path %s", q(p))
		}
		toks, err := lex(rest[1:end])
		if err != nil {
			return ap, err
		}
		if ap.filter, err = parseValFilter(toks); err != nil {
			return ap, err
		}
		rest = rest[end+1:]
	}
	if strings.HasPrefix(rest, ".") {
		var sub string
		sub, rest = readName(rest[1:])
		if sub == "" {
			return ap, badRequest(invalidPath, "malformed path %s", q(p))
		}
		ap.sub = strings.ToLower(sub)
	}
	if rest != "" {
		return ap, badRequest(invalidPath, "malformed path %s", q(p))
	}
	return ap, nil
}

// clause is one `eq` term of a list filter.
type clause struct {
	dir   Filter // what the Directory can evaluate
	exact bool   // dir alone decides the clause
	id    string // an `id eq` clause: read with GetUser
	match func(User) bool
}

type filter []clause

func (f filter) id() string {
	for _, c := range f {
		if c.id != "" {
			return c.id
		}
	}
	return ""
}

func (f filter) match(u User) bool {
	for _, c := range f {
		if !c.match(u) {
			return false
		}
	}
	return true
}

func anyEmail(u User, ok func(Email) bool) bool {
	for _, e := range u.Emails {
		if ok(e) {
			return true
		}
	}
	return false
}

// parseFilter reads a list filter: clauses joined by `and`.
func parseFilter(s string) (filter, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	var f filter
	for i := 0; ; {
		c, n, err := parseClause(toks[i:])
		if err != nil {
			return nil, err
		}
		f = append(f, c)
		i += n
		if i == len(toks) {
			return f, nil
		}
		if toks[i].kind != tWord || !strings.EqualFold(toks[i].text, "and") || i+1 == len(toks) {
			return nil, unsupportedFilter()
		}
		i++
	}
}

func unsupportedFilter() error {
	return badRequest(invalidFilter, "only eq on userName, externalId, id or emails, joined by and, is supported")
}

func parseClause(toks []token) (clause, int, error) {
	if len(toks) == 0 || toks[0].kind != tWord {
		return clause{}, 0, unsupportedFilter()
	}
	attr := toks[0].text
	if hasPrefixFold(attr, schemaUser+":") {
		attr = attr[len(schemaUser)+1:]
	}
	attr = strings.ToLower(attr)
	n := 1
	if n < len(toks) && toks[n].kind == tLBrack {
		if attr != "emails" {
			return clause{}, 0, unsupportedFilter()
		}
		end := n + 1
		for end < len(toks) && toks[end].kind != tRBrack {
			end++
		}
		if end == len(toks) {
			return clause{}, 0, badRequest(invalidFilter, "unterminated [ in filter")
		}
		vf, err := parseValFilter(toks[n+1 : end])
		if err != nil {
			return clause{}, 0, err
		}
		if err := checkEmailFilter(vf); err != nil {
			return clause{}, 0, err
		}
		n = end + 1
		if n < len(toks) && toks[n].kind == tWord && strings.HasPrefix(toks[n].text, ".") {
			// emails[type eq "work"].value eq "..."
			if !strings.EqualFold(toks[n].text, ".value") {
				return clause{}, 0, unsupportedFilter()
			}
			v, err := eqString(toks[n+1:])
			if err != nil {
				return clause{}, 0, err
			}
			return clause{
				dir: Filter{Attr: "emails.value", Value: v},
				match: func(u User) bool {
					return anyEmail(u, func(e Email) bool { return vf.matchEmail(e) && strings.EqualFold(e.Value, v) })
				},
			}, n + 3, nil
		}
		// emails[value eq "..."]: needs a value term to be answerable.
		for _, c := range vf {
			if v, ok := c.value.(string); ok && c.attr == "value" {
				return clause{
					dir:   Filter{Attr: "emails.value", Value: v},
					exact: len(vf) == 1,
					match: func(u User) bool { return anyEmail(u, vf.matchEmail) },
				}, n, nil
			}
		}
		return clause{}, 0, unsupportedFilter()
	}
	v, err := eqString(toks[n:])
	if err != nil {
		return clause{}, 0, err
	}
	n += 2
	switch attr {
	case "username":
		return clause{dir: Filter{Attr: "userName", Value: v}, exact: true,
			match: func(u User) bool { return strings.EqualFold(u.UserName, v) }}, n, nil
	case "externalid":
		return clause{dir: Filter{Attr: "externalId", Value: v}, exact: true,
			match: func(u User) bool { return u.ExternalID == v }}, n, nil
	case "emails", "emails.value":
		return clause{dir: Filter{Attr: "emails.value", Value: v}, exact: true,
			match: func(u User) bool { return anyEmail(u, func(e Email) bool { return strings.EqualFold(e.Value, v) }) }}, n, nil
	case "id":
		if v == "" {
			return clause{}, 0, badRequest(invalidFilter, "id eq needs a non-empty value")
		}
		return clause{id: v, match: func(u User) bool { return u.ID == v }}, n, nil
	}
	return clause{}, 0, unsupportedFilter()
}

// eqString reads `eq "string"`.
func eqString(toks []token) (string, error) {
	if len(toks) < 2 || toks[0].kind != tWord || !strings.EqualFold(toks[0].text, "eq") {
		return "", unsupportedFilter()
	}
	if toks[1].kind != tString {
		return "", badRequest(invalidFilter, "the value compared must be a quoted string")
	}
	return toks[1].str, nil
}
