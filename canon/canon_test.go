package canon

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/interlock-dev/interlock/internal/testenv"
)

// TestRFC8785NumberSamples runs the number serialisation samples of
// RFC 8785 Appendix B: the IEEE 754 bit pattern and the expected text.
func TestRFC8785NumberSamples(t *testing.T) {
	tests := []struct {
		bits string
		want string // "" for an error (NaN, Infinity)
	}{
		{"0000000000000000", "0"},
		{"8000000000000000", "0"}, // minus zero
		{"0000000000000001", "5e-324"},
		{"8000000000000001", "-5e-324"},
		{"7fefffffffffffff", "1.7976931348623157e+308"},
		{"ffefffffffffffff", "-1.7976931348623157e+308"},
		{"4340000000000000", "9007199254740992"},
		{"c340000000000000", "-9007199254740992"},
		{"4430000000000000", "295147905179352830000"},
		{"7fffffffffffffff", ""}, // NaN
		{"7ff0000000000000", ""}, // Infinity
		{"44b52d02c7e14af5", "9.999999999999997e+22"},
		{"44b52d02c7e14af6", "1e+23"},
		{"44b52d02c7e14af7", "1.0000000000000001e+23"},
		{"444b1ae4d6e2ef4e", "999999999999999700000"},
		{"444b1ae4d6e2ef4f", "999999999999999900000"},
		{"444b1ae4d6e2ef50", "1e+21"},
		{"3eb0c6f7a0b5ed8c", "9.999999999999997e-7"},
		{"3eb0c6f7a0b5ed8d", "0.000001"},
		{"41b3de4355555553", "333333333.3333332"},
		{"41b3de4355555554", "333333333.33333325"},
		{"41b3de4355555555", "333333333.3333333"},
		{"41b3de4355555556", "333333333.3333334"},
		{"41b3de4355555557", "333333333.33333343"},
		{"becbf647612f3696", "-0.0000033333333333333333"},
		{"43143ff3c1cb0959", "1424953923781206.2"},
	}
	for _, tc := range tests {
		t.Run(tc.bits, func(t *testing.T) {
			raw, err := hex.DecodeString(tc.bits)
			if err != nil {
				t.Fatal(err)
			}
			f := math.Float64frombits(binary.BigEndian.Uint64(raw))
			got, err := AppendNumber(nil, f)
			if tc.want == "" {
				if !errors.Is(err, ErrNumber) {
					t.Fatalf("AppendNumber(%v) = %q, %v; want ErrNumber", f, got, err)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("AppendNumber(%v) = %q, %v; want %q", f, got, err, tc.want)
			}
			// The expected text denotes the same double, and canonicalising
			// it (as JSON text) is a fixed point.
			if back, err := strconv.ParseFloat(tc.want, 64); err != nil || back != f {
				t.Errorf("ParseFloat(%q) = %v, %v; want %v", tc.want, back, err, f)
			}
			if c, err := Canonicalize([]byte(tc.want)); err != nil || string(c) != tc.want {
				t.Errorf("Canonicalize(%q) = %q, %v", tc.want, c, err)
			}
		})
	}
}

// TestRFC8785Sorting is the property sorting example of RFC 8785 §3.2.3:
// names are sorted by UTF-16 code units, so the emoji (U+1F600, a
// surrogate pair starting 0xD83D) comes before U+FB33.
func TestRFC8785Sorting(t *testing.T) {
	in := `{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}`
	want := "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\"," +
		"\"\u00f6\":\"Latin Small Letter O With Diaeresis\",\"\u20ac\":\"Euro Sign\"," +
		"\"\U0001F600\":\"Emoji: Grinning Face\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}"
	got, err := Canonicalize([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("Canonicalize:\n got %s\nwant %s", got, want)
	}
}

// TestRFC8785Example is the example of RFC 8785 §3.2.4 with its expected
// output.
func TestRFC8785Example(t *testing.T) {
	in := `{
  "numbers": [333333333.33333329, 1E30, 4.50,
              2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}`
	want := `{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`
	got, err := Canonicalize([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("Canonicalize:\n got %s\nwant %s", got, want)
	}
}

func TestCanonicalize(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"whitespace", " \t\r\n{ \"b\" : 1 , \"a\" : [ 1 , 2 ] } \n", `{"a":[1,2],"b":1}`},
		{"nested sort", `{"z":{"b":1,"a":2},"a":[{"y":1,"x":2}]}`, `{"a":[{"x":2,"y":1}],"z":{"a":2,"b":1}}`},
		{"empty containers", `{"a":{},"b":[]}`, `{"a":{},"b":[]}`},
		{"scalars", `[true,false,null,"x",0]`, `[true,false,null,"x",0]`},
		{"top-level string", `"a\u0041"`, `"aA"`},
		{"minus zero", `-0`, `0`},
		{"minus zero fraction", `-0.0e5`, `0`},
		{"trailing zeros", `[1.0,1.50,100,1e2,1E+2,10e-1]`, `[1,1.5,100,100,100,1]`},
		{"1e21", `1e21`, `1e+21`},
		{"below 1e21", `999999999999999999999.0`, `1e+21`},
		{"1e20", `1e20`, `100000000000000000000`},
		{"1e-6", `0.000001`, `0.000001`},
		{"1e-7", `0.0000001`, `1e-7`},
		{"negative exponent", `-1.5e-9`, `-1.5e-9`},
		{"2^53+1 rounds to a double", `9007199254740993`, `9007199254740992`},
		{"large integer", `12345678901234567890`, `12345678901234567000`},
		{"underflow to zero", `1e-400`, `0`},
		{"escapes", `"\" \\ \/ \b \f \n \r \t \u0001 \u001f \u007f \u2028"`, "\"\\\" \\\\ / \\b \\f \\n \\r \\t \\u0001 \\u001f \u007f \u2028\""},
		{"html is not escaped", `"<a&b>"`, `"<a&b>"`},
		{"raw utf-8 kept", `"é😀"`, `"é😀"`},
		{"surrogate pair escape", `"\ud83d\ude00"`, `"😀"`},
		{"upper-case hex escape", `"\u00E9"`, `"é"`},
		{"sort by utf-16 not code point", `{"\uffff":1,"\ud800\udc00":2}`, `{"𐀀":2,"` + "\uffff" + `":1}`},
		{"sort prefix first", `{"ab":1,"a":2,"":3}`, `{"":3,"a":2,"ab":1}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Canonicalize([]byte(tc.in))
			if err != nil {
				t.Fatalf("Canonicalize(%s): %v", tc.in, err)
			}
			if string(got) != tc.want {
				t.Errorf("Canonicalize(%s)\n got %s\nwant %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestCanonicalizeRejects(t *testing.T) {
	tests := []struct {
		name, in string
	}{
		{"empty", ``},
		{"space only", `  `},
		{"two values", `1 2`},
		{"trailing comma array", `[1,]`},
		{"trailing comma object", `{"a":1,}`},
		{"unquoted name", `{a:1}`},
		{"single quotes", `'a'`},
		{"missing colon", `{"a" 1}`},
		{"unclosed array", `[1`},
		{"unclosed object", `{"a":1`},
		{"unclosed string", `"abc`},
		{"duplicate name", `{"a":1,"a":2}`},
		{"duplicate name after unescaping", `{"a":1,"\u0061":2}`},
		{"duplicate name nested", `[{"x":{"b":1,"b":1}}]`},
		{"lone high surrogate", `"\ud800"`},
		{"lone high surrogate then text", `"\ud800abcdef"`},
		{"high surrogate then non-low escape", `"\ud800\u0041"`},
		{"lone low surrogate", `"\udc00"`},
		{"reversed pair", `"\ude00\ud83d"`},
		{"invalid utf-8", "\"\xff\""},
		{"invalid utf-8 after escape", "\"\\n\xc3\x28\""},
		{"raw control character", "\"a\nb\""},
		{"bad escape", `"\x41"`},
		{"short unicode escape", `"\u12"`},
		{"leading zero", `01`},
		{"leading plus", `+1`},
		{"bare minus", `-`},
		{"no fraction digits", `1.`},
		{"no int digits", `.5`},
		{"no exponent digits", `1e`},
		{"hex", `0x10`},
		{"NaN", `NaN`},
		{"Infinity", `Infinity`},
		{"overflow", `1e400`},
		{"negative overflow", `-1e309`},
		{"bad literal", `tru`},
		{"capital literal", `True`},
		{"too deep", strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Canonicalize([]byte(tc.in))
			if err == nil {
				t.Fatalf("Canonicalize(%q) = %q, want an error", tc.in, got)
			}
		})
	}
	if _, err := Canonicalize([]byte(`1e400`)); !errors.Is(err, ErrNumber) {
		t.Errorf("overflow error %v does not wrap ErrNumber", err)
	}
	var se *SyntaxError
	if _, err := Canonicalize([]byte(`{"a":1,"a":2}`)); !errors.As(err, &se) || !strings.Contains(se.Msg, "duplicate") {
		t.Errorf("duplicate name error = %v, want a SyntaxError naming the duplicate", err)
	}
	if _, err := Canonicalize([]byte(strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth))); err != nil {
		t.Errorf("nesting of exactly %d: %v", maxDepth, err)
	}
}

func TestIsCanonical(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{`{"a":[1,2.5,-3,1e+21,1e-7,0.000001,"x",true,false,null],"b":{}}`, true},
		{`{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`, true},
		{`"\u001f\b\t\n\f\r\"\\"`, true},
		{"\"\u007f\u2028é😀\"", true},
		{`{"\n":1,"\u0001":2}`, false}, // U+0001 sorts before U+000A
		{`{"\u0001":2,"\n":1}`, true},
		{"{\"\U00010000\":1,\"\uffff\":2}", true}, // UTF-16: D800 DC00 before FFFF
		{"{\"\uffff\":2,\"\U00010000\":1}", false},
		{`[]`, true},
		{`0`, true},
		{`123456789012345`, true},
		{`1234567890123456`, true},
		{`12345678901234567890`, false}, // not the double's shortest form
		{`9007199254740993`, false},
		{`{"a":1 }`, false},
		{` {"a":1}`, false},
		{`{"b":1,"a":2}`, false},
		{`{"a":1,"a":1}`, false},
		{`"\/"`, false},
		{`"\u0041"`, false},
		{`"\u001F"`, false},
		{`"\u000a"`, false},
		{`"\ud83d\ude00"`, false},
		{`1.0`, false},
		{`-0`, false},
		{`1E2`, false},
		{`1e21`, false},
		{`1e+21`, true},
		{`129.99`, true},
		{`-0.5`, true},
		{`0.000001`, true},
		{`0.0000015`, true},   // 1.5e-6: still plain
		{`0.00000015`, false}, // 1.5e-7 is written 1.5e-7
		{`123456789.012345`, true},
		{`1234567890.12345678`, false}, // 18 digits: not the shortest form
		{`0.30000000000000004`, true},
		{`0.1000000000000000055511151231257827`, false},
		{`5.0`, false},
		{`-0.0`, false},
		{`0.10`, false},
		{`0.0000001`, false},
		{`01`, false},
		{`1e400`, false},
		{"\"\xff\"", false},
		{`{"a":1}x`, false},
		{``, false},
	}
	for _, tc := range tests {
		in := tc.in
		if got := IsCanonical([]byte(in)); got != tc.want {
			t.Errorf("IsCanonical(%s) = %v, want %v", in, got, tc.want)
		}
		// Consistent with Canonicalize.
		out, err := Canonicalize([]byte(in))
		if want := err == nil && bytes.Equal(out, []byte(in)); want != tc.want {
			t.Errorf("test case %s disagrees with Canonicalize (%s, %v)", in, out, err)
		}
	}
}

// TestIsCanonicalNumbers checks IsCanonical's fast paths for numbers
// against Canonicalize on many random decimal literals.
func TestIsCanonicalNumbers(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	digits := func(n int, zeroBias bool) string {
		b := make([]byte, n)
		for i := range b {
			if zeroBias && r.IntN(3) == 0 {
				b[i] = '0'
			} else {
				b[i] = byte('0' + r.IntN(10))
			}
		}
		return string(b)
	}
	for range 200000 {
		var sb strings.Builder
		if r.IntN(4) == 0 {
			sb.WriteByte('-')
		}
		if r.IntN(3) == 0 {
			sb.WriteByte('0')
		} else {
			sb.WriteByte(byte('1' + r.IntN(9)))
			sb.WriteString(digits(r.IntN(20), true))
		}
		if r.IntN(4) != 0 {
			sb.WriteByte('.')
			sb.WriteString(digits(1+r.IntN(20), true))
		}
		if r.IntN(5) == 0 {
			sb.WriteString([]string{"e", "E", "e+", "e-"}[r.IntN(4)])
			sb.WriteString(strconv.Itoa(r.IntN(30)))
		}
		in := []byte(sb.String())
		out, err := Canonicalize(in)
		if want := err == nil && bytes.Equal(out, in); IsCanonical(in) != want {
			t.Fatalf("IsCanonical(%s) = %v, but Canonicalize gives %s, %v", in, !want, out, err)
		}
	}
}

func TestMarshal(t *testing.T) {
	type inner struct {
		Z string  `json:"z"`
		A float64 `json:"a"`
	}
	tests := []struct {
		name string
		in   any
		want string
	}{
		{"map sorted", map[string]any{"b": 1, "a": "x"}, `{"a":"x","b":1}`},
		{"struct fields sorted", inner{Z: "<&>", A: 1e21}, `{"a":1e+21,"z":"<&>"}`},
		{"int64 beyond 2^53 is a double", map[string]int64{"n": 1<<53 + 1}, `{"n":9007199254740992}`},
		{"raw message re-canonicalised", json.RawMessage(`{ "b":[1.50], "a":null }`), `{"a":null,"b":[1.5]}`},
		{"nil", nil, `null`},
		{"u2028 not escaped", "\u2028", "\"\u2028\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Marshal(tc.in)
			if err != nil || string(got) != tc.want {
				t.Errorf("Marshal = %s, %v; want %s", got, err, tc.want)
			}
		})
	}
	if _, err := Marshal(math.NaN()); err == nil {
		t.Error("Marshal(NaN) succeeded")
	}
	if _, err := Marshal(make(chan int)); err == nil {
		t.Error("Marshal(chan) succeeded")
	}
}

func TestCompareUTF16(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "a", -1},
		{"a", "b", -1},
		{"b", "a", 1},
		{"ab", "a", 1},
		{"é", "z", 1},
		{"\U0001F600", "\uFB33", -1}, // surrogate pair (D83D) before FB33
		{"\uFB33", "\U0001F600", 1},
		{"\U0001F600", "\u20AC", 1}, // D83D after 20AC
		{"\U00010000", "\U00010001", -1},
		{"\U0001F600", "\U0001F601", -1}, // same high surrogate
		{"x\U0010FFFF", "x\uE000", -1},
		{"\uD7FF", "\U00010000", -1},
	}
	for _, tc := range tests {
		if got := CompareUTF16(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareUTF16(%+q, %+q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		// Against the definition: compare the UTF-16 encodings.
		ua, ub := utf16Units(tc.a), utf16Units(tc.b)
		if def := cmpUnits(ua, ub); def != tc.want {
			t.Errorf("test case (%+q, %+q) disagrees with the UTF-16 definition (%d)", tc.a, tc.b, def)
		}
	}
}

func utf16Units(s string) []uint16 {
	var u []uint16
	for _, r := range s {
		if r > 0xFFFF {
			r -= 0x10000
			u = append(u, uint16(0xD800+(r>>10)), uint16(0xDC00+(r&0x3FF)))
		} else {
			u = append(u, uint16(r))
		}
	}
	return u
}

func cmpUnits(a, b []uint16) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return cmpInt(int(a[i]), int(b[i]))
		}
	}
	return cmpInt(len(a), len(b))
}

// TestCompareUTF16Random checks CompareUTF16 against the UTF-16
// definition on random strings mixing the ranges where UTF-8 and UTF-16
// order differ.
func TestCompareUTF16Random(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pick := []rune{'a', 'b', 0x7F, 0xE9, 0x20AC, 0xD7FF, 0xE000, 0xFB33, 0xFFFF, 0x10000, 0x1F600, 0x1F601, 0x10FFFF}
	gen := func() string {
		var b strings.Builder
		for range r.IntN(4) {
			b.WriteRune(pick[r.IntN(len(pick))])
		}
		return b.String()
	}
	for range 20000 {
		a, b := gen(), gen()
		if got, want := CompareUTF16(a, b), cmpUnits(utf16Units(a), utf16Units(b)); got != want {
			t.Fatalf("CompareUTF16(%+q, %+q) = %d, want %d", a, b, got, want)
		}
	}
}

// TestNumbersAgainstNode compares AppendNumber with JavaScript's own
// JSON.stringify (the definition RFC 8785 refers to) on random doubles,
// including many with few significant digits and extreme exponents.
func TestNumbersAgainstNode(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns node")
	}
	node := testenv.Node(t)
	r := rand.New(rand.NewPCG(3, 4))
	var floats []float64
	for range 20000 {
		floats = append(floats, math.Float64frombits(r.Uint64()))
	}
	for e := -330; e <= 310; e++ {
		for _, m := range []float64{1, 1.5, 3.0000000000000004, 9.999999999999998, 123456789} {
			floats = append(floats, m*math.Pow(10, float64(e)))
		}
	}
	for range 5000 {
		floats = append(floats, float64(r.Int64N(1<<62))/math.Pow(10, float64(r.IntN(30))))
	}
	var in bytes.Buffer
	var valid []float64
	for _, f := range floats {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		valid = append(valid, f)
		fmt.Fprintf(&in, "%016x\n", math.Float64bits(f))
	}
	cmd := exec.Command(node, "-e", `
const lines = require('fs').readFileSync(0, 'utf8').trim().split('\n');
const out = lines.map(h => JSON.stringify(Buffer.from(h, 'hex').readDoubleBE(0)));
process.stdout.write(out.join('\n') + '\n');`)
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	i, bad := 0, 0
	for sc.Scan() {
		if i >= len(valid) {
			t.Fatalf("node printed more lines than it was given")
		}
		got, err := AppendNumber(nil, valid[i])
		if err != nil || string(got) != sc.Text() {
			t.Errorf("AppendNumber(%016x) = %q, %v; JavaScript writes %q", math.Float64bits(valid[i]), got, err, sc.Text())
			if bad++; bad > 10 {
				t.FailNow()
			}
		}
		i++
	}
	if i != len(valid) {
		t.Fatalf("node printed %d lines for %d numbers", i, len(valid))
	}
}

// FuzzCanonicalize: never panics; accepted input gives valid JSON that is a
// fixed point and denotes the same value as the input.
func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{
		`{"b":[1,2.5,-0,1e21,"x"],"a":{"\u00e9":null,"\ud83d\ude00":true}}`,
		`[]`, `"\u0000"`, `1E-7`, `{"a":{"a":{"a":[]}}}`, `{"a":1,"a":2}`, `"\ud800"`,
		`[1.7976931348623157e308, 5e-324, 123456789012345678901234567890]`,
		"\"\xe2\x80\xa8\"", `{"\uffff":1,"\ud800\udc00":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Canonicalize(in)
		if err != nil {
			if IsCanonical(in) {
				t.Fatalf("IsCanonical(%q) = true but Canonicalize rejects it: %v", in, err)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("Canonicalize(%q) = %q: not valid JSON", in, out)
		}
		again, err := Canonicalize(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not a fixed point: %q -> %q -> %q, %v", in, out, again, err)
		}
		if !IsCanonical(out) {
			t.Fatalf("IsCanonical(%q) = false for Canonicalize's output", out)
		}
		if got, want := IsCanonical(in), bytes.Equal(in, out); got != want {
			t.Fatalf("IsCanonical(%q) = %v, want %v (canonical form %q)", in, got, want, out)
		}
		var vin, vout any
		if err := json.Unmarshal(in, &vin); err != nil {
			t.Fatalf("Canonicalize accepted %q but encoding/json rejects it: %v", in, err)
		}
		if err := json.Unmarshal(out, &vout); err != nil {
			t.Fatalf("encoding/json rejects the output %q: %v", out, err)
		}
		if !reflect.DeepEqual(vin, vout) {
			t.Fatalf("value changed: %q (%#v) -> %q (%#v)", in, vin, out, vout)
		}
	})
}

func BenchmarkIsCanonical(b *testing.B) {
	in, err := Canonicalize([]byte(`{"agent":"procurement-bot","tool":"acme.place_order","args":{"sku":"A-100","quantity":3,"unit_price_usd":129.99,"note":"rush \"order\""},"effect":"allow","rule":"small-orders","reasons":["amount 389.97 < 400"],"risk_score":42,"latency_us":17}`))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if !IsCanonical(in) {
			b.Fatal("not canonical")
		}
	}
}

func BenchmarkCanonicalize(b *testing.B) {
	raw := []byte(`{"agent":"procurement-bot","tool":"acme.place_order","args":{"sku":"A-100","quantity":3,"unit_price_usd":129.99,"note":"rush \"order\""},"effect":"allow","rule":"small-orders","reasons":["amount 389.97 < 400"],"risk_score":42,"latency_us":17}`)
	canonical, err := Canonicalize(raw)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		in   []byte
	}{{"unsorted", raw}, {"canonical", canonical}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.in)))
			for b.Loop() {
				if _, err := Canonicalize(bc.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
