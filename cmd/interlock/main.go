// Command interlock is the interlock gateway: the ignition interlock for AI
// agents. This package holds the CLI only (flags, wiring, exit codes); the
// logic lives in internal/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/interlock-dev/interlock/internal/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "interlock:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

// cli holds what every command shares.
type cli struct {
	stdout, stderr io.Writer
	configPath     string
	// server and adminToken are --server and --admin-token (remote.go);
	// remote is set once a command works against a server.
	server, adminToken string
	remote             bool
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	c := &cli{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "interlock",
		Short:         "The ignition interlock for AI agents: every tool call checked at the moment it is made",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		c.versionCmd(), c.initCmd(), c.serveCmd(), c.demoCmd(), c.wrapCmd(),
		c.usersCmd(), c.agentsCmd(), c.stopCmd(), c.resumeCmd(), c.callCmd(),
		c.toolsCmd(), c.policyCmd(), c.auditCmd(), c.keysCmd(), c.credentialsCmd(), c.approvalsCmd(),
		c.adminCmd(),
		c.notificationsCmd(),
	)
	for _, sub := range root.Commands() {
		if sub.Name() == "users" {
			sub.AddCommand(c.enrollCmd())
		}
		if sub.Name() == "agents" {
			sub.AddCommand(c.agentKeygenCmd())
		}
	}
	return root
}

func (c *cli) addConfigFlag(cmd *cobra.Command) {
	def := os.Getenv("INTERLOCK_CONFIG")
	if def == "" {
		def = "interlock.yaml"
	}
	cmd.Flags().StringVar(&c.configPath, "config", def, "configuration file (env INTERLOCK_CONFIG)")
}

func (c *cli) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(c.configPath, config.LoadOptions{})
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// logger builds the slog logger from the config; logs always go to stderr.
func (c *cli) logger(cfg *config.Config) *slog.Logger {
	level := slog.LevelInfo
	format := "text"
	if cfg != nil {
		switch cfg.Log.Level {
		case "debug":
			level = slog.LevelDebug
		case "warn":
			level = slog.LevelWarn
		case "error":
			level = slog.LevelError
		}
		format = cfg.Log.Format
	}
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(c.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(c.stderr, opts))
}

func (c *cli) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(c.stdout, "interlock %s\n", version)
			return nil
		},
	}
}

func (c *cli) initCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "init [DIR]",
		Short: "Write a commented starter configuration (DIR/interlock.yaml)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			path := dir + string(os.PathSeparator) + "interlock.yaml"
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			f, err := os.OpenFile(path, flags, 0o600)
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s exists; use --force to overwrite it", path)
			}
			if err != nil {
				return err
			}
			if _, err := f.Write(config.Starter()); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "wrote %s\nnext: edit it, then run: interlock serve --config %s\n", path, path)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing file")
	return cmd
}
