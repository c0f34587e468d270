package canon

import (
	"encoding"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// The direct encoder: Go values written as canonical JSON in one pass, for
// the types records are made of (structs with json tags, maps with string
// keys, slices, strings, numbers, booleans, pointers, interfaces, and
// json.Marshalers), instead of encoding/json's output parsed and written
// again. It produces exactly what Marshal's general path (encoding/json,
// then Canonicalize) produces; anything it does not handle the same way
// (embedded structs, ",string" fields, non-string map keys,
// encoding.TextMarshalers, cycles) is errUnsupported, and Marshal takes the
// general path for the whole value.

// errUnsupported: the direct encoder leaves this value to the general path.
var errUnsupported = errors.New("canon: not for the direct encoder")

// maxEncodeDepth bounds the nesting the direct encoder follows (a cycle
// through pointers or maps ends here, and the general path reports it).
const maxEncodeDepth = 1000

var (
	marshalerType     = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
	isZeroerType      = reflect.TypeFor[interface{ IsZero() bool }]()
	numberType        = reflect.TypeFor[json.Number]()
	timeType          = reflect.TypeFor[time.Time]()
)

// field is how one struct field is written.
type field struct {
	name      string // as written, quoted canonically
	key       string // the member name
	index     int
	omitEmpty bool
	omitZero  bool
}

// plans caches the sorted fields of each struct type (or nil, for a type
// the direct encoder does not handle).
var plans sync.Map // reflect.Type → []field or errUnsupported

func structPlan(t reflect.Type) ([]field, error) {
	if p, ok := plans.Load(t); ok {
		if err, bad := p.(error); bad {
			return nil, err
		}
		return p.([]field), nil
	}
	fields, err := makePlan(t)
	if err != nil {
		plans.Store(t, err)
		return nil, err
	}
	plans.Store(t, fields)
	return fields, nil
}

func makePlan(t reflect.Type) ([]field, error) {
	var fields []field
	seen := map[string]bool{}
	for i := range t.NumField() {
		sf := t.Field(i)
		if sf.Anonymous {
			return nil, errUnsupported // promotion rules: the general path
		}
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = sf.Name
		} else if !validTagName(name) {
			return nil, errUnsupported
		}
		f := field{key: name, index: i}
		for opt := range strings.SplitSeq(opts, ",") {
			switch opt {
			case "omitempty":
				f.omitEmpty = true
			case "omitzero":
				f.omitZero = true
			case "":
			default:
				return nil, errUnsupported // ",string" and options to come
			}
		}
		if f.omitZero && !sf.Type.Implements(isZeroerType) && reflect.PointerTo(sf.Type).Implements(isZeroerType) {
			return nil, errUnsupported // addressability rules: the general path
		}
		if seen[name] {
			return nil, errUnsupported // encoding/json drops both
		}
		seen[name] = true
		f.name = string(AppendString(nil, name))
		fields = append(fields, f)
	}
	slices.SortFunc(fields, func(a, b field) int { return compareUTF16(a.key, b.key) })
	return fields, nil
}

// validTagName is encoding/json's test for a usable name in a json tag.
func validTagName(s string) bool {
	for _, c := range s {
		switch {
		case strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c):
		case !unicode.IsLetter(c) && !unicode.IsDigit(c):
			return false
		}
	}
	return true
}

// how is what the direct encoder does with values of one type.
type how uint8

const (
	byKind      how = iota // by the type's kind
	byMarshaler            // its MarshalJSON, canonicalized
	asNumber               // json.Number
	asBase64               // []byte
	asTime                 // time.Time: what its MarshalJSON writes
	notHere                // errUnsupported
)

// hows caches how for each type.
var hows sync.Map // reflect.Type → how

func howFor(t reflect.Type) how {
	if h, ok := hows.Load(t); ok {
		return h.(how)
	}
	h := byKind
	pt := reflect.PointerTo(t)
	switch {
	case t.Kind() == reflect.Interface:
	case t == timeType:
		h = asTime
	case t.Implements(marshalerType):
		h = byMarshaler
	case t.Kind() == reflect.Pointer:
	case pt.Implements(marshalerType), t.Implements(textMarshalerType), pt.Implements(textMarshalerType):
		h = notHere // addressability rules: the general path
	case t == numberType:
		h = asNumber
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		if et := t.Elem(); !et.Implements(marshalerType) && !reflect.PointerTo(et).Implements(marshalerType) &&
			!et.Implements(textMarshalerType) && !reflect.PointerTo(et).Implements(textMarshalerType) {
			h = asBase64
		} else {
			h = notHere
		}
	case t.Kind() == reflect.Map:
		if kt := t.Key(); kt.Kind() != reflect.String || kt.Implements(textMarshalerType) || reflect.PointerTo(kt).Implements(textMarshalerType) {
			h = notHere
		}
	}
	hows.Store(t, h)
	return h
}

// appendValue appends v in canonical form.
func appendValue(b []byte, v reflect.Value, depth int) ([]byte, error) {
	if depth > maxEncodeDepth {
		return b, errUnsupported
	}
	if !v.IsValid() {
		return append(b, "null"...), nil
	}
	switch howFor(v.Type()) {
	case byMarshaler:
		return appendMarshaler(b, v)
	case notHere:
		return b, errUnsupported
	case asTime:
		t := v.Interface().(time.Time)
		if y := t.Year(); y < 0 || y > 9999 {
			return b, errUnsupported // MarshalJSON refuses it
		}
		var buf [64]byte
		return AppendString(b, string(t.AppendFormat(buf[:0], time.RFC3339Nano))), nil
	case asNumber:
		f, err := strconv.ParseFloat(v.String(), 64)
		if err != nil {
			return b, errUnsupported
		}
		return AppendNumber(b, f)
	case asBase64:
		if v.IsNil() {
			return append(b, "null"...), nil
		}
		return AppendString(b, base64.StdEncoding.EncodeToString(v.Bytes())), nil
	}
	switch v.Kind() {
	case reflect.String:
		return AppendString(b, v.String()), nil
	case reflect.Bool:
		if v.Bool() {
			return append(b, "true"...), nil
		}
		return append(b, "false"...), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return AppendNumber(b, float64(v.Int()))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return AppendNumber(b, float64(v.Uint()))
	case reflect.Float32:
		// encoding/json writes the shortest digits for a float32, which
		// the general path then reads as a double.
		f, err := strconv.ParseFloat(strconv.FormatFloat(v.Float(), 'g', -1, 32), 64)
		if err != nil {
			return b, errUnsupported
		}
		return AppendNumber(b, f)
	case reflect.Float64:
		return AppendNumber(b, v.Float())
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return append(b, "null"...), nil
		}
		return appendValue(b, v.Elem(), depth+1)
	case reflect.Struct:
		return appendStruct(b, v, depth)
	case reflect.Map:
		return appendMap(b, v, depth)
	case reflect.Slice:
		if v.IsNil() {
			return append(b, "null"...), nil
		}
		return appendArray(b, v, depth)
	case reflect.Array:
		return appendArray(b, v, depth)
	default:
		return b, errUnsupported // channels, functions, complex numbers
	}
}

func appendMarshaler(b []byte, v reflect.Value) ([]byte, error) {
	if v.Kind() == reflect.Pointer && v.IsNil() {
		return append(b, "null"...), nil
	}
	m, ok := v.Interface().(json.Marshaler)
	if !ok {
		return b, errUnsupported
	}
	raw, err := m.MarshalJSON()
	if err != nil {
		return b, errUnsupported
	}
	c, err := Canonicalize(raw)
	if err != nil {
		return b, errUnsupported
	}
	return append(b, c...), nil
}

func appendStruct(b []byte, v reflect.Value, depth int) ([]byte, error) {
	fields, err := structPlan(v.Type())
	if err != nil {
		return b, err
	}
	b = append(b, '{')
	first := true
	for i := range fields {
		f := &fields[i]
		fv := v.Field(f.index)
		if f.omitEmpty && isEmpty(fv) || f.omitZero && isZero(fv) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, f.name...)
		b = append(b, ':')
		if b, err = appendValue(b, fv, depth+1); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

// isEmpty is encoding/json's omitempty test.
func isEmpty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Interface, reflect.Pointer:
		return v.IsZero()
	}
	return false
}

// isZero is encoding/json's omitzero test.
func isZero(v reflect.Value) bool {
	if v.Type().Implements(isZeroerType) {
		if v.Kind() == reflect.Pointer && v.IsNil() {
			return true
		}
		return v.Interface().(interface{ IsZero() bool }).IsZero()
	}
	return v.IsZero()
}

func appendMap(b []byte, v reflect.Value, depth int) ([]byte, error) {
	if v.IsNil() {
		return append(b, "null"...), nil
	}
	n := v.Len()
	if n == 0 {
		return append(b, '{', '}'), nil
	}
	type entry struct {
		k string
		v reflect.Value
	}
	entries := make([]entry, 0, n)
	it := v.MapRange()
	for it.Next() {
		k := it.Key().String()
		if !utf8.ValidString(k) {
			return b, errUnsupported // encoding/json's repair may merge keys
		}
		entries = append(entries, entry{k, it.Value()})
	}
	slices.SortFunc(entries, func(a, b entry) int { return compareUTF16(a.k, b.k) })
	b = append(b, '{')
	var err error
	for i, e := range entries {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendString(b, e.k)
		b = append(b, ':')
		if b, err = appendValue(b, e.v, depth+1); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

func appendArray(b []byte, v reflect.Value, depth int) ([]byte, error) {
	b = append(b, '[')
	var err error
	for i := range v.Len() {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = appendValue(b, v.Index(i), depth+1); err != nil {
			return b, err
		}
	}
	return append(b, ']'), nil
}
