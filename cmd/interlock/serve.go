package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/config"
)

func (c *cli) serveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := c.loadConfig()
			if err != nil {
				return err
			}
			return c.serve(cmd.Context(), cfg, nil)
		},
	}
	c.addConfigFlag(cmd)
	return cmd
}

// serve runs the gateway until ctx ends. ready, if set, is called once the
// listener is open.
func (c *cli) serve(ctx context.Context, cfg *config.Config, ready func(addr string)) error {
	log := c.logger(cfg)
	if path := os.Getenv("INTERLOCK_CPUPROFILE"); path != "" {
		// For performance work (docs/performance.md): a CPU profile of the
		// whole run, written when the gateway stops.
		stop, err := startCPUProfile(path)
		if err != nil {
			return err
		}
		defer stop()
		log.Info("writing a CPU profile until the gateway stops", "file", path)
	}
	a, err := app.New(ctx, cfg, app.Options{Logger: log})
	if err != nil {
		return err
	}
	defer a.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	log.Info("interlock serving", "version", version, "listen", ln.Addr().String(), "public_url", cfg.PublicURL,
		"upstreams", len(cfg.Upstreams), "storage", cfg.Storage.Driver)
	if ready != nil {
		ready(ln.Addr().String())
	}
	// SIGHUP reloads the policy.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return a.Serve(ctx, ln, hup)
}

// startCPUProfile starts a CPU profile into path and returns what stops it.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("INTERLOCK_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("INTERLOCK_CPUPROFILE: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
