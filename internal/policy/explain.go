package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Explain renders the decision for people: the effect, the deciding rule
// and why, every matching rule, the classification with where each value
// came from, the amount, the risk score, budgets, approvers, constraints
// and errors. One fact per line; stable, so it can be compared in tests.
func (d Decision) Explain() string {
	var b strings.Builder
	line := func(format string, args ...any) {
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	tool := d.Tool
	if tool == "" {
		tool = "(unknown tool)"
	}
	line("decision: %s %s", strings.ToUpper(orDash(d.Effect)), tool)
	line("rule:     %s", orDash(d.Rule))
	if d.ShadowEffect != "" {
		line("shadow:   would %s by %s", d.ShadowEffect, orDash(d.ShadowRule))
	}
	line("why:")
	if len(d.Reasons) == 0 {
		line("  -")
	}
	for _, r := range d.Reasons {
		line("  - %s", r)
	}
	line("matched:")
	if len(d.Matched) == 0 {
		line("  (no rule matched)")
	}
	for _, m := range d.Matched {
		mode := ""
		if m.Shadow {
			mode = " (shadow)"
		}
		line("  - %-28s %s%s", m.ID, m.Effect, mode)
	}
	c := d.Call
	line("classification:")
	line("  class:      %-16s %s", orDash(c.Class), source(c.Source, "class"))
	line("  action:     %-16s %s", orDash(c.Action), source(c.Source, "action"))
	line("  risk:       %-16s %s", orDash(c.Risk), source(c.Source, "risk"))
	if c.HasAmount {
		line("  amount:     %-16s %s", fmtAmount(c.Amount), source(c.Source, "amount"))
	} else {
		line("  amount:     -")
	}
	line("  risk score: %d/100", c.RiskScore)
	if len(d.Charges) > 0 {
		line("budgets:")
		for _, ch := range d.Charges {
			state := "within limit"
			if ch.Exceeded {
				state = "EXCEEDED"
			}
			line("  - %s [%s]: %s + %s of %s per %s, %s", ch.BudgetID, ch.Key, fmtAmount(ch.Total), fmtAmount(ch.Amount), fmtAmount(ch.Limit), fmtWindow(ch.Window), state)
		}
	}
	if d.Effect == EffectApprove {
		sod := "no"
		if d.SeparationOfDuties {
			sod = "yes (the agent's owner may not approve)"
		}
		line("approvers: %s (quorum %d, separation of duties: %s)", strings.Join(d.Approvers, ", "), d.Quorum, sod)
		if len(d.Requirements) > 1 {
			for _, r := range d.Requirements {
				sod := ""
				if r.SeparationOfDuties {
					sod = ", separation of duties"
				}
				line("  - %s: %s (quorum %d%s)", r.Rule, strings.Join(r.Approvers, ", "), r.Quorum, sod)
			}
		}
	}
	if d.Effect == EffectAllow || d.Effect == EffectApprove {
		maxAmount := "none"
		if d.Constraints.MaxAmount != nil {
			maxAmount = fmtAmount(*d.Constraints.MaxAmount)
		}
		line("constraints: lifetime %s, uses %d, max amount %s", fmtWindow(d.Constraints.Lifetime), d.Constraints.Uses, maxAmount)
	}
	if len(d.Errors) > 0 {
		line("errors:")
		for _, e := range d.Errors {
			line("  - %s", e)
		}
	}
	hash := d.PolicyHash
	if len(hash) > 12 {
		hash = hash[:12]
	}
	line("policy: %s", orDash(hash))
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func source(src map[string]string, field string) string {
	if s := src[field]; s != "" {
		return "(" + s + ")"
	}
	return ""
}

// fmtAmount formats a number with two decimals and thousands separators:
// 12,345.60.
func fmtAmount(v float64) string {
	s := strconv.FormatFloat(v, 'f', 2, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	whole, frac, _ := strings.Cut(s, ".")
	var parts []string
	for len(whole) > 3 {
		parts = append(parts, whole[len(whole)-3:])
		whole = whole[:len(whole)-3]
	}
	parts = append(parts, whole)
	slices.Reverse(parts)
	out := strings.Join(parts, ",") + "." + frac
	if neg {
		out = "-" + out
	}
	return out
}

// fmtWindow formats a duration briefly: 24h, 30m, 1m30s, 7d.
func fmtWindow(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d > 24*time.Hour && d%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return d.String()
}
