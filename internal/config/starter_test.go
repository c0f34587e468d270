package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestStarterParsesAndValidates(t *testing.T) {
	cfg, err := Parse(Starter(), "interlock.yaml", LoadOptions{Getenv: envOf(nil)})
	if err != nil {
		t.Fatalf("Starter() does not load:\n%v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Starter() does not validate:\n%v", err)
	}
	if cfg.Listen != DefaultListen || len(cfg.Upstreams) != 0 {
		t.Errorf("starter: listen %q, %d upstreams; want the defaults and no upstream", cfg.Listen, len(cfg.Upstreams))
	}
	// Starter returns a fresh copy each time.
	b := Starter()
	b[0] = 'X'
	if Starter()[0] == 'X' {
		t.Error("Starter() shares its buffer between calls")
	}
}

// uncommentExamples turns the commented-out upstream examples below
// "upstreams: []" into live YAML.
func uncommentExamples(t *testing.T, src string) string {
	t.Helper()
	lines := strings.Split(src, "\n")
	start := -1
	for i, l := range lines {
		if l == "upstreams: []" {
			start = i
			break
		}
	}
	if start < 0 {
		t.Fatal(`starter has no "upstreams: []" line`)
	}
	lines[start] = "upstreams:"
	n := 0
	for i := start + 1; i < len(lines) && strings.HasPrefix(lines[i], "#"); i++ {
		lines[i] = strings.TrimPrefix(lines[i], "#")
		n++
	}
	if n < 10 {
		t.Fatalf("only %d example lines after upstreams: []", n)
	}
	return strings.Join(lines, "\n")
}

func TestStarterExamples(t *testing.T) {
	src := uncommentExamples(t, string(Starter()))
	cfg, err := Parse([]byte(src), "interlock.yaml", LoadOptions{Getenv: envOf(map[string]string{"ACME_API_KEY": "k"})})
	if err != nil {
		t.Fatalf("uncommented starter examples do not load:\n%v\n%s", err, src)
	}
	if len(cfg.Upstreams) != 2 {
		t.Fatalf("got %d upstreams, want 2 (one HTTP, one stdio)", len(cfg.Upstreams))
	}
	acme, files := cfg.Upstreams[0], cfg.Upstreams[1]
	if acme.URL == "" || acme.Headers["Authorization"] != "Bearer k" {
		t.Errorf("HTTP example: url %q, Authorization %q", acme.URL, acme.Headers["Authorization"])
	}
	if want := "npx -y @modelcontextprotocol/server-filesystem /tmp"; strings.Join(files.Command, " ") != want {
		t.Errorf("stdio example command = %q, want %q", strings.Join(files.Command, " "), want)
	}

	// Without the secret in the environment the example says which
	// variable is missing.
	_, err = Parse([]byte(src), "interlock.yaml", LoadOptions{Getenv: envOf(nil)})
	if err == nil || !strings.Contains(err.Error(), "environment variable ACME_API_KEY is not set") {
		t.Errorf("without ACME_API_KEY: error = %v", err)
	}
}

// TestStarterShowsEveryKey walks the schema and checks that each key
// appears in the starter (live or commented out).
func TestStarterShowsEveryKey(t *testing.T) {
	src := string(Starter())
	var walk func(reflect.Type, string)
	walk = func(typ reflect.Type, path string) {
		for _, f := range fieldsOf(typ) {
			ft := typ.Field(f.index).Type
			if !strings.Contains(src, f.key+":") {
				t.Errorf("starter does not show %s%s", path, f.key)
			}
			for ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft, path+f.key+".")
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	if !strings.Contains(src, "${ACME_API_KEY}") {
		t.Error("starter HTTP example should take its secret from ${ACME_API_KEY}")
	}
}
