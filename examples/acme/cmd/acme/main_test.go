package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/testenv"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// syncBuffer collects a process's stderr while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func echo(t *testing.T, cs *mcp.ClientSession, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": text}})
	if err != nil {
		t.Fatalf("echo: %v", err)
	}
	if res.IsError || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != text {
		t.Fatalf("echo(%q) = %+v", text, res.Content)
	}
}

func TestHTTP(t *testing.T) {
	bin := testenv.GoBinary(t, "./examples/acme/cmd/acme")
	cmd := exec.Command(bin, "-http", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var logs syncBuffer
	urlc := make(chan string, 1)
	go func() {
		// Find the URL the server logs, then keep draining its stderr.
		re := regexp.MustCompile(`url=(http://127\.0\.0\.1:\d+/mcp)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.Write(append(sc.Bytes(), '\n'))
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				urlc <- m[1]
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	var url string
	select {
	case url = <-urlc:
	case err := <-exited:
		t.Fatalf("acme exited early: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("acme logged no URL in 30s:\n%s", logs.String())
	}

	client := mcp.NewClient(&mcp.Implementation{Name: "acme-cmd-test", Version: "0"}, nil)
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: url}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	if cs.ID() == "" {
		t.Error("no Mcp-Session-Id: the HTTP server must be stateful")
	}
	echo(t, cs, "over http")
	_ = cs.Close()

	// SIGTERM ends it cleanly.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("acme still running 15s after SIGTERM")
	}
	if !strings.Contains(logs.String(), `msg="acme: serving MCP over Streamable HTTP"`) {
		t.Errorf("stderr lacks the serving log line:\n%s", logs.String())
	}
}

func TestStdio(t *testing.T) {
	bin := testenv.GoBinary(t, "./examples/acme/cmd/acme")
	cmd := exec.Command(bin)
	var logs syncBuffer
	cmd.Stderr = &logs
	client := mcp.NewClient(&mcp.Implementation{Name: "acme-cmd-test", Version: "0"}, nil)
	cs, err := client.Connect(t.Context(), &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, logs.String())
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
		}
	})
	tools, err := cs.ListTools(t.Context(), nil)
	if err != nil || len(tools.Tools) != 7 {
		t.Fatalf("tools/list: %v, %d tools", err, len(tools.Tools))
	}
	echo(t, cs, "over stdio")
	// Closing stdin ends the server promptly and cleanly.
	start := time.Now()
	if err := cs.Close(); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("close: %v", err)
	}
	if cmd.ProcessState == nil || !cmd.ProcessState.Success() {
		t.Fatalf("process state after close: %v\n%s", cmd.ProcessState, logs.String())
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("server took %v to exit on stdin EOF (it was killed, not stopped)", d)
	}
	if !strings.Contains(logs.String(), "acme: serving MCP on stdio") {
		t.Errorf("stderr lacks the serving log line:\n%s", logs.String())
	}
}

func TestFlags(t *testing.T) {
	var stderr bytes.Buffer
	if err := run(t.Context(), []string{"extra"}, &stderr); err == nil || !strings.Contains(err.Error(), "unexpected arguments") {
		t.Errorf("stray argument: err = %v", err)
	}
	if err := run(t.Context(), []string{"-log-level", "loud"}, &stderr); err == nil || !strings.Contains(err.Error(), "-log-level") {
		t.Errorf("bad level: err = %v", err)
	}
	if err := run(t.Context(), []string{"-http", "256.0.0.1:bad"}, &stderr); err == nil {
		t.Error("bad address accepted")
	}
}
