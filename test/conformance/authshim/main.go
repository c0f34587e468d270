// Command authshim is a tiny reverse proxy that lets a client with no notion
// of credentials (the MCP conformance suite) talk to interlock as an agent:
// it adds `Authorization: Bearer <token>` to every request and changes
// nothing else that matters. The Host and Origin headers pass through
// unchanged, so the dns-rebinding scenario exercises interlock's own
// Host/Origin check, and responses stream through unbuffered (SSE).
//
//	authshim -listen 127.0.0.1:9000 -target http://127.0.0.1:8470/mcp/everything -token-file token.txt
//
// When -target has a path, every request goes to that path (the shim fronts
// one endpoint, whatever path the client used); without one, the client's
// path is kept. The query string is always kept. It is a test tool: it binds
// where it is told (use 127.0.0.1) and logs to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "authshim:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends. If ready is not nil it receives the listening
// address once the shim accepts connections.
func run(ctx context.Context, args []string, stderr io.Writer, ready chan<- string) error {
	fs := flag.NewFlagSet("authshim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	targetFlag := fs.String("target", "", "URL to forward to, e.g. http://127.0.0.1:8470/mcp/everything")
	tokenFile := fs.String("token-file", "", "file holding the bearer token")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	target, err := url.Parse(*targetFlag)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		return fmt.Errorf("-target %q: need an absolute http(s) URL", *targetFlag)
	}
	if *tokenFile == "" {
		return errors.New("-token-file is required")
	}
	raw, err := os.ReadFile(*tokenFile)
	if err != nil {
		return err
	}
	token := strings.TrimSpace(string(raw))
	if token == "" || strings.ContainsAny(token, " \t\r\n") {
		return fmt.Errorf("%s: want one token on one line", *tokenFile)
	}

	logger := slog.New(slog.NewTextHandler(stderr, nil))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           newProxy(target, token, logger),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	logger.Info("authshim: forwarding", "listen", ln.Addr().String(), "target", target.String())
	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return srv.Close() // open SSE streams: cut them
	}
	return nil
}

// newProxy returns the shim's handler: a reverse proxy to target that sets
// the bearer token and keeps Host and Origin.
func newProxy(target *url.URL, token string, logger *slog.Logger) http.Handler {
	fixedPath := target.Path != "" && target.Path != "/"
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = target.Scheme
			r.Out.URL.Host = target.Host
			if fixedPath {
				r.Out.URL.Path = target.Path
				r.Out.URL.RawPath = target.RawPath
			}
			r.Out.Host = r.In.Host // what the client sent, not the target's
			r.Out.Header.Set("Authorization", "Bearer "+token)
			// No X-Forwarded-* headers: Rewrite adds none unless asked.
		},
		// Flush every write: SSE events must reach the client as they come.
		FlushInterval: -1,
		// Pass bodies through byte for byte: no transparent gzip.
		Transport: &http.Transport{
			Proxy:              nil,
			DisableCompression: true,
			DialContext:        (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:       32,
			IdleConnTimeout:    30 * time.Second,
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() == nil {
				logger.Warn("authshim: upstream error", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
}
