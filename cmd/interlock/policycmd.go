package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/catalog"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/gate"
	"github.com/interlock-dev/interlock/internal/policy"
	"github.com/interlock-dev/interlock/internal/store"
)

// discover starts a catalog for the configured upstreams and waits (up to
// timeout) for the first discovery of each.
func (c *cli) discover(ctx context.Context, cfg *config.Config, timeout time.Duration) (*catalog.Catalog, error) {
	cat := app.NewCatalog(cfg, c.logger(cfg), time.Now)
	cat.Start(ctx)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := cat.Wait(wctx); err != nil {
		cat.Close()
		return nil, fmt.Errorf("discovering tools: %w", err)
	}
	for _, st := range cat.Status() {
		if st.LastError != "" {
			fmt.Fprintf(c.stderr, "warning: upstream %s: %s\n", st.Name, st.LastError)
		}
	}
	return cat, nil
}

// policyFor loads the policy named by file, or the config's.
func (c *cli) policyFor(cfg *config.Config, file string) (*policy.Policy, error) {
	if file == "" && cfg != nil {
		file = cfg.Policy.File
	}
	if file == "" {
		return policy.Parse([]byte("version: 1\ndefault: deny\n"), "built-in policy")
	}
	return policy.Load(file)
}

func (c *cli) toolsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tools", Short: "The tools interlock fronts and how they are classified"}
	var asJSON bool
	var policyFile string
	list := &cobra.Command{
		Use:   "list",
		Short: "List every upstream tool with its classification and where each value came from",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := c.loadConfig()
			if err != nil {
				return err
			}
			pol, err := c.policyFor(cfg, policyFile)
			if err != nil {
				return err
			}
			cat, err := c.discover(cmd.Context(), cfg, 30*time.Second)
			if err != nil {
				return err
			}
			defer cat.Close()
			type row struct {
				Tool           string            `json:"tool"`
				Class          string            `json:"class"`
				Action         string            `json:"action"`
				Risk           string            `json:"risk"`
				RiskScore      int               `json:"risk_score"`
				AmountFromArgs bool              `json:"amount_from_args"`
				Source         map[string]string `json:"source"`
			}
			var rows []row
			for _, t := range cat.Tools() {
				call, err := pol.Classify(t, true, nil)
				// Without a call's arguments an amount cannot be computed:
				// that error is expected here; any other is not.
				fromArgs := call.Source["amount"] != ""
				if err != nil && !fromArgs {
					return fmt.Errorf("%s: %w", t.FullName(), err)
				}
				rows = append(rows, row{Tool: t.FullName(), Class: call.Class, Action: call.Action, Risk: call.Risk,
					RiskScore: call.RiskScore, AmountFromArgs: fromArgs, Source: call.Source})
			}
			if asJSON {
				return json.NewEncoder(c.stdout).Encode(rows)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TOOL\tCLASS\tACTION\tRISK\tSCORE\tAMOUNT\tSOURCES")
			for _, r := range rows {
				amount := "-"
				if r.AmountFromArgs {
					amount = "per call"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\tclass=%s action=%s risk=%s\n", r.Tool, r.Class, r.Action, r.Risk, r.RiskScore,
					amount, r.Source["class"], r.Source["action"], r.Source["risk"])
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	list.Flags().StringVar(&policyFile, "policy", "", "policy file whose overrides to apply (default: the config's)")
	c.addConfigFlag(list)
	cmd.AddCommand(list)
	return cmd
}

func (c *cli) policyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Check, test, explain and replay policies"}
	cmd.AddCommand(c.policyCheckCmd(), c.policyTestCmd(), c.policyExplainCmd(), c.policyReplayCmd())
	return cmd
}

func (c *cli) policyCheckCmd() *cobra.Command {
	var offline bool
	cmd := &cobra.Command{
		Use:   "check FILE",
		Short: "Compile a policy and lint it against the tools the upstreams offer",
		Long: `check compiles FILE (every problem is reported with its line) and, unless --offline,
discovers the configured upstreams' tools and reports rules that read an argument no tool
has, tool globs that match nothing, and lookups naming unknown tools. Exit status 1 on any
problem.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pol, err := policy.Load(args[0])
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			fmt.Fprintf(c.stdout, "%s compiles (version %s)\n", args[0], pol.Hash()[:12])
			if offline {
				return nil
			}
			cfg, err := c.loadConfig()
			if err != nil {
				return err
			}
			cat, err := c.discover(cmd.Context(), cfg, 30*time.Second)
			if err != nil {
				return err
			}
			defer cat.Close()
			problems := pol.Lint(cat.Tools())
			for _, p := range problems {
				fmt.Fprintln(c.stdout, p)
			}
			if len(problems) > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d problem(s) in %s", len(problems), args[0])}
			}
			fmt.Fprintf(c.stdout, "no problems against %d tools\n", len(cat.Tools()))
			return nil
		},
	}
	cmd.Flags().BoolVar(&offline, "offline", false, "only compile; do not contact the upstreams")
	c.addConfigFlag(cmd)
	return cmd
}

func (c *cli) policyTestCmd() *cobra.Command {
	var verbose bool
	cmd := &cobra.Command{
		Use:   "test FILE CASES.yaml",
		Short: "Run test cases against a policy; exit status 1 on any mismatch",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			pol, err := policy.Load(args[0])
			if err != nil {
				return err
			}
			cases, err := policy.LoadCases(args[1])
			if err != nil {
				return err
			}
			failed := 0
			for _, r := range policy.RunCases(pol, cases) {
				if r.Pass {
					fmt.Fprintf(c.stdout, "ok    %s (%s)\n", r.Name, r.Got)
					if verbose {
						fmt.Fprintln(c.stdout, indent(r.Decision.Explain()))
					}
					continue
				}
				failed++
				fmt.Fprintf(c.stdout, "FAIL  %s: got %s, want %s\n%s\n", r.Name, r.Got, r.Want, indent(r.Decision.Explain()))
			}
			fmt.Fprintf(c.stdout, "%d passed, %d failed\n", len(cases)-failed, failed)
			if failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d case(s) failed", failed)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "explain every decision")
	return cmd
}

func indent(s string) string {
	return "      " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n      ")
}

func (c *cli) policyExplainCmd() *cobra.Command {
	var agentID, tool, argsJSON, policyFile string
	var noLookups bool
	cmd := &cobra.Command{
		Use:   "explain --agent ID --tool UPSTREAM.TOOL [--args JSON]",
		Short: "Show the decision the policy would take for a call, and why (nothing is recorded or charged)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cfg, err := c.loadConfig()
			if err != nil {
				return err
			}
			pol, err := c.policyFor(cfg, policyFile)
			if err != nil {
				return err
			}
			upstream, name, ok := strings.Cut(tool, ".")
			if !ok {
				return errors.New("--tool must be UPSTREAM.TOOL")
			}
			callArgs := map[string]any{}
			if argsJSON != "" {
				if err := json.Unmarshal([]byte(argsJSON), &callArgs); err != nil {
					return fmt.Errorf("--args: %w", err)
				}
			}
			st, err := app.OpenStore(ctx, cfg.Storage, c.logger(cfg))
			if err != nil {
				return err
			}
			defer st.Close()
			ag, err := st.GetAgent(ctx, agentID)
			if err != nil {
				return fmt.Errorf("agent %q: %w", agentID, err)
			}
			owner, err := st.GetUser(ctx, ag.OwnerID)
			if err != nil {
				return fmt.Errorf("owner of %q: %w", agentID, err)
			}
			cat, err := c.discover(ctx, cfg, 30*time.Second)
			if err != nil {
				return err
			}
			defer cat.Close()
			p := store.Principal{Agent: ag, Owner: owner}
			var creds gate.Credentials
			if !noLookups {
				// Lookups go with credentials, as the gate sends them.
				iss, err := app.OpenIssuer(ctx, cfg, st, c.logger(cfg), time.Now, nil)
				if err != nil {
					return err
				}
				creds = iss
			}
			d, err := explainDecision(ctx, pol, cat, creds, st, &p, upstream, name, callArgs, !noLookups)
			if err != nil {
				return err
			}
			fmt.Fprint(c.stdout, d.Explain())
			if r := gate.Inactive(&p); r != "" {
				fmt.Fprintf(c.stdout, "\nNOTE: the gate refuses this agent before any policy: %s\n", r)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&agentID, "agent", "", "the calling agent (required)")
	cmd.Flags().StringVar(&tool, "tool", "", "the tool, as upstream.tool (required)")
	cmd.Flags().StringVar(&argsJSON, "args", "", "the call's arguments as a JSON object")
	cmd.Flags().StringVar(&policyFile, "policy", "", "policy file (default: the config's)")
	cmd.Flags().BoolVar(&noLookups, "no-lookups", false, "do not run lookups (rules that need one then deny)")
	cmd.MarkFlagRequired("agent")
	cmd.MarkFlagRequired("tool")
	c.addConfigFlag(cmd)
	return cmd
}

// catalogLookup runs policy lookups through the catalog, uncached (the
// gate's cache is for the running gateway), each with a credential from
// creds (when not nil) for the agent, as the gate sends them.
func catalogLookup(cat *catalog.Catalog, creds gate.Credentials, agentID, ownerEmail string) policy.LookupFunc {
	return func(ctx context.Context, l policy.LookupCall) (any, error) {
		meta, err := gate.LookupCredential(ctx, creds, agentID, ownerEmail, "", l)
		if err != nil {
			return nil, err
		}
		res, isErr, err := cat.CallTool(ctx, l.Upstream, l.Tool, l.Arguments, meta)
		if err == nil && isErr {
			err = fmt.Errorf("%s.%s answered with an error", l.Upstream, l.Tool)
		}
		return res, err
	}
}

// explainDecision decides like the gate, reading budgets but charging none.
func explainDecision(ctx context.Context, pol *policy.Policy, cat *catalog.Catalog, creds gate.Credentials, st store.Store, p *store.Principal,
	upstream, name string, args map[string]any, lookups bool) (policy.Decision, error) {
	tool, known := cat.Lookup(upstream, name)
	if !known {
		tool = catalog.Tool{Upstream: upstream, Name: name}
	}
	now := time.Now()
	in := &policy.Input{
		Agent:     policy.Agent{ID: p.Agent.ID, Name: p.Agent.Name, Department: p.Agent.Department, Purpose: p.Agent.Purpose, State: string(p.Agent.State), Owner: p.Owner.Email},
		Owner:     policy.Owner{Email: p.Owner.Email, Name: p.Owner.Name, Roles: p.Owner.Roles, Active: p.Owner.Active},
		Tool:      tool,
		ToolKnown: known,
		Args:      args,
		Context:   policy.Context{Time: now},
		Budgets:   map[string]float64{},
		Ctx:       ctx,
	}
	if lookups {
		in.Lookup = catalogLookup(cat, creds, p.Agent.ID, p.Owner.Email)
	}
	for _, r := range pol.BudgetRefs(in) {
		totals, err := st.BudgetTotals(ctx, []string{r.Key}, now.Add(-r.Window))
		if err != nil {
			return policy.Decision{}, err
		}
		in.Budgets[r.Key] = totals[r.Key]
	}
	return gate.Decide(pol, in), nil
}

func (c *cli) policyReplayCmd() *cobra.Command {
	var newPolicy, since string
	var showAll bool
	cmd := &cobra.Command{
		Use:   "replay --policy NEW.yaml [--since TIME]",
		Short: "Re-decide recorded calls with another policy and show what would change",
		Long: `replay reads the decisions in the audit log, decides each recorded call again with
NEW.yaml, and prints every call whose effect or deciding rule would change, then a summary.
Inputs are taken from the record: agent, owner, tool, arguments (as recorded: redacted
values stay redacted), time and the budget totals seen then. Lookups are run again against
the upstreams as they are now (use --config) unless they cannot be reached, in which case
rules that need them deny.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cfg, err := c.loadConfig()
			if err != nil {
				return err
			}
			pol, err := policy.Load(newPolicy)
			if err != nil {
				return err
			}
			var sinceT time.Time
			if since != "" {
				if sinceT, err = parseSince(since); err != nil {
					return err
				}
			}
			log := c.logger(cfg)
			st, err := app.OpenStore(ctx, cfg.Storage, log)
			if err != nil {
				return err
			}
			defer st.Close()
			cat := app.NewCatalog(cfg, log, time.Now)
			cat.Start(ctx)
			defer cat.Close()
			wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			cat.Wait(wctx)
			cancel()
			iss, err := app.OpenIssuer(ctx, cfg, st, log, time.Now, nil)
			if err != nil {
				return err
			}
			return c.replay(ctx, st, cat, iss, pol, sinceT, showAll)
		},
	}
	cmd.Flags().StringVar(&newPolicy, "policy", "", "the policy to replay with (required)")
	cmd.Flags().StringVar(&since, "since", "", "only calls since this time (RFC 3339, or a duration like 24h)")
	cmd.Flags().BoolVar(&showAll, "all", false, "print unchanged decisions too")
	cmd.MarkFlagRequired("policy")
	c.addConfigFlag(cmd)
	return cmd
}

func parseSince(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: want RFC 3339 time or a duration", s)
	}
	return t, nil
}

// recordedDecision is the part of a decision event replay reads.
type recordedDecision struct {
	DecisionID string         `json:"decision_id"`
	Time       time.Time      `json:"time"`
	Agent      map[string]any `json:"agent"`
	Owner      struct {
		Email  string   `json:"email"`
		Name   string   `json:"name"`
		Roles  []string `json:"roles"`
		Active bool     `json:"active"`
	} `json:"owner"`
	Tool struct {
		Upstream string `json:"upstream"`
		Name     string `json:"name"`
		Known    bool   `json:"known"`
	} `json:"tool"`
	Args     map[string]any     `json:"args"`
	Effect   string             `json:"effect"`
	Rule     string             `json:"rule"`
	Budgets  map[string]float64 `json:"budgets"`
	ClientIP string             `json:"client_ip"`
	Session  string             `json:"session"`
	Intent   string             `json:"intent"`
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func (c *cli) replay(ctx context.Context, st store.Store, cat *catalog.Catalog, creds gate.Credentials, pol *policy.Policy, since time.Time, showAll bool) error {
	head, err := st.AuditHead(ctx)
	if err != nil {
		return err
	}
	progress := newProgress(c.stderr, "replayed", head.Seq)
	type change struct{ from, to string }
	changes := map[change]int{}
	total, changed, unsure := 0, 0, 0
	after := int64(0)
	for {
		evs, err := st.ListAudit(ctx, store.AuditFilter{AfterSeq: after, Since: since, Types: []string{"decision"}, Limit: 5000})
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			after = ev.Seq
			progress.set(ev.Seq)
			var r recordedDecision
			if err := json.Unmarshal(ev.Data, &r); err != nil {
				return fmt.Errorf("event %d: %w", ev.Seq, err)
			}
			if r.Rule == "kill-switch" || r.Rule == "bad-arguments" {
				continue // decided before any policy
			}
			total++
			tool, known := cat.Lookup(r.Tool.Upstream, r.Tool.Name)
			if !known {
				tool, known = catalog.Tool{Upstream: r.Tool.Upstream, Name: r.Tool.Name}, r.Tool.Known
			}
			if r.Args == nil {
				r.Args = map[string]any{}
			}
			in := &policy.Input{
				Agent: policy.Agent{ID: str(r.Agent, "id"), Name: str(r.Agent, "name"), Department: str(r.Agent, "department"),
					Purpose: str(r.Agent, "purpose"), State: str(r.Agent, "state"), Owner: r.Owner.Email},
				Owner:     policy.Owner{Email: r.Owner.Email, Name: r.Owner.Name, Roles: r.Owner.Roles, Active: r.Owner.Active},
				Tool:      tool,
				ToolKnown: known,
				Args:      r.Args,
				Context:   policy.Context{Time: r.Time, ClientIP: r.ClientIP, Session: r.Session, Intent: r.Intent},
				Budgets:   map[string]float64{},
				Ctx:       ctx,
				Lookup:    catalogLookup(cat, creds, str(r.Agent, "id"), r.Owner.Email),
			}
			for k, v := range r.Budgets {
				in.Budgets[k] = v
			}
			d := gate.Decide(pol, in)
			same := d.Effect == r.Effect && d.Rule == r.Rule
			redacted := !same && hasRedacted(r.Args)
			switch {
			case redacted:
				unsure++
			case !same:
				changed++
				changes[change{r.Effect, d.Effect}]++
			}
			if !same || showAll {
				progress.clear()
				mark := "CHANGED"
				switch {
				case same:
					mark = "same   "
				case redacted:
					mark = "UNSURE " // decided on redacted values: not the call as made
				}
				fmt.Fprintf(c.stdout, "%s %s %s %s.%s  %s (%s) -> %s (%s)\n", mark, r.Time.UTC().Format(time.RFC3339), str(r.Agent, "id"),
					r.Tool.Upstream, r.Tool.Name, r.Effect, r.Rule, d.Effect, d.Rule)
			}
		}
	}
	progress.done()
	fmt.Fprintf(c.stdout, "\n%d decisions replayed, %d would change\n", total, changed)
	if unsure > 0 {
		fmt.Fprintf(c.stdout, "%d more differ but were replayed on redacted arguments (audit.redact), so they say nothing certain (UNSURE)\n", unsure)
	}
	keys := make([]change, 0, len(changes))
	for k := range changes {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].from+keys[i].to < keys[j].from+keys[j].to })
	for _, k := range keys {
		fmt.Fprintf(c.stdout, "  %s -> %s: %d\n", k.from, k.to, changes[k])
	}
	return nil
}

// progress draws a one-line progress bar on a terminal, nothing elsewhere.
type progress struct {
	w      io.Writer
	label  string
	total  int64
	tty    bool
	shown  int
	active bool
}

func newProgress(w io.Writer, label string, total int64) *progress {
	p := &progress{w: w, label: label, total: total, shown: -1}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = total > 10_000
		}
	}
	return p
}

func (p *progress) set(done int64) {
	if !p.tty || p.total == 0 {
		return
	}
	pct := int(done * 100 / p.total)
	if pct == p.shown {
		return
	}
	p.shown, p.active = pct, true
	bar := strings.Repeat("#", pct/4) + strings.Repeat(".", 25-pct/4)
	fmt.Fprintf(p.w, "\r%s [%s] %3d%% (%d/%d)", p.label, bar, pct, done, p.total)
}

func (p *progress) clear() {
	if p.active {
		fmt.Fprint(p.w, "\r\033[K")
		p.active, p.shown = false, -1
	}
}

func (p *progress) done() { p.clear() }

// hasRedacted reports whether a recorded value holds a redacted field.
func hasRedacted(v any) bool {
	switch x := v.(type) {
	case string:
		return x == "[redacted]"
	case map[string]any:
		for _, e := range x {
			if hasRedacted(e) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if hasRedacted(e) {
				return true
			}
		}
	}
	return false
}
