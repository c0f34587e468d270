package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/interlock-dev/interlock/internal/audit"
)

func (c *cli) auditCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Verify, export and follow the tamper-evident audit log"}

	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check the whole hash chain and every signed checkpoint; name the first bad event",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, st, err := c.openStore(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			head, err := st.AuditHead(cmd.Context())
			if err != nil {
				return err
			}
			bar := newProgress(c.stderr, "verified", head.Seq)
			start := time.Now()
			rep, err := audit.Verify(cmd.Context(), st, func(done, total int64) { bar.set(done) })
			bar.done()
			if err != nil {
				return err
			}
			if !rep.OK() {
				if rep.FirstBad != 0 {
					fmt.Fprintf(c.stdout, "TAMPERED: the chain breaks at event %d: %s\n", rep.FirstBad, rep.Problem)
					return &exitError{code: 1, err: fmt.Errorf("audit chain broken at event %d", rep.FirstBad)}
				}
				fmt.Fprintf(c.stdout, "TAMPERED: checkpoint at event %d does not verify: %s\n", rep.BadCheckpoint, rep.Problem)
				return &exitError{code: 1, err: fmt.Errorf("audit checkpoint at event %d does not verify", rep.BadCheckpoint)}
			}
			fmt.Fprintf(c.stdout, "ok: %d events and %d signed checkpoints verified in %s\n", rep.Events, rep.Checkpoints,
				time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	c.addConfigFlag(verify)

	var format, since, agent, effect string
	var types []string
	export := &cobra.Command{
		Use:   "export --format jsonl [--since T] [--agent ID] [--effect E]",
		Short: "Write audit events as JSON Lines (see docs/audit.md to verify an export without interlock)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "jsonl" {
				return errors.New(`--format must be "jsonl"`)
			}
			f, err := c.auditFilter(since, agent, effect, types)
			if err != nil {
				return err
			}
			_, st, err := c.openStore(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			n, err := audit.Export(cmd.Context(), st, c.stdout, f)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stderr, "exported %d events\n", n)
			return nil
		},
	}
	export.Flags().StringVar(&format, "format", "jsonl", "output format (jsonl)")
	c.filterFlags(export, &since, &agent, &effect, &types)
	c.addConfigFlag(export)

	var follow bool
	var tSince, tAgent, tEffect string
	var tTypes []string
	tail := &cobra.Command{
		Use:   "tail [-f]",
		Short: "Print the latest audit events; with -f keep printing new ones",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := c.auditFilter(tSince, tAgent, tEffect, tTypes)
			if err != nil {
				return err
			}
			_, st, err := c.openStore(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			if f.AfterSeq == 0 && f.Since.IsZero() {
				head, err := st.AuditHead(cmd.Context())
				if err != nil {
					return err
				}
				f.AfterSeq = max(0, head.Seq-20)
			}
			err = audit.Tail(cmd.Context(), st, c.stdout, f, follow, 500*time.Millisecond)
			if cmd.Context().Err() != nil {
				return nil // Ctrl-C
			}
			return err
		},
	}
	tail.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	c.filterFlags(tail, &tSince, &tAgent, &tEffect, &tTypes)
	c.addConfigFlag(tail)

	cmd.AddCommand(verify, export, tail)
	return cmd
}

func (c *cli) filterFlags(cmd *cobra.Command, since, agent, effect *string, types *[]string) {
	cmd.Flags().StringVar(since, "since", "", "only events since this time (RFC 3339, or a duration like 24h)")
	cmd.Flags().StringVar(agent, "agent", "", "only events of this agent")
	cmd.Flags().StringVar(effect, "effect", "", "only decisions with this effect (allow, deny, approve)")
	cmd.Flags().StringSliceVar(types, "type", nil, "only events of these types (decision, forwarded, result, ...)")
}

func (c *cli) auditFilter(since, agent, effect string, types []string) (audit.Filter, error) {
	f := audit.Filter{AgentID: agent, Effect: effect, Types: types}
	if since != "" {
		t, err := parseSince(since)
		if err != nil {
			return f, err
		}
		f.Since = t
	}
	switch effect {
	case "", "allow", "deny", "approve":
	default:
		return f, fmt.Errorf("--effect %q: want allow, deny or approve", effect)
	}
	return f, nil
}
