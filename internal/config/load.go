package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/interlock-dev/interlock/internal/yamldoc"
)

// LoadOptions tunes Load and Parse.
type LoadOptions struct {
	// Getenv looks up the variables named in ${VAR}. Nil means os.LookupEnv.
	// It is the only way this package reads the environment.
	Getenv func(name string) (value string, ok bool)
}

// maxNodes bounds how many YAML nodes one decode visits, so that aliases
// pointing at large anchors cannot make decoding quadratic.
const maxNodes = 100_000

// Load reads the configuration file at path, decodes it strictly, expands
// ${VAR} references, applies defaults (relative paths are resolved against
// the file's directory) and validates the result.
//
// Problems with the file's content are returned together as an *Error, one
// Problem per line of the file at fault; a file that cannot be read gives
// the underlying error wrapped.
func Load(path string, opts LoadOptions) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path, opts)
}

// Parse is Load without reading a file: data is the file's content and name
// the file name used in problems and for resolving relative paths (against
// filepath.Dir(name), made absolute). It never panics; any *Config it returns
// without error passes Validate.
func Parse(data []byte, name string, opts LoadOptions) (*Config, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.LookupEnv
	}
	d := &decoder{
		getenv: getenv,
		lines:  map[string]int{},
		raw:    map[string]string{},
		bad:    map[string]bool{},
	}
	root, ok := d.parse(data)
	if !ok {
		return nil, newError(name, d.problems)
	}
	cfg := &Config{}
	if root != nil {
		d.decode(root, reflect.ValueOf(cfg).Elem(), "")
	}
	cfg.src = &source{file: name, lines: d.lines, raw: d.raw}

	dir := filepath.Dir(name)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	cfg.applyDefaults(dir)

	problems := d.problems
	for _, p := range cfg.validate() {
		if !d.tainted(p.Path) {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return nil, newError(name, problems)
	}
	return cfg, nil
}

// source records where a decoded Config came from.
type source struct {
	file  string
	lines map[string]int    // path -> line of its key (or list item)
	raw   map[string]string // path -> text as written, for values that used ${VAR}
}

// decoder walks a yaml.Node tree into a Config, collecting every problem.
type decoder struct {
	getenv   func(string) (string, bool)
	problems []Problem
	lines    map[string]int
	raw      map[string]string
	bad      map[string]bool // paths whose value could not be decoded
	visits   int
	// badAncestors holds every proper ancestor of a bad path; built by tainted.
	badAncestors map[string]bool
}

func (d *decoder) add(line int, path, msg string) {
	d.problems = append(d.problems, Problem{Line: line, Path: path, Msg: msg})
}

// fail records a problem with the value at path and marks the path so that
// validation does not pile follow-on problems onto it.
func (d *decoder) fail(line int, path, msg string) {
	d.add(line, path, msg)
	d.bad[path] = true
}

// tainted reports whether a validation problem at path is likely a
// consequence of a value that could not be decoded: the path, one of its
// ancestors or one of its descendants failed to decode.
func (d *decoder) tainted(path string) bool {
	if len(d.bad) == 0 {
		return false
	}
	if d.badAncestors == nil {
		d.badAncestors = map[string]bool{}
		for b := range d.bad {
			for p := b; p != ""; {
				i := strings.LastIndexAny(p, ".[")
				if i < 0 {
					break
				}
				p = p[:i]
				d.badAncestors[p] = true
			}
		}
	}
	if d.bad[""] || d.badAncestors[path] {
		return true
	}
	for p := path; ; {
		if d.bad[p] {
			return true
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			return false
		}
		p = p[:i]
	}
}

// parse returns the root node of the file's single document (nil for an
// empty one); ok is false when the YAML is broken.
func (d *decoder) parse(data []byte) (*yaml.Node, bool) {
	return yamldoc.Parse(data, func(line int, msg string) { d.add(line, "", msg) })
}

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.AliasNode {
		return nil
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a single value"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	return "nothing"
}

// decode stores the value of n into v, whose type is one of those used by
// Config. Problems are recorded, never returned; v keeps its zero value on
// failure.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	line := n.Line
	n = resolve(n)
	if n == nil {
		d.fail(line, path, "alias does not resolve to a value")
		return
	}
	d.visits++
	if d.visits == maxNodes {
		d.fail(line, "", fmt.Sprintf("the file is too complex (more than %d values once aliases are expanded)", maxNodes))
	}
	if d.visits >= maxNodes {
		return
	}
	if isNull(n) {
		return // null leaves the zero value: the key counts as unset
	}
	if v.Type() == reflect.TypeFor[Duration]() {
		d.duration(n, v, path)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Slice:
		d.list(n, v, path)
	case reflect.Map:
		d.dict(n, v, path)
	case reflect.String:
		if s, ok := d.scalar(n, path, "a string"); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		s, ok := d.scalar(n, path, "true or false")
		if !ok {
			return
		}
		switch s {
		case "true", "True", "TRUE":
			v.SetBool(true)
		case "false", "False", "FALSE":
			v.SetBool(false)
		default:
			d.fail(n.Line, path, d.show(path, s)+" is not a boolean (want true or false)")
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		s, ok := d.scalar(n, path, "an integer")
		if !ok {
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, v.Type().Bits())
		if err != nil {
			d.fail(n.Line, path, d.show(path, s)+" is not an integer"+fmt.Sprintf(" (from %d to %d)", int64(-1)<<(v.Type().Bits()-1), int64(1)<<(v.Type().Bits()-1)-1))
			return
		}
		v.SetInt(i)
	default:
		d.fail(n.Line, path, "internal error: no decoder for "+v.Type().String())
	}
}

// scalar returns the expanded text of a scalar node.
func (d *decoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n.Line, path, "must be "+want+", not "+kindName(n))
		return "", false
	}
	out, used, errs := expand(n.Value, d.getenv)
	if len(errs) > 0 {
		for _, e := range errs {
			d.fail(n.Line, path, e)
		}
		return "", false
	}
	if used {
		d.raw[path] = n.Value
	}
	return out, true
}

// show quotes a decoded value for a problem message; a value that came from
// ${VAR} is shown as written in the file, never expanded.
func (d *decoder) show(path, s string) string {
	return showValue(d.raw, path, s)
}

func showValue(raw map[string]string, path, s string) string {
	if r, ok := raw[path]; ok {
		return quote(r) + " (after expansion)"
	}
	return quote(s)
}

// quote quotes s for a message, shortening it past 64 bytes.
func quote(s string) string {
	const limit = 64
	if len(s) <= limit {
		return strconv.Quote(s)
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}

func (d *decoder) duration(n *yaml.Node, v reflect.Value, path string) {
	s, ok := d.scalar(n, path, `a duration such as "30s" or "5m"`)
	if !ok {
		return
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		d.fail(n.Line, path, d.show(path, s)+` is not a duration (want a Go duration such as "30s", "5m" or "1h30m")`)
		return
	}
	v.SetInt(int64(dur))
}

// field is one yaml-tagged field of a struct.
type field struct {
	key   string
	index int
}

func fieldsOf(t reflect.Type) []field {
	var fs []field
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" {
			continue
		}
		fs = append(fs, field{key: key, index: i})
	}
	return fs
}

// key returns the text of a mapping key.
func (d *decoder) key(kn *yaml.Node, parent string) (string, bool) {
	line := kn.Line
	kn = resolve(kn)
	if kn == nil || kn.Kind != yaml.ScalarNode {
		d.add(line, parent, "keys must be plain names, not "+kindNameOrAlias(kn))
		return "", false
	}
	return kn.Value, true
}

func kindNameOrAlias(n *yaml.Node) string {
	if n == nil {
		return "an alias"
	}
	return kindName(n)
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		if path == "" {
			d.fail(n.Line, path, "the file must be a mapping of keys (listen, upstreams, ...), not "+kindName(n))
			return
		}
		d.fail(n.Line, path, "must be a mapping of keys, not "+kindName(n))
		return
	}
	fields := fieldsOf(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		key, ok := d.key(kn, path)
		if !ok {
			continue
		}
		if first, dup := seen[key]; dup {
			d.add(kn.Line, path, fmt.Sprintf("duplicate key %s (first at line %d)", quote(key), first))
			continue
		}
		seen[key] = kn.Line
		if key == "<<" {
			d.add(kn.Line, path, `merge keys ("<<") are not supported; write the keys out`)
			continue
		}
		idx := -1
		for _, f := range fields {
			if f.key == key {
				idx = f.index
				break
			}
		}
		if idx < 0 {
			d.add(kn.Line, path, unknownKey(key, fields))
			continue
		}
		fp := joinPath(path, key)
		d.lines[fp] = kn.Line
		d.decode(vn, v.Field(idx), fp)
	}
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// unknownKey words the problem for a key the schema does not have,
// suggesting the nearest known key when the miss is small.
func unknownKey(key string, fields []field) string {
	best, bestDist := "", len(key)+1
	for _, f := range fields {
		dist := editDistance(strings.ToLower(key), f.key)
		if dist < bestDist {
			best, bestDist = f.key, dist
		}
	}
	limit := max(1, min(3, len(key)/3))
	if best != "" && bestDist <= limit {
		return fmt.Sprintf("unknown key %s (did you mean %q?)", quote(key), best)
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.key
	}
	return fmt.Sprintf("unknown key %s (known keys: %s)", quote(key), strings.Join(names, ", "))
}

// editDistance is the optimal-string-alignment distance between a and b:
// insertions, deletions, substitutions and swaps of adjacent bytes.
func editDistance(a, b string) int {
	rows := make([][]int, len(a)+1)
	for i := range rows {
		rows[i] = make([]int, len(b)+1)
		rows[i][0] = i
	}
	for j := range rows[0] {
		rows[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			rows[i][j] = min(rows[i-1][j]+1, rows[i][j-1]+1, rows[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				rows[i][j] = min(rows[i][j], rows[i-2][j-2]+1)
			}
		}
	}
	return rows[len(a)][len(b)]
}

func (d *decoder) list(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		msg := "must be a list, not " + kindName(n)
		if v.Type().Elem().Kind() == reflect.String && strings.HasSuffix(path, ".command") && n.Kind == yaml.ScalarNode {
			msg += ` (write the program and its arguments as a list, e.g. ["npx", "-y", "some-server"])`
		}
		d.fail(n.Line, path, msg)
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		ip := path + "[" + strconv.Itoa(i) + "]"
		d.lines[ip] = item.Line
		d.decode(item, s.Index(i), ip)
	}
	v.Set(s)
}

func (d *decoder) dict(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n.Line, path, "must be a mapping of names to values, not "+kindName(n))
		return
	}
	t := v.Type()
	if t.Key().Kind() != reflect.String {
		d.fail(n.Line, path, "internal error: no decoder for "+t.String())
		return
	}
	m := reflect.MakeMapWithSize(t, len(n.Content)/2)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		key, ok := d.key(kn, path)
		if !ok {
			continue
		}
		if first, dup := seen[key]; dup {
			d.add(kn.Line, path, fmt.Sprintf("duplicate key %s (first at line %d)", quote(key), first))
			continue
		}
		seen[key] = kn.Line
		fp := joinPath(path, key)
		d.lines[fp] = kn.Line
		ev := reflect.New(t.Elem()).Elem()
		d.decode(vn, ev, fp)
		m.SetMapIndex(reflect.ValueOf(key).Convert(t.Key()), ev)
	}
	v.Set(m)
}

// expand replaces ${VAR} and ${VAR:-default} in s with values from getenv
// and $$ with $. The result is not expanded again. used reports whether any
// ${...} was replaced. The problems never contain a variable's value.
func expand(s string, getenv func(string) (string, bool)) (out string, used bool, problems []string) {
	if !strings.Contains(s, "$") {
		return s, false, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' {
			b.WriteByte(c)
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			b.WriteByte('$')
			i += 2
			continue
		}
		if i+1 >= len(s) || s[i+1] != '{' {
			problems = append(problems, `"$" must be followed by "{" or "$" (write "$$" for a literal "$")`)
			i++
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			problems = append(problems, `unterminated "${" (missing "}")`)
			break
		}
		body := s[i+2 : i+2+end]
		i += 2 + end + 1
		name, def, hasDef := strings.Cut(body, ":-")
		if !validVarName(name) {
			problems = append(problems, fmt.Sprintf(`invalid variable name %s in "${...}" (use letters, digits and "_", not starting with a digit)`, quote(name)))
			continue
		}
		used = true
		val, ok := getenv(name)
		switch {
		case ok && (val != "" || !hasDef):
			b.WriteString(val)
		case hasDef:
			b.WriteString(def)
		default:
			problems = append(problems, fmt.Sprintf("environment variable %s is not set (set it, or give a default: ${%s:-default})", name, name))
		}
	}
	return b.String(), used, problems
}

func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
