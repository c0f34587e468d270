package acme

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/verify"
)

// Verification mode: with Options.Verifier set, acme checks on its own side
// the credential interlock attaches to every call it forwards, and refuses a
// call that does not carry one for exactly that call.
const (
	// DefaultUpstream is the upstream name a credential must name when
	// Options.Upstream is empty.
	DefaultUpstream = "acme"
	// MetaCredential is the params._meta key interlock puts its credential
	// (a compact vc+jwt) under.
	MetaCredential = "io.interlock/credential"
	// MetaVerifiedCredential is the result _meta key under which a
	// verified call's result carries the credential's id, showing that acme
	// checked it.
	MetaVerifiedCredential = "io.acme/verified-credential"
	// refusalPrefix starts the text of every refused call's result.
	refusalPrefix = "acme refuses this call: "
)

// verifyCalls returns the receiving middleware of verification mode: each
// tools/call must carry in params._meta[MetaCredential] a credential that v
// verifies for upstream, the call's tool and its arguments. A call that does
// not is answered with a tool error saying why, without running the tool,
// and logged once; a call that does runs, and its result's _meta gets the
// credential's id. Other methods pass through.
func verifyCalls(v *verify.Verifier, upstream string, log *slog.Logger) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			call, ok := req.(*mcp.CallToolRequest)
			if method != "tools/call" || !ok {
				return next(ctx, method, req)
			}
			var tool string
			if call.Params != nil {
				tool = call.Params.Name
			}
			id, reason := checkCredential(ctx, v, upstream, call.Params)
			if reason != "" {
				log.Warn("acme: call refused", "tool", tool, "reason", reason)
				return &mcp.CallToolResult{
					Content: []mcp.Content{&mcp.TextContent{Text: refusalPrefix + reason}},
					IsError: true,
				}, nil
			}
			res, err := next(ctx, method, req)
			if r, isCall := res.(*mcp.CallToolResult); err == nil && isCall && r != nil {
				if r.Meta == nil {
					r.Meta = mcp.Meta{}
				}
				r.Meta[MetaVerifiedCredential] = id
			}
			return res, err
		}
	}
}

// checkCredential verifies the credential of a call and returns its id, or
// the reason it is refused.
func checkCredential(ctx context.Context, v *verify.Verifier, upstream string, p *mcp.CallToolParamsRaw) (id, reason string) {
	noCredential := fmt.Sprintf("no interlock credential in params._meta[%q]", MetaCredential)
	if p == nil {
		return "", noCredential
	}
	raw, ok := p.Meta[MetaCredential]
	if !ok || raw == nil {
		return "", noCredential
	}
	token, ok := raw.(string)
	if !ok {
		return "", fmt.Sprintf("params._meta[%q] is not a string", MetaCredential)
	}
	if token == "" {
		return "", noCredential
	}
	cred, err := v.Verify(ctx, token, &verify.Call{Upstream: upstream, Tool: p.Name, Arguments: p.Arguments})
	if err != nil {
		// The sentinel errors read "verify: credential revoked" etc.; the
		// prefix says nothing to the caller.
		return "", strings.TrimPrefix(err.Error(), "verify: ")
	}
	return cred.ID, ""
}
