package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Splicing: setting a member deep inside a JSON object by copying the
// object's bytes once, with the new member written in place, instead of
// decoding every level into a map and encoding it again. Decoding and
// re-encoding costs a parse and an encode per level and, with
// encoding/json's compaction of every RawMessage, time proportional to the
// depth times the size; a splice is one scan and one copy, and keeps the
// message exactly as the sender wrote it (member order, spacing, numbers)
// except for the members it sets.
//
// The splicer trusts nothing: it returns an error for anything that is not
// well-formed JSON in the parts it scans, and errDuplicateKey when a key it
// needs appears twice in one object (decoders disagree on which one wins,
// so the callers fall back to a full decode, which settles it the way
// encoding/json does).

// errDuplicateKey reports a key that appears more than once in an object
// the splicer has to look into.
var errDuplicateKey = errors.New("duplicate key")

// member is one key and its encoded value.
type member struct {
	key   string
	value []byte
}

// edit replaces b[from:to] with data.
type edit struct {
	from, to int
	data     []byte
}

// spliceSet returns obj with obj.path[0].path[1]... .key = value for each
// member of set. Objects missing on the path (absent or null) are created;
// a path element that holds anything else than an object is an error. obj
// itself may be empty or null, meaning {}. obj is not modified.
func spliceSet(obj []byte, path []string, set []member) ([]byte, error) {
	if len(set) == 0 {
		return obj, nil
	}
	trimmed := bytes.TrimSpace(obj)
	if len(trimmed) == 0 || isJSONNull(trimmed) {
		var b []byte
		b = appendNested(b, path, set)
		return b, nil
	}
	open, err := wholeObject(obj) // the '{' of the object being looked into
	if err != nil {
		return nil, err
	}
	for depth := 0; ; depth++ {
		if obj[open] != '{' {
			return nil, fmt.Errorf("%s is not an object", path[depth-1])
		}
		if depth == len(path) {
			edits, err := memberEdits(obj, open, set)
			if err != nil {
				return nil, err
			}
			return applyEdits(obj, edits), nil
		}
		spans, err := findMembers(obj, open, path[depth:depth+1])
		if err != nil {
			return nil, err
		}
		s := spans[0]
		if !s.found || isJSONNull(obj[s.vs:s.ve]) {
			// Create the rest of the path here.
			if s.found {
				nested := appendNested(nil, path[depth+1:], set)
				return applyEdits(obj, []edit{{s.vs, s.ve, nested}}), nil
			}
			ins := make([]byte, 0, len(path[depth])+4+nestedSize(path[depth+1:], set))
			ins = appendString(ins, path[depth])
			ins = appendNested(append(ins, ':'), path[depth+1:], set)
			return applyEdits(obj, []edit{insertion(obj, open, ins)}), nil
		}
		open = s.vs
	}
}

// memberEdits returns the edits that set each member of set in the object
// opening at obj[open].
func memberEdits(obj []byte, open int, set []member) ([]edit, error) {
	keys := make([]string, len(set))
	for i, m := range set {
		keys[i] = m.key
	}
	spans, err := findMembers(obj, open, keys)
	if err != nil {
		return nil, err
	}
	var edits []edit
	var ins []byte
	n := 0
	for _, m := range set {
		n += len(m.key) + 4 + len(m.value)
	}
	for i, s := range spans {
		if s.found {
			edits = append(edits, edit{s.vs, s.ve, set[i].value})
			continue
		}
		if ins == nil {
			ins = make([]byte, 0, n+1)
		} else {
			ins = append(ins, ',')
		}
		ins = appendMember(ins, set[i].key, set[i].value)
	}
	if len(ins) > 0 {
		edits = append(edits, insertion(obj, open, ins))
	}
	slices.SortFunc(edits, func(a, b edit) int { return a.from - b.from })
	return edits, nil
}

// insertion returns the edit that puts the encoded members ins first in
// the object opening at obj[open].
func insertion(obj []byte, open int, ins []byte) edit {
	i := skipSpace(obj, open+1)
	if i < len(obj) && obj[i] != '}' {
		ins = append(ins, ',')
	}
	return edit{open + 1, open + 1, ins}
}

// applyEdits copies obj once with the edits (sorted, not overlapping)
// applied.
func applyEdits(obj []byte, edits []edit) []byte {
	n := len(obj)
	for _, e := range edits {
		n += len(e.data) - (e.to - e.from)
	}
	out := make([]byte, 0, n)
	at := 0
	for _, e := range edits {
		out = append(out, obj[at:e.from]...)
		out = append(out, e.data...)
		at = e.to
	}
	return append(out, obj[at:]...)
}

// appendNested appends {"p0":{"p1":{...set...}}}.
func appendNested(b []byte, path []string, set []member) []byte {
	b = slices.Grow(b, nestedSize(path, set))
	for _, p := range path {
		b = append(b, '{')
		b = appendMember(b, p, nil)
	}
	b = append(b, '{')
	for i, m := range set {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendMember(b, m.key, m.value)
	}
	b = append(b, '}')
	for range path {
		b = append(b, '}')
	}
	return b
}

// nestedSize is about what appendNested appends (exactly, for keys
// without characters to escape), plus one for a separator.
func nestedSize(path []string, set []member) int {
	n := 3
	for _, p := range path {
		n += len(p) + 4
	}
	for _, m := range set {
		n += len(m.key) + 4 + len(m.value)
	}
	return n
}

// appendMember appends "key":value (value may be nil, to be followed by
// the caller).
func appendMember(b []byte, key string, value []byte) []byte {
	b = appendString(b, key)
	b = append(b, ':')
	return append(b, value...)
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// encodeValue encodes v as JSON; strings (credentials, mostly) without
// encoding/json's reflection.
func encodeValue(v any) ([]byte, error) {
	if s, ok := v.(string); ok {
		return appendString(make([]byte, 0, len(s)+2), s), nil
	}
	return json.Marshal(v)
}

// wholeObject returns where the object that is all of b (but spaces)
// opens.
func wholeObject(b []byte) (int, error) {
	open := skipSpace(b, 0)
	if open >= len(b) || b[open] != '{' {
		return 0, errors.New("not a JSON object")
	}
	end, err := skipValue(b, open, 0)
	if err != nil {
		return 0, err
	}
	if skipSpace(b, end) != len(b) {
		return 0, errors.New("malformed JSON: data after the object")
	}
	return open, nil
}

// span is where a member's value lies in an object.
type span struct {
	found  bool
	vs, ve int
}

// findMembers scans the object opening at obj[open] (through its closing
// brace, so a malformed object is an error) and returns where each of keys
// has its value.
func findMembers(obj []byte, open int, keys []string) ([]span, error) {
	spans := make([]span, len(keys))
	err := eachMember(obj, open, func(rawKey []byte, vs, ve int) error {
		for k, want := range keys {
			if !keyIs(rawKey, want) {
				continue
			}
			if spans[k].found {
				return fmt.Errorf("%w %q", errDuplicateKey, want)
			}
			spans[k] = span{found: true, vs: vs, ve: ve}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return spans, nil
}

// errFolded: an object has a key that encoding/json would take for one
// the caller looks for (it matches names case-insensitively) without
// being exactly it.
var errFolded = errors.New("a member name that differs only in case")

// findExact is findMembers that also refuses (errFolded) a key encoding/json
// would match to one of keys without it being exactly that key, so that
// what it finds is what a decode into a struct would find.
func findExact(obj []byte, open int, keys ...string) ([]span, error) {
	spans := make([]span, len(keys))
	err := eachMember(obj, open, func(rawKey []byte, vs, ve int) error {
		for k, want := range keys {
			if keyIs(rawKey, want) {
				if spans[k].found {
					return fmt.Errorf("%w %q", errDuplicateKey, want)
				}
				spans[k] = span{found: true, vs: vs, ve: ve}
			} else if len(rawKey)-2 >= len(want) && keyFolds(rawKey, want) {
				return fmt.Errorf("%w: %s besides %q", errFolded, rawKey, want)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return spans, nil
}

// checkMembers refuses an object in which one of keys appears twice, or
// with another key that differs from it only in case. Decoders disagree on
// what such an object says (encoding/json matches member names without
// regard to case and keeps the last duplicate; others match exactly, and
// some keep the first), and interlock must decide on what the upstream
// will read. Anything but a well-formed object passes: its decoder reports
// it. The spans of keys come back when the scan found them (nil
// otherwise).
func checkMembers(obj []byte, keys ...string) ([]span, error) {
	open := skipSpace(obj, 0)
	if open >= len(obj) || obj[open] != '{' {
		return nil, nil
	}
	spans, err := findExact(obj, open, keys...)
	if errors.Is(err, errDuplicateKey) || errors.Is(err, errFolded) {
		return nil, fmt.Errorf("%w (refused: parsers disagree on which one counts)", err)
	}
	return spans, nil
}

// keyFolds reports whether the quoted JSON string raw equals want ignoring
// case as encoding/json matches struct fields (its folding is within
// Unicode simple folding, which strings.EqualFold applies).
func keyFolds(raw []byte, want string) bool {
	var s string
	return json.Unmarshal(raw, &s) == nil && strings.EqualFold(s, want)
}

// eachMember calls fn with each member of the object opening at obj[open]:
// its key as written (quoted) and the span of its value. It scans through
// the closing brace, so a malformed object is an error.
func eachMember(obj []byte, open int, fn func(rawKey []byte, vs, ve int) error) error {
	_, err := scanObject(obj, open, 0, fn)
	return err
}

// scanObject scans the object opening at b[open], nested depth deep,
// calling fn (if not nil) with each member, and returns the index just
// past its closing brace.
func scanObject(b []byte, open, depth int, fn func(rawKey []byte, vs, ve int) error) (int, error) {
	j := skipSpace(b, open+1)
	if j < len(b) && b[j] == '}' {
		return j + 1, nil
	}
	for {
		if j >= len(b) || b[j] != '"' {
			return 0, errors.New("malformed object: expected a key")
		}
		k, err := skipString(b, j)
		if err != nil {
			return 0, err
		}
		rawKey := b[j:k]
		j = skipSpace(b, k)
		if j >= len(b) || b[j] != ':' {
			return 0, errors.New("malformed object: expected ':'")
		}
		vs := skipSpace(b, j+1)
		ve, err := skipValue(b, vs, depth+1)
		if err != nil {
			return 0, err
		}
		if fn != nil {
			if err := fn(rawKey, vs, ve); err != nil {
				return 0, err
			}
		}
		var done bool
		if j, done, err = afterElement(b, ve, '}', "object"); err != nil || done {
			return j, err
		}
	}
}

// afterElement looks past an element of an array or object (closed by
// end) that ended at b[j]: done at the closing bracket (j then just past
// it), or j at the next element after a comma.
func afterElement(b []byte, j int, end byte, what string) (next int, done bool, err error) {
	j = skipSpace(b, j)
	switch {
	case j >= len(b):
		return 0, false, fmt.Errorf("malformed %s: unterminated", what)
	case b[j] == end:
		return j + 1, true, nil
	case b[j] != ',':
		return 0, false, fmt.Errorf("malformed %s: expected ',' or '%c'", what, end)
	}
	return skipSpace(b, j+1), false, nil
}

// keyIs reports whether the quoted JSON string raw decodes to want.
func keyIs(raw []byte, want string) bool {
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) == want
	}
	var s string
	return json.Unmarshal(raw, &s) == nil && s == want
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just past the string starting at b[i]
// (a '"').
func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return j + 1, nil
		case c == '\\':
			j++
			if j >= len(b) {
				break
			}
			switch b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(b)-j < 5 || !isHex(b[j+1]) || !isHex(b[j+2]) || !isHex(b[j+3]) || !isHex(b[j+4]) {
					return 0, errors.New("malformed string: bad \\u escape")
				}
				j += 4
			default:
				return 0, errors.New("malformed string: bad escape")
			}
		case c < 0x20:
			return 0, errors.New("malformed string: control character")
		}
	}
	return 0, errors.New("malformed string: unterminated")
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// skipNumber returns the index just past the number starting at b[i]:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, i int) (int, error) {
	bad := errors.New("malformed JSON: bad number")
	digits := func(j int) int {
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		return j
	}
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(i + 1)
	default:
		return 0, bad
	}
	if i < len(b) && b[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return 0, bad
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return 0, bad
		}
		i = j
	}
	return i, nil
}

// maxSpliceDepth bounds the nesting the splicer scans through, as decoders
// bound theirs.
const maxSpliceDepth = 10000

// skipValue returns the index just past the JSON value starting at b[i].
// It checks structure (strings, brackets, separators) and that literals and
// numbers consist of the right characters, which is all a splice needs to
// find where a value ends.
func skipValue(b []byte, i, depth int) (int, error) {
	if depth > maxSpliceDepth {
		return 0, errors.New("nested too deeply")
	}
	if i >= len(b) {
		return 0, errors.New("malformed JSON: value expected")
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{':
		return scanObject(b, i, depth, nil)
	case c == '[':
		j := skipSpace(b, i+1)
		if j < len(b) && b[j] == ']' {
			return j + 1, nil
		}
		for {
			e, err := skipValue(b, j, depth+1)
			if err != nil {
				return 0, err
			}
			var done bool
			if j, done, err = afterElement(b, e, ']', "array"); err != nil || done {
				return j, err
			}
		}
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		return skipNumber(b, i)
	default:
		return 0, fmt.Errorf("malformed JSON: unexpected %q", c)
	}
}

func skipLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, errors.New("malformed JSON: bad literal")
	}
	return i + len(lit), nil
}
