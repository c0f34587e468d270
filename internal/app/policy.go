package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/interlock-dev/interlock/internal/policy"
)

// builtinPolicy is in force when the config names no policy file: every
// gated call is denied (fail closed).
const builtinPolicy = "version: 1\ndefault: deny\n"

// PolicySource holds the policy in force and reloads it from its file. A
// file that fails to compile never replaces a working policy.
type PolicySource struct {
	path string
	log  *slog.Logger
	cur  atomic.Pointer[policy.Policy]
	mu   sync.Mutex
	sum  [32]byte // of the file last loaded (or tried)
}

// NewPolicySource loads the policy at path ("" for the built-in deny-all).
// A bad policy at start-up is an error: the gateway does not start on it.
func NewPolicySource(path string, log *slog.Logger) (*PolicySource, error) {
	s := &PolicySource{path: path, log: log}
	if path == "" {
		p, err := policy.Parse([]byte(builtinPolicy), "built-in policy")
		if err != nil {
			return nil, err
		}
		s.cur.Store(p)
		log.Warn("no policy file configured (policy.file): every tool call is denied")
		return s, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p, err := policy.Parse(data, path)
	if err != nil {
		return nil, err
	}
	s.sum = sha256.Sum256(data)
	s.cur.Store(p)
	return s, nil
}

// Current returns the policy in force.
func (s *PolicySource) Current() *policy.Policy { return s.cur.Load() }

// Reload reads the file again and swaps the policy in if it compiles and
// changed. It returns whether it swapped.
func (s *PolicySource) Reload() (bool, error) {
	if s.path == "" {
		return false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.path)
	if err != nil {
		return false, fmt.Errorf("policy: %w", err)
	}
	sum := sha256.Sum256(data)
	if bytes.Equal(sum[:], s.sum[:]) {
		return false, nil
	}
	s.sum = sum
	p, err := policy.Parse(data, s.path)
	if err != nil {
		return false, err
	}
	s.cur.Store(p)
	return true, nil
}

// Watch reloads whenever the file changes (checked every interval) or a
// value arrives on hup, until ctx ends. Errors are logged; the old policy
// stays in force.
func (s *PolicySource) Watch(ctx context.Context, interval time.Duration, hup <-chan os.Signal) {
	if s.path == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-hup:
			s.log.Info("SIGHUP: reloading the policy", "file", s.path)
		}
		swapped, err := s.Reload()
		switch {
		case err != nil:
			s.log.Error("the changed policy does not compile; the previous policy stays in force", "file", s.path, "err", err)
		case swapped:
			s.log.Info("policy reloaded", "file", s.path, "version", s.Current().Hash())
		}
	}
}
