// Command relaybench measures what interlock adds to an MCP tool call: the
// acme demo server's echo tool over Streamable HTTP on loopback, called
// directly and through interlock's /mcp/acme, side by side in one run.
//
// It builds interlock and acme, starts each as its own process (so the
// gateway's CPU and garbage collection are its own, as in production),
// registers an agent, and alternates rounds of direct and relayed calls:
//
//   - latency: one client, sequential calls; p50/p90/p99 per target;
//   - throughput: N concurrent clients (default 32) for a fixed time;
//   - allocation: bytes allocated by the interlock process per relayed
//     call, from its own /metrics (go_memstats_alloc_bytes_total).
//
// Usage (from the repository root):
//
//	go run ./bench/relaybench [-calls 5000] [-clients 32] [-duration 10s] [-rounds 3]
//
// Every server binds 127.0.0.1 and is stopped when the run ends.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) == 4 && os.Args[1] == "-reverse-proxy" {
		// Child mode: the baseline, a plain net/http/httputil reverse proxy.
		reverseProxy(os.Args[2], os.Args[3])
		return
	}
	calls := flag.Int("calls", 5000, "sequential calls per latency round")
	clients := flag.Int("clients", 32, "concurrent clients in the throughput rounds")
	duration := flag.Duration("duration", 10*time.Second, "length of each throughput round")
	rounds := flag.Int("rounds", 3, "rounds per target (alternating direct and interlock)")
	env := flag.String("env", "", "comma-separated VAR=VALUE pairs for the gateway and baseline processes")
	flag.Parse()
	if *env != "" {
		gatewayEnv = strings.Split(*env, ",")
	}
	if err := run(*calls, *clients, *duration, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		os.Exit(1)
	}
}

type proc struct{ cmd *exec.Cmd }

// pin puts this process and its servers on the given CPUs (nil: all).
func pin(procs []*proc, cpus []int) error {
	var set unix.CPUSet
	if cpus == nil {
		for i := 0; i < runtime.NumCPU(); i++ {
			set.Set(i)
		}
	} else {
		for _, c := range cpus {
			set.Set(c)
		}
	}
	pids := []int{0}
	for _, p := range procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	for _, pid := range pids {
		// Every thread of the process: affinity is per thread on Linux.
		tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pidOrSelf(pid)))
		if err != nil {
			return err
		}
		for _, t := range tids {
			tid, _ := strconv.Atoi(t.Name())
			if err := unix.SchedSetaffinity(tid, &set); err != nil {
				return err
			}
		}
	}
	return nil
}

func pidOrSelf(pid int) int {
	if pid == 0 {
		return os.Getpid()
	}
	return pid
}

func (p *proc) stop() {
	if p.cmd.Process != nil {
		p.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	}
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitHTTP(url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not come up", url)
}

// gatewayEnv is added to the gateway's and the baseline proxy's environment
// (-env, for experiments such as GOMAXPROCS=1).
var gatewayEnv []string

func run(calls, clients int, duration time.Duration, rounds int) error {
	dir, err := os.MkdirTemp("", "relaybench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := func(pkg, name string) (string, error) {
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Stderr = os.Stderr
		return out, cmd.Run()
	}
	interlock, err := bin("./cmd/interlock", "interlock")
	if err != nil {
		return fmt.Errorf("building interlock (run from the repository root): %w", err)
	}
	acmeBin, err := bin("./examples/acme/cmd/acme", "acme")
	if err != nil {
		return err
	}

	acmeAddr, _ := freePort()
	acme := &proc{exec.Command(acmeBin, "-http", acmeAddr, "-log-level", "error")}
	acme.cmd.Stderr = os.Stderr
	if err := acme.cmd.Start(); err != nil {
		return err
	}
	defer acme.stop()
	if err := waitHTTP("http://" + acmeAddr + "/mcp"); err != nil {
		return err
	}

	ilAddr, _ := freePort()
	cfg := filepath.Join(dir, "interlock.yaml")
	// The allow path in full: the call is classified, decided by a policy
	// (a rule among the demo's), and its decision committed to the audit
	// log before it is forwarded.
	pol := filepath.Join(dir, "policy.yaml")
	os.WriteFile(pol, []byte(benchPolicy), 0o600)
	os.WriteFile(cfg, []byte(fmt.Sprintf("listen: %s\nstorage: {driver: sqlite, dsn: %s}\npolicy: {file: %s}\nlog: {level: warn}\nupstreams:\n  - name: acme\n    url: http://%s/mcp\n",
		ilAddr, filepath.Join(dir, "interlock.db"), pol, acmeAddr)), 0o600)
	cli := func(args ...string) ([]byte, error) {
		cmd := exec.Command(interlock, args...)
		cmd.Stderr = os.Stderr
		return cmd.Output()
	}
	if _, err := cli("users", "create", "--config", cfg, "--email", "bench@example.com"); err != nil {
		return err
	}
	out, err := cli("agents", "create", "--config", cfg, "--id", "bench", "--owner", "bench@example.com", "--json")
	if err != nil {
		return err
	}
	var created struct{ Token string }
	if err := json.Unmarshal(out, &created); err != nil {
		return err
	}
	gw := &proc{exec.Command(interlock, "serve", "--config", cfg)}
	gw.cmd.Stderr = os.Stderr
	gw.cmd.Env = append(os.Environ(), gatewayEnv...)
	if err := gw.cmd.Start(); err != nil {
		return err
	}
	defer gw.stop()
	if err := waitHTTP("http://" + ilAddr + "/readyz"); err != nil {
		return err
	}

	rpAddr, _ := freePort()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	rp := &proc{exec.Command(self, "-reverse-proxy", rpAddr, "http://"+acmeAddr)}
	rp.cmd.Stderr = os.Stderr
	rp.cmd.Env = append(os.Environ(), gatewayEnv...)
	if err := rp.cmd.Start(); err != nil {
		return err
	}
	defer rp.stop()
	if err := waitHTTP("http://" + rpAddr + "/mcp"); err != nil {
		return err
	}

	targets := []target{
		{name: "direct", url: "http://" + acmeAddr + "/mcp"},
		{name: "reverse-proxy", url: "http://" + rpAddr + "/mcp"},
		{name: "interlock", url: "http://" + ilAddr + "/mcp/acme", token: created.Token},
	}
	transport := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}
	client := &http.Client{Transport: transport}

	lat := map[string][]time.Duration{}
	pinned := map[string][]time.Duration{}
	procs := []*proc{acme, gw, rp}
	thr := map[string][]float64{}
	// CPU time used in the throughput rounds, per target: this process
	// (the clients), acme, interlock, the reverse proxy.
	cpu := map[string]*[4]time.Duration{}
	cpuCalls := map[string]int64{}
	for _, t := range targets {
		cpu[t.name] = &[4]time.Duration{}
	}
	var relayed int64
	allocBefore, err := scrape("http://"+ilAddr+"/metrics", "go_memstats_alloc_bytes_total")
	if err != nil {
		return err
	}
	// Warm up both paths.
	for _, t := range targets {
		s, err := newSession(client, t)
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		for i := 0; i < 500; i++ {
			if err := s.echo(); err != nil {
				return fmt.Errorf("%s warm-up: %w", t.name, err)
			}
		}
		if t.name == "interlock" {
			relayed += 500
		}
	}
	for r := 0; r < rounds; r++ {
		for _, t := range targets {
			s, err := newSession(client, t)
			if err != nil {
				return err
			}
			for _, cpus := range [][]int{nil, {0}} {
				if err := pin(procs, cpus); err != nil {
					return fmt.Errorf("setting CPU affinity: %w", err)
				}
				into := lat
				if cpus != nil {
					into = pinned
				}
				for i := 0; i < calls; i++ {
					start := time.Now()
					if err := s.echo(); err != nil {
						return fmt.Errorf("%s: %w", t.name, err)
					}
					into[t.name] = append(into[t.name], time.Since(start))
				}
			}
			if err := pin(procs, nil); err != nil {
				return err
			}
			before := cpuTimes(procs)
			n, err := throughput(client, t, clients, duration)
			if err != nil {
				return fmt.Errorf("%s throughput: %w", t.name, err)
			}
			after := cpuTimes(procs)
			for i := range after {
				cpu[t.name][i] += after[i] - before[i]
			}
			cpuCalls[t.name] += n
			thr[t.name] = append(thr[t.name], float64(n)/duration.Seconds())
			if t.name == "interlock" {
				relayed += 2*int64(calls) + n
			}
		}
	}
	allocAfter, err := scrape("http://"+ilAddr+"/metrics", "go_memstats_alloc_bytes_total")
	if err != nil {
		return err
	}

	pct := func(m map[string][]time.Duration, name string, q float64) time.Duration {
		d := m[name]
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[int(q*float64(len(d)-1))]
	}
	med := func(xs []float64) float64 {
		s := append([]float64(nil), xs...)
		sort.Float64s(s)
		return s[len(s)/2]
	}
	us := func(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d.Nanoseconds())/1000) }
	fmt.Printf("relaybench: echo over Streamable HTTP on loopback; %d rounds x %d sequential calls and %d clients x %s per target\n\n",
		rounds, calls, clients, duration)
	p := func(name string, q float64) time.Duration { return pct(lat, name, q) }
	pp := func(name string, q float64) time.Duration { return pct(pinned, name, q) }
	fmt.Println("| target | p50 | p90 | p99 | p50, all on one CPU | p90, all on one CPU | throughput, " + strconv.Itoa(clients) + " clients (median round) |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, t := range targets {
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %.0f calls/s |\n", t.name, us(p(t.name, .5)), us(p(t.name, .9)), us(p(t.name, .99)),
			us(pp(t.name, .5)), us(pp(t.name, .9)), med(thr[t.name]))
	}
	fmt.Printf("\nbaseline: a plain httputil.ReverseProxy (no auth, no parsing) adds %s at p50 and keeps %.0f%% of the throughput\n",
		us(p("reverse-proxy", .5)-p("direct", .5)), med(thr["reverse-proxy"])/med(thr["direct"])*100)
	added := p("interlock", .5) - p("direct", .5)
	ratio := med(thr["interlock"]) / med(thr["direct"])
	perCall := (allocAfter - allocBefore) / float64(relayed)
	fmt.Printf("\nadded at p50: %s; with every process on one CPU: %s (target ≤ 100 µs)\n", us(added), us(pp("interlock", .5)-pp("direct", .5)))
	fmt.Printf("baseline with every process on one CPU: the reverse proxy adds %s\n", us(pp("reverse-proxy", .5)-pp("direct", .5)))
	fmt.Printf("throughput kept with %d clients: %.0f%% (target ≥ 60%%)\n", clients, ratio*100)
	fmt.Printf("allocated by interlock per relayed call: %.1f KiB (target ≤ 64 KiB; %d calls, includes idle background work)\n", perCall/1024, relayed)
	fmt.Printf("\nCPU time per call in the throughput rounds (user + system):\n\n| target | clients | acme | the proxy (reverse proxy or interlock) | all |\n|---|---|---|---|---|\n")
	for _, t := range targets {
		c, n := cpu[t.name], float64(cpuCalls[t.name])
		per := func(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d.Microseconds())/n) }
		proxy := c[2] + c[3] // only the target's own proxy is busy in its rounds
		fmt.Printf("| %s | %s | %s | %s | %s |\n", t.name, per(c[0]), per(c[1]), per(proxy), per(c[0]+c[1]+proxy))
	}
	return nil
}

// cpuTimes returns the CPU time (user + system) used so far by this process
// and by each of procs (acme, interlock, the reverse proxy).
func cpuTimes(procs []*proc) [4]time.Duration {
	var out [4]time.Duration
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		out[0] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for i, p := range procs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces): state is
		// the first, utime the 12th and stime the 13th.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		out[i+1] = time.Duration(ut+st) * time.Second / clockTicks
	}
	return out
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times (100 on
// every Linux architecture Go supports).
const clockTicks = 100

// benchPolicy decides the benchmark's echo calls: several rules are
// evaluated, one allows.
const benchPolicy = `version: 1
default: deny
tools:
  - match: "acme.place_order"
    action: spend
    risk: high
    amount: "args.quantity * args.unit_price_usd"
rules:
  - id: no-prod-deletes
    when: 'tool.name.startsWith("delete") && args.environment == "production"'
    effect: deny
  - id: small-orders
    when: 'call.action == "spend" && call.amount < 400'
    effect: allow
  - id: reads
    when: 'call.action == "read" && call.risk == "low"'
    effect: allow
  - id: echo
    when: 'tool.name == "echo"'
    effect: allow
`

type target struct{ name, url, token string }

type session struct {
	c   *http.Client
	t   target
	sid string
	ver string
	id  int
}

func (s *session) post(body string) (*http.Response, error) {
	req, _ := http.NewRequest("POST", s.t.url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if s.t.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.t.token)
	}
	if s.sid != "" {
		req.Header.Set("Mcp-Session-Id", s.sid)
		req.Header.Set("Mcp-Protocol-Version", s.ver)
	}
	return s.c.Do(req)
}

func newSession(c *http.Client, t target) (*session, error) {
	s := &session{c: c, t: t}
	resp, err := s.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"relaybench","version":"1"}}}`)
	if err != nil {
		return nil, err
	}
	msg, err := readAnswer(resp)
	if err != nil {
		return nil, err
	}
	s.sid = resp.Header.Get("Mcp-Session-Id")
	var r struct {
		Result struct {
			ProtocolVersion string `json:"protocolVersion"`
		} `json:"result"`
	}
	json.Unmarshal(msg, &r)
	s.ver = r.Result.ProtocolVersion
	resp, err = s.post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return s, nil
}

func (s *session) echo() error {
	s.id++
	resp, err := s.post(`{"jsonrpc":"2.0","id":` + strconv.Itoa(s.id) + `,"method":"tools/call","params":{"name":"echo","arguments":{"text":"ping"}}}`)
	if err != nil {
		return err
	}
	msg, err := readAnswer(resp)
	if err != nil {
		return err
	}
	if !bytes.Contains(msg, []byte(`"ping"`)) || bytes.Contains(msg, []byte(`"isError":true`)) {
		return fmt.Errorf("unexpected answer %s", msg)
	}
	return nil
}

// readAnswer returns the first JSON-RPC response in a JSON or SSE body.
func readAnswer(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return io.ReadAll(resp.Body)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if d, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: ")); ok && bytes.Contains(d, []byte(`"id"`)) {
			out := append([]byte(nil), d...)
			io.Copy(io.Discard, resp.Body)
			return out, nil
		}
	}
	return nil, errors.New("stream ended without a response")
}

func throughput(c *http.Client, t target, clients int, d time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var n atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := newSession(c, t)
			if err != nil {
				errc <- err
				return
			}
			for ctx.Err() == nil {
				if err := s.echo(); err != nil {
					if ctx.Err() == nil {
						errc <- err
					}
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return 0, err
	}
	return n.Load(), nil
}

func scrape(url, metric string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), metric+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found", metric)
}

// reverseProxy serves a plain httputil.ReverseProxy to target on addr: the
// baseline for what any extra HTTP hop costs on this machine.
func reverseProxy(addr, target string) {
	u, err := url.Parse(target)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.FlushInterval = -1
	p.Transport = &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}
	if err := http.ListenAndServe(addr, p); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
