package config

import (
	"slices"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	// Line is the 1-based line in the file the problem points at, or 0 when
	// it has no place in the file (a value that was left to its default, or
	// a Config built in code).
	Line int
	// Path names the value, e.g. "upstreams[1].url" or "log.level"; for a
	// key that does not belong somewhere it names the enclosing mapping ("" for
	// the top level).
	Path string
	// Msg says what is wrong. It never contains the expanded value of an
	// environment variable, nor any header or env value.
	Msg string
}

// String formats the problem without its file and line: "path: msg".
func (p Problem) String() string {
	if p.Path == "" {
		return p.Msg
	}
	return p.Path + ": " + p.Msg
}

// Error is the error Load, Parse and Validate return when the configuration
// has problems. It lists every problem found, not just the first.
type Error struct {
	// File is the name the configuration was loaded from ("" when unknown).
	File string
	// Problems are sorted by line; problems without a line come last.
	Problems []Problem
}

// Error prints one problem per line as "file:line: path: message".
func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		switch {
		case e.File != "" && p.Line > 0:
			b.WriteString(e.File + ":" + strconv.Itoa(p.Line) + ": ")
		case e.File != "":
			b.WriteString(e.File + ": ")
		case p.Line > 0:
			b.WriteString("line " + strconv.Itoa(p.Line) + ": ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// newError sorts and de-duplicates problems and wraps them in an *Error.
func newError(file string, problems []Problem) *Error {
	ps := slices.Clone(problems)
	slices.SortStableFunc(ps, func(a, b Problem) int {
		switch {
		case a.Line == b.Line:
			return 0
		case a.Line == 0:
			return 1
		case b.Line == 0:
			return -1
		case a.Line < b.Line:
			return -1
		default:
			return 1
		}
	})
	seen := make(map[Problem]bool, len(ps))
	ps = slices.DeleteFunc(ps, func(p Problem) bool {
		dup := seen[p]
		seen[p] = true
		return dup
	})
	return &Error{File: file, Problems: ps}
}
