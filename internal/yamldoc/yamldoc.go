// Package yamldoc reads a YAML file that must hold exactly one document into
// a node tree, turning every parser failure into a problem with its line.
// The strict decoders of the configuration and the policy file walk that
// tree themselves (unknown keys, kinds, lines).
//
// It must not interpret the document.
package yamldoc

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Parse returns the root node of data's single document, or nil for an
// empty document. Each problem goes to report with its line (0 when the
// parser does not say); ok is false when the YAML is broken. It never
// panics: the YAML library's own panics become a problem.
func Parse(data []byte, report func(line int, msg string)) (root *yaml.Node, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			report(0, "invalid YAML: the parser failed on this file")
			root, ok = nil, false
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, true
		}
		report(SyntaxError(err))
		return nil, false
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		report(extra.Line, `only one YAML document is allowed; remove the second one (after "---")`)
	case !errors.Is(err, io.EOF):
		report(SyntaxError(err))
		return nil, false
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, true
		}
		return doc.Content[0], true
	}
	return &doc, true
}

// SyntaxError splits a YAML library error into its line (0 if none) and a
// message that starts with "invalid YAML: ".
func SyntaxError(err error) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				line, msg = n, tail
			}
		}
	}
	return line, "invalid YAML: " + msg
}
