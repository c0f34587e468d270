// Command acme runs the Acme Corp demo MCP server (package acme) over stdio,
// or over Streamable HTTP at /mcp with -http ADDR. It logs to stderr only:
// on stdio, stdout carries nothing but MCP messages.
//
//	acme                       # stdio
//	acme -http 127.0.0.1:8471  # http://127.0.0.1:8471/mcp, stateful sessions
//	acme -verify-issuer http://localhost:8470  # refuse calls without a valid interlock credential
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/interlock-dev/interlock/verify"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "acme:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("acme", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", "", "serve Streamable HTTP at this address (path /mcp) instead of stdio")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	issuer := fs.String("verify-issuer", "", "interlock's public URL: refuse every tool call without a valid credential it issued for exactly that call")
	upstream := fs.String("upstream-name", acme.DefaultUpstream, "the name interlock knows this server by (with -verify-issuer)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	opts := acme.Options{Logger: logger, Upstream: *upstream}
	if *issuer != "" {
		v, err := verify.New(verify.Options{Issuer: *issuer})
		if err != nil {
			return fmt.Errorf("-verify-issuer: %w", err)
		}
		opts.Verifier = v
		logger.Info("acme: verifying interlock credentials", "issuer", *issuer, "upstream", *upstream)
	}
	server := acme.NewServer(opts)

	if *addr == "" {
		logger.Info("acme: serving MCP on stdio")
		err := server.Run(ctx, &mcp.StdioTransport{})
		if err != nil && ctx.Err() != nil {
			return nil // stopped by a signal
		}
		return err
	}
	return serveHTTP(ctx, server, *addr, logger)
}

func serveHTTP(ctx context.Context, server *mcp.Server, addr string, logger *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{Logger: logger}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	logger.Info("acme: serving MCP over Streamable HTTP", "url", "http://"+ln.Addr().String()+"/mcp")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// Open SSE streams outlived the grace period: cut them.
		logger.Warn("acme: forcing shutdown", "err", err)
		return srv.Close()
	}
	return nil
}
