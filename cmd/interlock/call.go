package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/interlock-dev/interlock/internal/relay"
)

// bearer adds the agent token to every request of the MCP client.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func (c *cli) callCmd() *cobra.Command {
	var url, token, credentialOut, presentFile string
	var list bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "call --url URL [--token T] TOOL [ARGUMENTS-JSON]",
		Short: "Call one MCP tool as an agent (a small MCP client for trying interlock)",
		Args: func(cmd *cobra.Command, args []string) error {
			if list {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.RangeArgs(1, 2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if token == "" {
				token = os.Getenv("INTERLOCK_AGENT_TOKEN")
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel func()
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			// Progress (a call held for approval says whom it waits for)
			// goes to stderr.
			client := mcp.NewClient(&mcp.Implementation{Name: "interlock-call", Version: version}, &mcp.ClientOptions{
				ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
					fmt.Fprintf(c.stderr, "interlock: %s\n", req.Params.Message)
				}})
			tr := &mcp.StreamableClientTransport{Endpoint: url,
				HTTPClient: &http.Client{Transport: &bearer{token: token, next: http.DefaultTransport}}}
			session, err := client.Connect(ctx, tr, nil)
			if err != nil {
				return fmt.Errorf("connecting to %s: %w", url, err)
			}
			defer session.Close()
			if list {
				res, err := session.ListTools(ctx, nil)
				if err != nil {
					return err
				}
				for _, t := range res.Tools {
					fmt.Fprintf(c.stdout, "%s\t%s\n", t.Name, t.Description)
				}
				return nil
			}
			var arguments json.RawMessage = []byte("{}")
			if len(args) == 2 {
				if !json.Valid([]byte(args[1])) {
					return errors.New("ARGUMENTS-JSON is not valid JSON")
				}
				arguments = json.RawMessage(args[1])
			}
			params := &mcp.CallToolParams{Name: args[0], Arguments: arguments}
			params.SetProgressToken("interlock-call")
			if presentFile != "" {
				b, err := os.ReadFile(presentFile)
				if err != nil {
					return fmt.Errorf("--present: %w", err)
				}
				params.Meta = mcp.Meta{relay.MetaCredential: strings.TrimSpace(string(b))}
			}
			res, err := session.CallTool(ctx, params)
			if err != nil {
				return err
			}
			if err := c.printReceipt(res.Meta, credentialOut); err != nil {
				return err
			}
			var texts []string
			for _, ct := range res.Content {
				if t, ok := ct.(*mcp.TextContent); ok {
					texts = append(texts, t.Text)
				}
			}
			if res.IsError {
				fmt.Fprintf(c.stdout, "REFUSED or FAILED: %s\n", strings.Join(texts, "\n"))
				return &exitError{code: 2, err: errors.New("the tool call returned an error")}
			}
			if res.StructuredContent != nil {
				b, _ := json.MarshalIndent(res.StructuredContent, "", "  ")
				fmt.Fprintln(c.stdout, string(b))
				return nil
			}
			fmt.Fprintln(c.stdout, strings.Join(texts, "\n"))
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "http://127.0.0.1:8470/mcp", "MCP endpoint")
	cmd.Flags().StringVar(&token, "token", "", "agent token (or env INTERLOCK_AGENT_TOKEN)")
	cmd.Flags().BoolVar(&list, "list", false, "list the tools instead of calling one")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long")
	cmd.Flags().StringVar(&credentialOut, "credential-out", "", "write the call's credential (its receipt) to this file")
	cmd.Flags().StringVar(&presentFile, "present", "", "present the credential in this file with the call (instead of asking the policy)")
	return cmd
}

// printReceipt tells, on stderr, how interlock decided a call (from the
// result's _meta) and writes the credential to file when asked.
func (c *cli) printReceipt(meta mcp.Meta, file string) error {
	var d struct {
		ID           string `json:"id"`
		Effect       string `json:"effect"`
		Rule         string `json:"rule"`
		CredentialID string `json:"credential_id"`
	}
	if raw, err := json.Marshal(meta["io.interlock/decision"]); err == nil {
		json.Unmarshal(raw, &d)
	}
	token, _ := meta[relay.MetaCredential].(string)
	if d.ID != "" {
		line := fmt.Sprintf("interlock: %s by rule %q (decision %s)", d.Effect, d.Rule, d.ID)
		if d.CredentialID != "" {
			line += fmt.Sprintf("; credential %s", d.CredentialID)
		}
		fmt.Fprintln(c.stderr, line)
	}
	if file == "" {
		return nil
	}
	if token == "" {
		return errors.New("--credential-out: the result carries no credential (the call was not allowed, or did not go through interlock)")
	}
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		return fmt.Errorf("--credential-out: %w", err)
	}
	fmt.Fprintf(c.stderr, "interlock: credential written to %s\n", file)
	return nil
}
