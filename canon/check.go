package canon

import (
	"bytes"
	"math"
	"strconv"
	"unicode/utf8"
)

// IsCanonical reports whether data is already in canonical form: whether
// Canonicalize would accept it and return it unchanged. It does not
// allocate for the usual shapes (it does for member names with escapes and
// for numbers that are not small integers), which makes it much cheaper
// than canonicalising and comparing.
func IsCanonical(data []byte) bool {
	c := checker{data: data}
	return c.value(0) && c.pos == len(data)
}

type checker struct {
	data []byte
	pos  int
}

func (c *checker) value(depth int) bool {
	if c.pos >= len(c.data) {
		return false
	}
	switch ch := c.data[c.pos]; {
	case ch == '{':
		return c.object(depth + 1)
	case ch == '[':
		return c.array(depth + 1)
	case ch == '"':
		_, ok := c.str()
		return ok
	case ch == 't':
		return c.literal("true")
	case ch == 'f':
		return c.literal("false")
	case ch == 'n':
		return c.literal("null")
	case ch == '-' || ch >= '0' && ch <= '9':
		return c.number()
	}
	return false
}

func (c *checker) literal(word string) bool {
	if len(c.data)-c.pos < len(word) || string(c.data[c.pos:c.pos+len(word)]) != word {
		return false
	}
	c.pos += len(word)
	return true
}

func (c *checker) array(depth int) bool {
	if depth > maxDepth {
		return false
	}
	c.pos++ // '['
	if c.pos < len(c.data) && c.data[c.pos] == ']' {
		c.pos++
		return true
	}
	for {
		if !c.value(depth) || c.pos >= len(c.data) {
			return false
		}
		switch c.data[c.pos] {
		case ',':
			c.pos++
		case ']':
			c.pos++
			return true
		default:
			return false
		}
	}
}

func (c *checker) object(depth int) bool {
	if depth > maxDepth {
		return false
	}
	c.pos++ // '{'
	if c.pos < len(c.data) && c.data[c.pos] == '}' {
		c.pos++
		return true
	}
	var prev []byte // the previous member's name, raw
	prevEsc, first := false, true
	for {
		if c.pos >= len(c.data) || c.data[c.pos] != '"' {
			return false
		}
		start := c.pos + 1
		esc, ok := c.str()
		if !ok {
			return false
		}
		name := c.data[start : c.pos-1]
		if !first && !c.ordered(prev, prevEsc, name, esc) {
			return false
		}
		prev, prevEsc, first = name, esc, false
		if c.pos >= len(c.data) || c.data[c.pos] != ':' {
			return false
		}
		c.pos++
		if !c.value(depth) || c.pos >= len(c.data) {
			return false
		}
		switch c.data[c.pos] {
		case ',':
			c.pos++
		case '}':
			c.pos++
			return true
		default:
			return false
		}
	}
}

// ordered reports whether member name a sorts strictly before b. Both are
// raw canonical string bodies; escaped ones are decoded to compare.
func (c *checker) ordered(a []byte, aEsc bool, b []byte, bEsc bool) bool {
	if aEsc {
		a = unescape(a)
	}
	if bEsc {
		b = unescape(b)
	}
	return compareUTF16(a, b) < 0
}

// unescape decodes the body of a string str has accepted (so its escapes
// are the canonical ones: short forms and \u00xx).
func unescape(raw []byte) []byte {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		ch := raw[i]
		if ch != '\\' {
			out = append(out, ch)
			continue
		}
		i++
		switch raw[i] {
		case 'b':
			out = append(out, '\b')
		case 't':
			out = append(out, '\t')
		case 'n':
			out = append(out, '\n')
		case 'f':
			out = append(out, '\f')
		case 'r':
			out = append(out, '\r')
		case 'u':
			r, _ := hex4(raw[i+1:])
			out = append(out, byte(r))
			i += 4
		default: // '"', '\\'
			out = append(out, raw[i])
		}
	}
	return out
}

// str checks a string literal at c.pos and reports whether it had escapes.
func (c *checker) str() (escaped, ok bool) {
	c.pos++ // '"'
	d := c.data
	for c.pos < len(d) {
		ch := d[c.pos]
		if ch >= 0x20 && ch < utf8.RuneSelf && ch != '"' && ch != '\\' {
			c.pos++
			continue
		}
		switch {
		case ch == '"':
			c.pos++
			return escaped, true
		case ch < 0x20:
			return false, false
		case ch == '\\':
			escaped = true
			if c.pos+1 >= len(d) {
				return false, false
			}
			switch d[c.pos+1] {
			case '"', '\\', 'b', 't', 'n', 'f', 'r':
				c.pos += 2
			case 'u':
				// Only control characters without a short form, as \u00xx
				// in lower-case hex.
				if c.pos+6 > len(d) || d[c.pos+2] != '0' || d[c.pos+3] != '0' || (d[c.pos+4] != '0' && d[c.pos+4] != '1') {
					return false, false
				}
				x := d[c.pos+5]
				var v byte
				switch {
				case x >= '0' && x <= '9':
					v = x - '0'
				case x >= 'a' && x <= 'f':
					v = x - 'a' + 10
				default:
					return false, false
				}
				v += (d[c.pos+4] - '0') << 4
				switch v {
				case '\b', '\t', '\n', '\f', '\r':
					return false, false
				}
				c.pos += 6
			default:
				return false, false
			}
		case ch < utf8.RuneSelf:
			c.pos++
		default:
			r, size := utf8.DecodeRune(d[c.pos:])
			if r == utf8.RuneError && size == 1 {
				return false, false
			}
			c.pos += size
		}
	}
	return false, false
}

func (c *checker) number() bool {
	d := c.data
	start := c.pos
	i := c.pos
	if d[i] == '-' {
		i++
	}
	digits := 0
	switch {
	case i < len(d) && d[i] == '0':
		i++
		digits = 1
	default:
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
			digits++
		}
		if digits == 0 {
			return false
		}
	}
	isInt := true
	fracAt, fracEnd := 0, 0
	if i < len(d) && d[i] == '.' {
		isInt = false
		i++
		fracAt = i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		fracEnd = i
		if fracEnd == fracAt {
			return false
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		isInt = false
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		n := 0
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
			n++
		}
		if n == 0 {
			return false
		}
	}
	c.pos = i
	tok := d[start:i]
	if isInt && digits <= 15 {
		return string(tok) != "-0"
	}
	if fracEnd > 0 && fracEnd == i {
		// Plain notation with a fraction and no exponent. A decimal of at
		// most 15 significant digits round-trips through a double (DBL_DIG),
		// so no shorter decimal denotes the same double: without trailing
		// zeros it is the shortest form, which ECMAScript writes in plain
		// notation for magnitudes from 1e-6 to 1e21.
		frac := d[fracAt:fracEnd]
		if frac[len(frac)-1] == '0' {
			return false
		}
		intPart := d[fracAt-1-digits : fracAt-1]
		if string(intPart) != "0" {
			if digits+len(frac) <= 15 {
				return true
			}
		} else {
			zeros := 0
			for zeros < len(frac) && frac[zeros] == '0' {
				zeros++
			}
			if zeros <= 5 && len(frac)-zeros <= 15 {
				return true
			}
		}
	}
	f, err := strconv.ParseFloat(string(tok), 64)
	if err != nil || math.IsInf(f, 0) {
		return false
	}
	var buf [32]byte
	out, err := AppendNumber(buf[:0], f)
	return err == nil && bytes.Equal(out, tok)
}
