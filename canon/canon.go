// Package canon implements the JSON Canonicalization Scheme (JCS) of
// RFC 8785: one byte sequence for every JSON value, so that a hash or a
// signature over JSON does not depend on how the JSON happened to be
// written. Objects have their members sorted by the UTF-16 code units of
// their names, whitespace is removed, strings use the shortest escapes
// ECMAScript's JSON.stringify uses, and numbers are IEEE 754 doubles written
// the way ECMAScript's Number.prototype.toString writes them.
//
// Input that JCS cannot represent faithfully is rejected rather than
// repaired: invalid JSON, invalid UTF-8, duplicate object member names
// (after unescaping), lone surrogates in \u escapes, and numbers beyond the
// double range.
//
// The package is public (outside internal/) because the verify package,
// which tool owners import, needs it to compute the argument digest an
// interlock credential binds; it must not import anything from internal/.
//
// Canonicalize and Marshal produce canonical JSON; IsCanonical checks that
// bytes already are (cheaply, for verifying stored records); AppendString
// and AppendNumber write single canonical values for callers that build a
// record of known shape by hand.
//
// The package must not do I/O or keep state; every function is safe for
// concurrent use.
package canon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds the nesting of arrays and objects, as encoding/json does.
const maxDepth = 10000

// SyntaxError reports input that Canonicalize refuses, with the byte offset
// at which the problem was found.
type SyntaxError struct {
	Offset int
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("canon: %s at offset %d", e.Msg, e.Offset)
}

// ErrNumber is returned (wrapped) for a number JSON cannot hold: NaN or an
// infinity, or a literal beyond the double range.
var ErrNumber = errors.New("canon: number is not finite")

// Marshal returns the canonical JSON encoding of v: what encoding/json
// writes for v, then Canonicalize. Values made of the common types are
// written canonically in one pass (the result is the same).
func Marshal(v any) ([]byte, error) {
	if b, err := appendValue(make([]byte, 0, 512), reflect.ValueOf(v), 0); err == nil {
		return b, nil
	}
	return marshalGeneral(v)
}

// marshalGeneral is Marshal by encoding/json, then Canonicalize.
func marshalGeneral(v any) ([]byte, error) {
	// Without HTML escaping ("<" as \u003c, ...), which canonical JSON
	// undoes anyway, strings take Canonicalize's fast path.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("canon: marshal: %w", err)
	}
	return Canonicalize(buf.Bytes())
}

// Canonicalize returns the RFC 8785 canonical form of the JSON text data
// (one value, optionally surrounded by whitespace).
func Canonicalize(data []byte) ([]byte, error) {
	p := parser{data: data, out: make([]byte, 0, len(data))}
	p.skipSpace()
	if err := p.value(0); err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos != len(data) {
		return nil, p.errorf("data after the JSON value")
	}
	return p.out, nil
}

// ---- parsing and writing ----

// The parser writes the canonical form as it reads. An object's members are
// written in input order, each remembered as a span of the output with its
// decoded name; when the object ends they are sorted, and rewritten in
// order only if the input order was not already canonical.

type parser struct {
	data  []byte
	pos   int
	out   []byte
	spans []span // members of the objects being parsed, innermost last
	names []byte // decoded member names that had escapes
	tmp   []byte // for reordering members
}

// span is one object member written to the output: out[start:end] is
// `"name":value`. The decoded name is data[nameAt:nameEnd], or
// names[nameAt:nameEnd] when escaped is set. (Offsets rather than slices
// keep spans free of pointers, which makes them cheap to grow.) key holds
// the name's first 8 bytes, big-endian, zero-padded; ascii says they are
// all ASCII, in which case unequal keys order the names.
type span struct {
	key             uint64
	ascii, escaped  bool
	nameAt, nameEnd int
	start, end      int
}

// setKey fills s.key and s.ascii from name.
func (s *span) setKey(name []byte) {
	s.ascii = true
	for i := range 8 {
		var c byte
		if i < len(name) {
			c = name[i]
		}
		s.ascii = s.ascii && c < utf8.RuneSelf
		s.key = s.key<<8 | uint64(c)
	}
}

// compare orders members by name (UTF-16 code units).
func (p *parser) compare(a, b *span) int {
	if a.key != b.key && a.ascii && b.ascii {
		if a.key < b.key {
			return -1
		}
		return 1
	}
	return compareUTF16(p.name(a), p.name(b))
}

func (p *parser) name(s *span) []byte {
	if s.escaped {
		return p.names[s.nameAt:s.nameEnd]
	}
	return p.data[s.nameAt:s.nameEnd]
}

func (p *parser) errorf(format string, args ...any) error {
	return &SyntaxError{Offset: p.pos, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) literal(word string) error {
	if len(p.data)-p.pos < len(word) || string(p.data[p.pos:p.pos+len(word)]) != word {
		return p.errorf("invalid literal")
	}
	p.pos += len(word)
	p.out = append(p.out, word...)
	return nil
}

func (p *parser) value(depth int) error {
	if p.pos >= len(p.data) {
		return p.errorf("unexpected end of input")
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"':
		_, err := p.string()
		return err
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	default:
		return p.errorf("invalid character %q looking for a value", c)
	}
}

func (p *parser) array(depth int) error {
	if depth > maxDepth {
		return p.errorf("nesting deeper than %d", maxDepth)
	}
	p.pos++ // '['
	p.out = append(p.out, '[')
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		p.out = append(p.out, ']')
		return nil
	}
	for {
		p.skipSpace()
		if err := p.value(depth); err != nil {
			return err
		}
		p.skipSpace()
		if p.pos >= len(p.data) {
			return p.errorf("unexpected end of input in an array")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
			p.out = append(p.out, ',')
		case ']':
			p.pos++
			p.out = append(p.out, ']')
			return nil
		default:
			return p.errorf("invalid character %q after an array element", p.data[p.pos])
		}
	}
}

func (p *parser) object(depth int) error {
	if depth > maxDepth {
		return p.errorf("nesting deeper than %d", maxDepth)
	}
	objStart := p.pos
	p.pos++ // '{'
	p.out = append(p.out, '{')
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		p.out = append(p.out, '}')
		return nil
	}
	base := len(p.spans)
	for {
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return p.errorf("expected a member name")
		}
		start := len(p.out)
		name, err := p.string()
		if err != nil {
			return err
		}
		sp := span{start: start}
		sp.setKey(name)
		if len(name) > 0 && &name[0] == &p.data[p.pos-1-len(name)] {
			sp.nameAt, sp.nameEnd = p.pos-1-len(name), p.pos-1
		} else {
			sp.nameAt, sp.escaped = len(p.names), true
			p.names = append(p.names, name...)
			sp.nameEnd = len(p.names)
		}
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return p.errorf("expected ':' after a member name")
		}
		p.pos++
		p.out = append(p.out, ':')
		p.skipSpace()
		if err := p.value(depth); err != nil {
			return err
		}
		sp.end = len(p.out)
		if p.spans == nil {
			p.spans = make([]span, 0, 16)
		}
		p.spans = append(p.spans, sp)
		p.skipSpace()
		if p.pos >= len(p.data) {
			return p.errorf("unexpected end of input in an object")
		}
		c := p.data[p.pos]
		p.pos++
		if c == ',' {
			p.out = append(p.out, ',')
			continue
		}
		if c != '}' {
			p.pos--
			return p.errorf("invalid character %q after an object member", c)
		}
		break
	}
	members := p.spans[base:]
	sorted := true
	for i := 1; i < len(members); i++ {
		if c := p.compare(&members[i-1], &members[i]); c >= 0 {
			if c == 0 {
				return &SyntaxError{Offset: objStart, Msg: fmt.Sprintf("duplicate member name %q in the object", p.name(&members[i]))}
			}
			sorted = false
		}
	}
	if !sorted {
		slices.SortFunc(members, func(a, b span) int { return p.compare(&a, &b) })
		for i := 1; i < len(members); i++ {
			if bytes.Equal(p.name(&members[i-1]), p.name(&members[i])) {
				return &SyntaxError{Offset: objStart, Msg: fmt.Sprintf("duplicate member name %q in the object", p.name(&members[i]))}
			}
		}
		// Rewrite the members in order after the '{'.
		region := members[0].start
		for _, m := range members {
			region = min(region, m.start)
		}
		p.tmp = append(p.tmp[:0], p.out[region:]...)
		p.out = p.out[:region]
		for i, m := range members {
			if i > 0 {
				p.out = append(p.out, ',')
			}
			p.out = append(p.out, p.tmp[m.start-region:m.end-region]...)
		}
	}
	p.spans = p.spans[:base]
	p.out = append(p.out, '}')
	return nil
}

// string parses a string literal at p.pos (the opening quote), writes its
// canonical form and returns it decoded (a slice of the input if it has no
// escapes).
func (p *parser) string() ([]byte, error) {
	p.pos++ // '"'
	start := p.pos
	// Fast path: no escapes. Then the canonical form is the input as it
	// is: '"', '\\' and control characters cannot appear unescaped.
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		if c == '"' {
			raw := p.data[start:p.pos]
			p.pos++
			p.out = append(p.out, '"')
			p.out = append(p.out, raw...)
			p.out = append(p.out, '"')
			return raw, nil
		}
		if c == '\\' || c < 0x20 {
			break
		}
		if c < utf8.RuneSelf {
			p.pos++
			continue
		}
		r, size := utf8.DecodeRune(p.data[p.pos:])
		if r == utf8.RuneError && size == 1 {
			return nil, p.errorf("invalid UTF-8 in a string")
		}
		p.pos += size
	}
	buf := make([]byte, p.pos-start, p.pos-start+16)
	copy(buf, p.data[start:p.pos])
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			p.pos++
			p.out = appendEscaped(p.out, buf)
			return buf, nil
		case c < 0x20:
			return nil, p.errorf("control character %#x in a string", c)
		case c == '\\':
			r, err := p.escape()
			if err != nil {
				return nil, err
			}
			buf = utf8.AppendRune(buf, r)
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			p.pos++
		default:
			r, size := utf8.DecodeRune(p.data[p.pos:])
			if r == utf8.RuneError && size == 1 {
				return nil, p.errorf("invalid UTF-8 in a string")
			}
			buf = append(buf, p.data[p.pos:p.pos+size]...)
			p.pos += size
		}
	}
	return nil, p.errorf("unexpected end of input in a string")
}

// escape decodes the escape sequence at p.pos (the backslash), joining a
// surrogate pair written as two \u escapes.
func (p *parser) escape() (rune, error) {
	if p.pos+1 >= len(p.data) {
		return 0, p.errorf("unexpected end of input in an escape")
	}
	c := p.data[p.pos+1]
	p.pos += 2
	switch c {
	case '"', '\\', '/':
		return rune(c), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
	default:
		p.pos -= 2
		return 0, p.errorf("invalid escape \\%c", c)
	}
	r, ok := hex4(p.data[p.pos:])
	if !ok {
		return 0, p.errorf("invalid \\u escape")
	}
	p.pos += 4
	switch {
	case r >= 0xDC00 && r <= 0xDFFF:
		return 0, p.errorf("lone low surrogate \\u%04x", r)
	case r >= 0xD800 && r <= 0xDBFF:
		rest := p.data[p.pos:]
		if len(rest) < 6 || rest[0] != '\\' || rest[1] != 'u' {
			return 0, p.errorf("lone high surrogate \\u%04x", r)
		}
		lo, ok := hex4(rest[2:])
		if !ok || lo < 0xDC00 || lo > 0xDFFF {
			return 0, p.errorf("lone high surrogate \\u%04x", r)
		}
		p.pos += 6
		return utf16.DecodeRune(r, lo), nil
	}
	return r, nil
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

// number parses a number literal following the JSON grammar
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? into the nearest double.
func (p *parser) number() error {
	start := p.pos
	d := p.data
	i := p.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case digits() == 0:
		p.pos = i
		return p.errorf("invalid number")
	}
	intTok := true
	if i < len(d) && d[i] == '.' {
		intTok = false
		i++
		if digits() == 0 {
			p.pos = i
			return p.errorf("invalid number: no digits after the decimal point")
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		intTok = false
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if digits() == 0 {
			p.pos = i
			return p.errorf("invalid number: no digits in the exponent")
		}
	}
	p.pos = i
	tok := d[start:i]
	if intTok && digitsIn(tok) <= 15 {
		// An integer of at most 15 digits is an exact double written the
		// way ECMAScript writes it, except for minus zero.
		if string(tok) == "-0" {
			tok = tok[1:]
		}
		p.out = append(p.out, tok...)
		return nil
	}
	f, err := strconv.ParseFloat(string(tok), 64)
	if err != nil || math.IsInf(f, 0) {
		p.pos = start
		return fmt.Errorf("%w: %w", ErrNumber, p.errorf("number %s is beyond the double range", tok))
	}
	p.out, err = AppendNumber(p.out, f)
	return err
}

func digitsIn(tok []byte) int {
	if tok[0] == '-' {
		return len(tok) - 1
	}
	return len(tok)
}

// appendEscaped appends the valid UTF-8 s as a canonical JSON string (see
// AppendString).
func appendEscaped(b []byte, s []byte) []byte {
	b = append(b, '"')
	start := 0
	for i, c := range s {
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		b = appendEscape(b, c)
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendEscape appends the canonical escape of the ASCII character c, one of
// '"', '\\' or a control character.
func appendEscape(b []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(b, '\\', c)
	case '\b':
		return append(b, '\\', 'b')
	case '\t':
		return append(b, '\\', 't')
	case '\n':
		return append(b, '\\', 'n')
	case '\f':
		return append(b, '\\', 'f')
	case '\r':
		return append(b, '\\', 'r')
	}
	return append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a canonical JSON string: '"' and '\\' escaped
// with a backslash, U+0008, U+0009, U+000A, U+000C and U+000D as \b, \t, \n,
// \f and \r, the other control characters below U+0020 as \u00xx (lower-case
// hex), and everything else as it is, in UTF-8. s must be valid UTF-8; each
// invalid byte is written as U+FFFD (as encoding/json does), so callers that
// must not alter data check utf8.ValidString first.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, s[start:i]...)
				b = append(b, "\uFFFD"...)
				i += size
				start = i
				continue
			}
			i += size
			continue
		}
		b = append(b, s[start:i]...)
		b = appendEscape(b, c)
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// AppendNumber appends f the way ECMAScript's Number::toString writes it
// (ECMA-262, as RFC 8785 §3.2.2.3 requires): the shortest decimal digits
// that round-trip, in plain notation for magnitudes from 1e-6 up to (not
// including) 1e21 and in exponent notation ("1e+21", "1.5e-7") outside it;
// negative zero is "0". NaN and the infinities are ErrNumber.
func AppendNumber(b []byte, f float64) ([]byte, error) {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return b, fmt.Errorf("%w: %v", ErrNumber, f)
	case f == 0:
		return append(b, '0'), nil
	case f == math.Trunc(f) && math.Abs(f) < 1<<53:
		// An integer a double holds exactly: its digits, as ECMAScript
		// writes them.
		return strconv.AppendInt(b, int64(f), 10), nil
	case f < 0:
		b = append(b, '-')
		f = -f
	}
	// The shortest round-trip digits d1.d2d3...e±x, as ECMAScript picks them
	// (the shortest, and of those the nearest).
	var buf, dbuf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, 64)
	ep := len(e) - 1
	for e[ep] != 'e' {
		ep--
	}
	exp, _ := strconv.Atoi(string(e[ep+1:])) // always well-formed
	var digits []byte
	if ep > 1 { // "d.ddd"
		digits = append(append(dbuf[:0], e[0]), e[2:ep]...)
	} else {
		digits = append(dbuf[:0], e[0])
	}
	k := len(digits) // s has k digits
	n := exp + 1     // value = s × 10^(n−k)
	switch {
	case k <= n && n <= 21:
		b = append(b, digits...)
		for range n - k {
			b = append(b, '0')
		}
	case 0 < n && n <= 21:
		b = append(b, digits[:n]...)
		b = append(b, '.')
		b = append(b, digits[n:]...)
	case -6 < n && n <= 0:
		b = append(b, '0', '.')
		for range -n {
			b = append(b, '0')
		}
		b = append(b, digits...)
	default:
		b = append(b, digits[0])
		if k > 1 {
			b = append(b, '.')
			b = append(b, digits[1:]...)
		}
		b = append(b, 'e')
		if n-1 >= 0 {
			b = append(b, '+')
		}
		b = strconv.AppendInt(b, int64(n-1), 10)
	}
	return b, nil
}

// CompareUTF16 compares a and b (UTF-8 strings) by their UTF-16 code units,
// the order RFC 8785 sorts object members in. It differs from byte order
// only where a character above U+FFFF (a surrogate pair in UTF-16, starting
// with 0xD800–0xDBFF) meets one in U+E000–U+FFFF.
func CompareUTF16(a, b string) int { return compareUTF16(a, b) }

// compareUTF16 is CompareUTF16 for strings and byte slices alike.
func compareUTF16[T string | []byte](a, b T) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	if i == n {
		return cmpInt(len(a), len(b))
	}
	if a[i] < utf8.RuneSelf && b[i] < utf8.RuneSelf {
		return cmpInt(int(a[i]), int(b[i]))
	}
	// Back up to the start of the rune the two differ in (the bytes before
	// are equal, so it starts at the same place in both).
	for i > 0 && !utf8.RuneStart(a[i]) {
		i--
	}
	ra, _ := utf8.DecodeRuneInString(string(a[i:min(i+utf8.UTFMax, len(a))]))
	rb, _ := utf8.DecodeRuneInString(string(b[i:min(i+utf8.UTFMax, len(b))]))
	if c := cmpInt(int(utf16First(ra)), int(utf16First(rb))); c != 0 {
		return c
	}
	// Both above U+FFFF with the same high surrogate: the low surrogates
	// order as the code points do. (Or invalid UTF-8: byte order.)
	if c := cmpInt(int(ra), int(rb)); c != 0 {
		return c
	}
	return cmpInt(int(a[i]), int(b[i]))
}

// utf16First returns the first UTF-16 code unit of r: r itself up to
// U+FFFF, its high surrogate (0xD800–0xDBFF) above.
func utf16First(r rune) rune {
	if r > 0xFFFF {
		return 0xD800 + (r-0x10000)>>10
	}
	return r
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
