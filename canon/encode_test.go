package canon

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"
)

type inner struct {
	Z string   `json:"z"`
	A *float64 `json:"a,omitempty"`
}

type record struct {
	Zeta     string             `json:"zeta"`
	Alpha    int64              `json:"alpha"`
	Time     time.Time          `json:"time"`
	Maybe    *inner             `json:"maybe,omitempty"`
	Inner    inner              `json:"inner"`
	Args     any                `json:"args,omitempty"`
	Raw      json.RawMessage    `json:"raw,omitempty"`
	Bytes    []byte             `json:"bytes"`
	F32      float32            `json:"f32"`
	Num      json.Number        `json:"num,omitempty"`
	Budgets  map[string]float64 `json:"budgets,omitempty"`
	List     []string           `json:"list"`
	Arr      [2]bool            `json:"arr"`
	Skip     string             `json:"-"`
	NoTag    string
	When     time.Time `json:"when,omitzero"`
	Empty    []int     `json:"empty,omitempty"`
	private  int
	Unsigned uint64 `json:"unsigned"`
}

type embedded struct {
	inner
	B int `json:"b"`
}

type stringOpt struct {
	N int `json:"n,string"`
}

type ptrMarshaler struct{ v int }

func (p *ptrMarshaler) MarshalJSON() ([]byte, error) { return []byte(`{"b":1,"a":2}`), nil }

type holdsPtrMarshaler struct {
	P ptrMarshaler `json:"p"`
}

type textKey string

func (k textKey) MarshalText() ([]byte, error) { return []byte("k-" + string(k)), nil }

// sameName is a struct with two fields named "x" in JSON (made at run
// time, as vet refuses such tags in source).
func sameName() any {
	t := reflect.StructOf([]reflect.StructField{
		{Name: "A", Type: reflect.TypeFor[int](), Tag: `json:"x"`},
		{Name: "B", Type: reflect.TypeFor[int](), Tag: `json:"x"`},
	})
	v := reflect.New(t).Elem()
	v.Field(0).SetInt(1)
	v.Field(1).SetInt(2)
	return v.Interface()
}

// The direct encoder writes exactly what the general path writes, or
// leaves the value to it.
func TestMarshalDirect(t *testing.T) {
	amount := 389.97
	big := int64(1)<<53 + 1
	for _, tc := range []struct {
		name   string
		v      any
		direct bool // the direct encoder takes it
	}{
		{"nil", nil, true},
		{"string with escapes", "a\"b\\c\n\u2028<>&\x01é", true},
		{"invalid UTF-8", "a\xffb", true},
		{"numbers", []any{0, -0.0, 1e21, 1e-7, 123456789.125, big, uint64(math.MaxUint64), float32(0.1), int8(-3)}, true},
		{"record", record{Zeta: "z", Alpha: big, Time: time.Date(2026, 12, 6, 9, 0, 0, 123456789, time.FixedZone("x", 3600)),
			Maybe: &inner{Z: "m", A: &amount}, Inner: inner{Z: "i"}, Args: map[string]any{"sku": "A-100", "qty": 3.0, "nested": []any{true, nil, "x"}},
			Raw: json.RawMessage(` { "b" : 1, "a" : [1.50, "x"] } `), Bytes: []byte{0, 1, 2, 250}, F32: 3.14159, Num: "1.50e3",
			Budgets: map[string]float64{"b": 1, "a": 2}, List: nil, Skip: "no", NoTag: "yes", private: 7, Unsigned: 42}, true},
		{"record, zero", record{}, true},
		{"pointer to record", &record{Zeta: "p"}, true},
		{"map order by UTF-16", map[string]int{"\uE000": 1, "\U0001F600": 2, "a": 3, "": 4, "é": 5}, true},
		{"nested maps", map[string]any{"b": map[string]any{"d": 1, "c": []any{map[string]any{"y": 1, "x": 2}}}, "a": nil}, true},
		{"empty map and slice", map[string]any{"m": map[string]int{}, "s": []int{}}, true},
		{"times", []time.Time{{}, time.Date(2026, 12, 6, 9, 0, 0, 1, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}, false},
		{"a time", time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", -9000)), true},
		{"integers around 2^53", []float64{1 << 53, 1<<53 - 1, -(1<<53 - 1), 1 << 60, 1e20, 123456789012345678}, true},
		{"embedded struct", embedded{inner: inner{Z: "e"}, B: 2}, false},
		{"string option", stringOpt{N: 5}, false},
		{"pointer-receiver marshaler", holdsPtrMarshaler{}, false},
		{"text-marshaler keys", map[textKey]int{"a": 1}, false},
		{"duplicate names", sameName(), false},
		{"int keys", map[int]string{2: "b", 1: "a"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, werr := marshalGeneral(tc.v)
			direct, derr := appendValue(nil, reflect.ValueOf(tc.v), 0)
			if (derr == nil) != tc.direct {
				t.Fatalf("direct encoder: %s, %v; want it to take the value: %v", direct, derr, tc.direct)
			}
			if derr == nil && (werr != nil || !bytes.Equal(direct, want)) {
				t.Fatalf("direct  %s\ngeneral %s (%v)", direct, want, werr)
			}
			got, err := Marshal(tc.v)
			if werr != nil {
				if err == nil {
					t.Fatalf("Marshal = %s where the general path fails: %v", got, werr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Marshal = %s, %v; want %s, %v", got, err, want, werr)
			}
		})
	}
}

// Values the general path refuses are refused by Marshal too.
func TestMarshalDirectErrors(t *testing.T) {
	for _, v := range []any{math.NaN(), map[string]any{"x": math.Inf(1)}, make(chan int), json.RawMessage(`{`)} {
		if b, err := Marshal(v); err == nil {
			t.Errorf("Marshal(%#v) = %s, want an error", v, b)
		}
	}
	if _, err := Marshal(math.NaN()); !errors.Is(err, ErrNumber) && err == nil {
		t.Error("NaN accepted")
	}
}

// Any JSON document, decoded into Go values, is written by the direct
// encoder exactly as by the general path.
func FuzzMarshalDirect(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":[true,null,"x",1.5e300]}`, `"\u2028"`, `[1e-7,0.1,-0]`, `{"\ue000":1,"\ud83d\ude00":2}`, `{}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var v any
		if json.Unmarshal(data, &v) != nil {
			return
		}
		want, werr := marshalGeneral(v)
		got, err := appendValue(nil, reflect.ValueOf(v), 0)
		if werr != nil {
			if err == nil {
				t.Fatalf("direct %s where the general path fails: %v", got, werr)
			}
			return
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("direct  %s (%v)\ngeneral %s", got, err, want)
		}
	})
}

func BenchmarkMarshal(b *testing.B) {
	amount := 389.97
	v := record{Zeta: "z", Alpha: 42, Time: time.Now(), Maybe: &inner{Z: "m", A: &amount},
		Args: map[string]any{"sku": "A-100", "quantity": 3.0, "unit_price_usd": 129.99, "note": "rush"}, List: []string{"a", "b"},
		Budgets: map[string]float64{"daily": 1200}}
	for _, bc := range []struct {
		name string
		fn   func(any) ([]byte, error)
	}{{"direct", Marshal}, {"general", marshalGeneral}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.fn(v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
