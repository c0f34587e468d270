package policy

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/interlock-dev/interlock/internal/yamldoc"
)

// maxNodes bounds how many YAML nodes one decode visits, so that aliases
// to large anchors cannot make decoding quadratic.
const maxNodes = 100_000

// str is a scalar as written, with its position.
type str struct {
	V         string
	Line, Col int
	Style     yaml.Style
	Set       bool
}

// num is a number as written, with its position.
type num struct {
	V         float64
	Line, Col int
	Set       bool
}

// fileSpec is a policy file as decoded, before compiling.
type fileSpec struct {
	Version          num
	Default          str
	DefaultApprovers []str
	Mode             str
	Tools            []toolSpec
	Rules            []ruleSpec
	Budgets          []budgetSpec
	Lookups          []lookupSpec
}

type toolSpec struct {
	Line            int
	Match           str
	Class           str
	Action          str
	Risk            str
	Amount          str
	ApprovalMessage str
}

type approvalSpec struct {
	Approvers          []str
	ApproversLine      int
	Quorum             num
	SeparationOfDuties bool
	SoDLine            int
}

type ruleSpec struct {
	Line   int
	ID     str
	When   str
	Effect str
	Reason str
	Mode   str
	approvalSpec
	Constraints constraintSpec
}

type constraintSpec struct {
	Line      int
	Lifetime  str
	Uses      num
	MaxAmount num
}

type budgetSpec struct {
	Line     int
	ID       str
	Per      str
	Window   str
	Sum      str
	When     str
	Limit    num
	Exceeded str
	Reason   str
	approvalSpec
}

type lookupSpec struct {
	Line      int
	ID        str
	Upstream  str
	Tool      str
	Arguments str
	Result    str
	TTL       str
}

// decoder walks a YAML node tree into a fileSpec, collecting every problem.
type decoder struct {
	file     string
	problems []Problem
	visits   int
}

func (d *decoder) add(line, col int, where, msg string) {
	d.problems = append(d.problems, Problem{File: d.file, Line: line, Column: col, Where: where, Message: msg})
}

func (d *decoder) addf(n *yaml.Node, where, format string, args ...any) {
	line, col := 0, 0
	if n != nil {
		line, col = n.Line, n.Column
	}
	d.add(line, col, where, fmt.Sprintf(format, args...))
}

// parse returns the root node of the file's single document (nil for an
// empty one); ok is false when the YAML is broken.
func (d *decoder) parse(data []byte) (*yaml.Node, bool) {
	return yamldoc.Parse(data, func(line int, msg string) { d.add(line, 0, "", msg) })
}

// node resolves aliases and counts visits; nil when the node is unusable
// (a problem has been recorded) or null.
func (d *decoder) node(n *yaml.Node, where string) *yaml.Node {
	if n == nil {
		return nil
	}
	orig := n
	for i := 0; n.Kind == yaml.AliasNode; i++ {
		if i >= 100 || n.Alias == nil {
			d.addf(orig, where, "alias does not resolve to a value")
			return nil
		}
		n = n.Alias
	}
	d.visits++
	if d.visits == maxNodes {
		d.addf(orig, "", "the file is too complex (more than %d values once aliases are expanded)", maxNodes)
	}
	if d.visits >= maxNodes {
		return nil
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil
	}
	return n
}

// fields decodes a mapping, calling set for every known key and recording
// unknown and repeated keys.
func (d *decoder) fields(n *yaml.Node, where string, keys []string, set func(key string, k, v *yaml.Node)) {
	n = d.node(n, where)
	if n == nil {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.addf(n, where, "want a mapping, got %s", kindName(n))
		return
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.addf(k, where, "keys must be plain names")
			continue
		}
		if seen[k.Value] {
			d.addf(k, where, "field %q appears twice", k.Value)
			continue
		}
		seen[k.Value] = true
		if !slices.Contains(keys, k.Value) {
			d.addf(k, where, "unknown field %q (known: %s)", k.Value, strings.Join(keys, ", "))
			continue
		}
		set(k.Value, k, v)
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a single value"
	}
	return "something else"
}

func (d *decoder) str(n *yaml.Node, where string) str {
	n = d.node(n, where)
	if n == nil {
		return str{}
	}
	if n.Kind != yaml.ScalarNode {
		d.addf(n, where, "want a single value, got %s", kindName(n))
		return str{}
	}
	return str{V: n.Value, Line: n.Line, Col: n.Column, Style: n.Style, Set: true}
}

func (d *decoder) num(n *yaml.Node, where string, integer bool) num {
	n = d.node(n, where)
	if n == nil {
		return num{}
	}
	tag := n.ShortTag()
	if n.Kind != yaml.ScalarNode || (tag != "!!int" && tag != "!!float") || (integer && tag != "!!int") {
		want := "a number"
		if integer {
			want = "a whole number"
		}
		got := kindName(n)
		if n.Kind == yaml.ScalarNode {
			got = strconv.Quote(n.Value)
		}
		d.addf(n, where, "want %s, got %s", want, got)
		return num{}
	}
	var v float64
	if tag == "!!int" {
		var i int64
		if err := n.Decode(&i); err != nil {
			d.addf(n, where, "want %s: %v", "a whole number", err)
			return num{}
		}
		v = float64(i)
	} else {
		if err := n.Decode(&v); err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			d.addf(n, where, "want a finite number, got %q", n.Value)
			return num{}
		}
	}
	return num{V: v, Line: n.Line, Col: n.Column, Set: true}
}

func (d *decoder) bool(n *yaml.Node, where string) bool {
	n = d.node(n, where)
	if n == nil {
		return false
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		d.addf(n, where, "want true or false")
		return false
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		d.addf(n, where, "want true or false")
	}
	return b
}

func (d *decoder) list(n *yaml.Node, where string, each func(i int, item *yaml.Node)) {
	n = d.node(n, where)
	if n == nil {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.addf(n, where, "want a list, got %s", kindName(n))
		return
	}
	for i, item := range n.Content {
		each(i, item)
	}
}

func (d *decoder) strList(n *yaml.Node, where string) []str {
	var out []str
	d.list(n, where, func(i int, item *yaml.Node) {
		if s := d.str(item, fmt.Sprintf("%s[%d]", where, i)); s.Set {
			out = append(out, s)
		}
	})
	return out
}

// decodeFile decodes the root node of a policy file.
func (d *decoder) decodeFile(root *yaml.Node) *fileSpec {
	f := &fileSpec{}
	if root == nil {
		return f
	}
	d.fields(root, "", []string{"version", "default", "default_approvers", "mode", "tools", "rules", "budgets", "lookups"},
		func(key string, k, v *yaml.Node) {
			switch key {
			case "version":
				f.Version = d.num(v, "version", true)
			case "default":
				f.Default = d.str(v, "default")
			case "default_approvers":
				f.DefaultApprovers = d.strList(v, "default_approvers")
			case "mode":
				f.Mode = d.str(v, "mode")
			case "tools":
				d.list(v, "tools", func(i int, item *yaml.Node) { f.Tools = append(f.Tools, d.tool(item, i)) })
			case "rules":
				d.list(v, "rules", func(i int, item *yaml.Node) { f.Rules = append(f.Rules, d.rule(item, i)) })
			case "budgets":
				d.list(v, "budgets", func(i int, item *yaml.Node) { f.Budgets = append(f.Budgets, d.budget(item, i)) })
			case "lookups":
				d.list(v, "lookups", func(i int, item *yaml.Node) { f.Lookups = append(f.Lookups, d.lookup(item, i)) })
			}
		})
	return f
}

func (d *decoder) tool(n *yaml.Node, i int) toolSpec {
	t := toolSpec{Line: n.Line}
	where := fmt.Sprintf("tools[%d]", i)
	d.fields(n, where, []string{"match", "class", "action", "risk", "amount", "approval_message"},
		func(key string, k, v *yaml.Node) {
			w := where + "." + key
			switch key {
			case "match":
				t.Match = d.str(v, w)
			case "class":
				t.Class = d.str(v, w)
			case "action":
				t.Action = d.str(v, w)
			case "risk":
				t.Risk = d.str(v, w)
			case "amount":
				t.Amount = d.str(v, w)
			case "approval_message":
				t.ApprovalMessage = d.str(v, w)
			}
		})
	return t
}

func (d *decoder) approval(a *approvalSpec, key string, k, v *yaml.Node, where string) {
	switch key {
	case "approvers":
		a.Approvers = d.strList(v, where)
		a.ApproversLine = k.Line
	case "quorum":
		a.Quorum = d.num(v, where, true)
	case "separation_of_duties":
		a.SeparationOfDuties = d.bool(v, where)
		a.SoDLine = k.Line
	}
}

func (d *decoder) rule(n *yaml.Node, i int) ruleSpec {
	r := ruleSpec{Line: n.Line}
	where := fmt.Sprintf("rules[%d]", i)
	d.fields(n, where, []string{"id", "when", "effect", "reason", "mode", "approvers", "quorum", "separation_of_duties", "constraints"},
		func(key string, k, v *yaml.Node) {
			w := where + "." + key
			switch key {
			case "id":
				r.ID = d.str(v, w)
			case "when":
				r.When = d.str(v, w)
			case "effect":
				r.Effect = d.str(v, w)
			case "reason":
				r.Reason = d.str(v, w)
			case "mode":
				r.Mode = d.str(v, w)
			case "constraints":
				r.Constraints.Line = k.Line
				d.fields(v, w, []string{"lifetime", "uses", "max_amount"}, func(key string, k, v *yaml.Node) {
					cw := w + "." + key
					switch key {
					case "lifetime":
						r.Constraints.Lifetime = d.str(v, cw)
					case "uses":
						r.Constraints.Uses = d.num(v, cw, true)
					case "max_amount":
						r.Constraints.MaxAmount = d.num(v, cw, false)
					}
				})
			default:
				d.approval(&r.approvalSpec, key, k, v, w)
			}
		})
	return r
}

func (d *decoder) budget(n *yaml.Node, i int) budgetSpec {
	b := budgetSpec{Line: n.Line}
	where := fmt.Sprintf("budgets[%d]", i)
	d.fields(n, where, []string{"id", "per", "window", "sum", "when", "limit", "exceeded", "reason", "approvers", "quorum", "separation_of_duties"},
		func(key string, k, v *yaml.Node) {
			w := where + "." + key
			switch key {
			case "id":
				b.ID = d.str(v, w)
			case "per":
				b.Per = d.str(v, w)
			case "window":
				b.Window = d.str(v, w)
			case "sum":
				b.Sum = d.str(v, w)
			case "when":
				b.When = d.str(v, w)
			case "limit":
				b.Limit = d.num(v, w, false)
			case "exceeded":
				b.Exceeded = d.str(v, w)
			case "reason":
				b.Reason = d.str(v, w)
			default:
				d.approval(&b.approvalSpec, key, k, v, w)
			}
		})
	return b
}

func (d *decoder) lookup(n *yaml.Node, i int) lookupSpec {
	l := lookupSpec{Line: n.Line}
	where := fmt.Sprintf("lookups[%d]", i)
	d.fields(n, where, []string{"id", "upstream", "tool", "arguments", "result", "ttl"},
		func(key string, k, v *yaml.Node) {
			w := where + "." + key
			switch key {
			case "id":
				l.ID = d.str(v, w)
			case "upstream":
				l.Upstream = d.str(v, w)
			case "tool":
				l.Tool = d.str(v, w)
			case "arguments":
				l.Arguments = d.str(v, w)
			case "result":
				l.Result = d.str(v, w)
			case "ttl":
				l.TTL = d.str(v, w)
			}
		})
	return l
}

// parseDuration accepts Go durations ("90s", "24h", "1h30m") and whole days
// ("7d").
func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok && days != "" && !strings.ContainsAny(days, "hmsuµn") {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n < 0 || n > math.MaxInt64/int64(24*time.Hour) {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want e.g. 30s, 10m, 24h or 7d)", s)
	}
	return v, nil
}
