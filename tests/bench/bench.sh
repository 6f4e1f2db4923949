#!/bin/sh
# bench.sh - `make bench`: how fast and how small astromesh-cloudd is,
# measured against a hello-world libfcgi program behind the same lighttpd.
#
#   sh tests/bench/bench.sh ABS_BUILDDIR ABS_SRCDIR
#
# It starts, in a fresh temporary directory, on a free loopback port:
#   - astromesh-cloudd (BENCH_WORKERS workers x BENCH_THREADS threads),
#   - tests/bench/fcgi_hello with the same number of processes and threads,
#   - ONE lighttpd serving /api/v1/ (the daemon, through the shared
#     etc/lighttpd files, unchanged) and /hello (fcgi_hello), see
#     tests/bench/lighttpd-bench.conf,
# and prints three tables:
#   1. wrk requests/s for /hello, GET of one agent and GET of the agent list,
#      measured one after the other in this run with identical wrk settings,
#      with the ratio to /hello and where the CPU went (lighttpd, backend,
#      everything else, i.e. wrk and the kernel);
#   2. deploy latency over HTTP (one keep-alive client): first deploy of a
#      fresh agent and redeploy of a paused one, p50/p90/p99;
#   3. memory of the daemon's processes (VmRSS and Pss) at start, idle after
#      the wrk runs and idle after the deploys, next to fcgi_hello's and
#      lighttpd's, and the supervisor's and one worker's by mapping.
# Targets from issue 2: agent GET >= 70% of /hello, deploy p50 < 5 ms, one
# idle worker < 8 MiB. It is a benchmark: it reports, it never fails on a
# figure. It exits non-zero only when it could not measure (a tool is
# missing, a process did not start, a request did not answer as expected).
#
# Environment (all optional):
#   BENCH_DURATION     wrk duration per target and round (default 10s)
#   BENCH_WARMUP       wrk warm-up per target before measuring (default 2s)
#   BENCH_CONNECTIONS  wrk connections (default 32)
#   BENCH_WRK_THREADS  wrk threads (default 2)
#   BENCH_ROUNDS       measure every target this many times, interleaved;
#                      report the median req/s and the median of the
#                      per-round ratios to /hello (default 1)
#   BENCH_WORKERS      server.workers, and fcgi_hello processes (default 2)
#   BENCH_THREADS      server.threads, and fcgi_hello threads (default 8)
#   BENCH_DEPLOYS      agents created for the deploy timing (default 200)
#   BENCH_DB_SYNC      storage.sync (default true, the shipped default)
#   BENCH_DIAG         if 1, also measure two cheaper daemon requests that
#                      split the cost of a GET: an unknown route (404 before
#                      any auth or database work) and a missing agent (404
#                      after the JWT, token-family and membership checks)
#   BENCH_KEEP_TMP     if set, keep the temporary directory (logs, db)
#   LIGHTTPD           the lighttpd binary (default: from PATH, /usr/sbin)
#   TMPDIR             where the temporary directory goes (default /tmp)

set -eu

BUILDDIR=${1:?usage: bench.sh ABS_BUILDDIR ABS_SRCDIR}
SRCDIR=${2:?usage: bench.sh ABS_BUILDDIR ABS_SRCDIR}

BENCH_DURATION=${BENCH_DURATION:-10s}
BENCH_WARMUP=${BENCH_WARMUP:-2s}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-32}
BENCH_WRK_THREADS=${BENCH_WRK_THREADS:-2}
BENCH_ROUNDS=${BENCH_ROUNDS:-1}
BENCH_WORKERS=${BENCH_WORKERS:-2}
BENCH_THREADS=${BENCH_THREADS:-8}
BENCH_DEPLOYS=${BENCH_DEPLOYS:-200}
BENCH_DB_SYNC=${BENCH_DB_SYNC:-true}

DAEMON=$BUILDDIR/astromesh-cloudd
HELLO=$BUILDDIR/tests/bench/fcgi_hello
LIGHTTPD_DIR=$SRCDIR/etc/lighttpd
BENCH_CONF=$SRCDIR/tests/bench/lighttpd-bench.conf

die() {
    echo "bench.sh: $*" >&2
    exit 1
}

# --- what we need ----------------------------------------------------------------

command -v wrk >/dev/null 2>&1 || die "wrk not found: apt-get install wrk"
command -v python3 >/dev/null 2>&1 || die "python3 not found: apt-get install python3"
if [ -z "${LIGHTTPD:-}" ]; then
    LIGHTTPD=$(command -v lighttpd 2>/dev/null || true)
    [ -n "$LIGHTTPD" ] || LIGHTTPD=/usr/sbin/lighttpd
fi
[ -x "$LIGHTTPD" ] || die "lighttpd not found (LIGHTTPD=$LIGHTTPD): apt-get install lighttpd"
[ -x "$DAEMON" ] || die "$DAEMON not built: run make first"
[ -x "$HELLO" ] || die "$HELLO not built: run make tests/bench/fcgi_hello"
for f in "$LIGHTTPD_DIR/astromesh-dev.conf" "$LIGHTTPD_DIR/astromesh-cloud-fastcgi.conf" \
         "$BENCH_CONF"; do
    [ -r "$f" ] || die "missing $f"
done
case $BENCH_WORKERS$BENCH_THREADS$BENCH_CONNECTIONS$BENCH_WRK_THREADS$BENCH_ROUNDS$BENCH_DEPLOYS in
    *[!0-9]*) die "BENCH_WORKERS, _THREADS, _CONNECTIONS, _WRK_THREADS, _ROUNDS, _DEPLOYS must be integers" ;;
esac

# --- processes and cleanup -----------------------------------------------------------

# The temporary directory is short on purpose: unix socket paths are
# limited to 107 bytes.
TMP=$(mktemp -d "${TMPDIR:-/tmp}/am-bench.XXXXXX")
PIDS=""
if [ ${#TMP} -gt 90 ]; then
    rmdir "$TMP"
    die "temporary directory $TMP is too long for a unix socket path: set TMPDIR=/tmp"
fi

# Stop what we started, by pid, newest first: SIGTERM, a bounded wait, then
# SIGKILL. Runs on every exit path.
cleanup() {
    rc=$?
    trap - EXIT
    trap '' HUP INT PIPE TERM     # nothing may cut the clean-up short
    for pid in $PIDS; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $PIDS; do
        n=0
        while kill -0 "$pid" 2>/dev/null && [ $n -lt 50 ]; do
            sleep 0.1
            n=$((n + 1))
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${BENCH_KEEP_TMP:-}" ]; then
        echo "bench.sh: kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit $rc
}
# A signal must end in cleanup too: dash runs the EXIT trap on a trapped
# signal only. PIPE matters: `make bench | head` closes our stdout.
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM

# Print the logs of every process when something fails before the figures.
show_logs() {
    for f in "$TMP"/*.log; do
        [ -s "$f" ] || continue
        echo "--- $f (last 20 lines)" >&2
        tail -n 20 "$f" >&2
    done
}

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
mkdir "$TMP/db" "$TMP/run"

# The daemon's config. max_agents is raised so the deploy timing can create
# its agents in one org; access_ttl so a long run keeps its token.
cat >"$TMP/bench.yaml" <<EOF
server:
  socket: $TMP/fcgi.sock
  workers: $BENCH_WORKERS
  threads: $BENCH_THREADS
storage:
  data_dir: $TMP/db
  sync: $BENCH_DB_SYNC
limits:
  max_agents: 100000
auth:
  jwt_secret: "$SECRET"
  dev_login: true
  access_ttl: 86400
log:
  level: warn
EOF

# lighttpd resolves relative includes against the directory of the -f file,
# so the bench file and the two shared files sit side by side here.
ln -s "$BENCH_CONF" "$TMP/lighttpd-bench.conf"
ln -s "$LIGHTTPD_DIR/astromesh-dev.conf" "$TMP/astromesh-dev.conf"
ln -s "$LIGHTTPD_DIR/astromesh-cloud-fastcgi.conf" "$TMP/astromesh-cloud-fastcgi.conf"
ASTROMESH_PORT=$PORT
ASTROMESH_SOCKET=$TMP/fcgi.sock
ASTROMESH_RUNDIR=$TMP/run
ASTROMESH_ERRORLOG=$TMP/lighttpd-error.log
ASTROMESH_ACCESSLOG=/dev/null    # same for both backends; see lighttpd-bench.conf
ASTROMESH_PIDFILE=$TMP/lighttpd.pid
BENCH_HELLO_SOCKET=$TMP/hello.sock
export ASTROMESH_PORT ASTROMESH_SOCKET ASTROMESH_RUNDIR ASTROMESH_ERRORLOG \
       ASTROMESH_ACCESSLOG ASTROMESH_PIDFILE BENCH_HELLO_SOCKET

"$LIGHTTPD" -tt -f "$TMP/lighttpd-bench.conf" >"$TMP/lighttpd-check.log" 2>&1 || {
    cat "$TMP/lighttpd-check.log" >&2
    die "lighttpd rejected tests/bench/lighttpd-bench.conf"
}

"$DAEMON" -c "$TMP/bench.yaml" >"$TMP/daemon.log" 2>&1 &
DAEMON_PID=$!
PIDS="$DAEMON_PID $PIDS"
"$HELLO" "$BENCH_HELLO_SOCKET" "$BENCH_WORKERS" "$BENCH_THREADS" >"$TMP/hello.log" 2>&1 &
HELLO_PID=$!
PIDS="$HELLO_PID $PIDS"
"$LIGHTTPD" -D -f "$TMP/lighttpd-bench.conf" >"$TMP/lighttpd.log" 2>&1 &
LIGHTTPD_PID=$!
PIDS="$LIGHTTPD_PID $PIDS"

# --- the measurements ------------------------------------------------------------------

cat >"$TMP/bench.py" <<'PYEOF'
"""The measuring half of bench.sh: HTTP set-up, wrk runs with CPU
accounting from /proc, the deploy timing and the memory table."""
import http.client
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time

E = os.environ
PORT = int(E["PORT"])
PIDS = {"daemon": int(E["DAEMON_PID"]), "hello": int(E["HELLO_PID"]),
        "lighttpd": int(E["LIGHTTPD_PID"])}
HZ = os.sysconf("SC_CLK_TCK")
HELLO_BODY = {"hello": "world"}
LIST_SIZE = 5          # agents in the listed org: the default plan's max_agents


class BenchError(Exception):
    pass


# --- /proc ---------------------------------------------------------------------------

def children(pid):
    """Live child pids of pid."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == str(pid) and fields[0] != "Z":
                kids.append(int(entry))
    return sorted(kids)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_ticks(pid):
    """utime + stime of pid (all its threads), in clock ticks; 0 if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def system_ticks():
    """(busy, total) clock ticks of all CPUs since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])             # guest time is already in user
    return total - idle, total


def kib_fields(path, names):
    out = dict.fromkeys(names, 0)
    try:
        with open(path) as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in out:
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def memory_by_mapping(pid):
    """{class: [Rss KiB, Pss KiB]} of pid from /proc/PID/smaps, by what is
    mapped: the BDB region files, the registry segment, libraries, the
    program, anonymous memory (heap, thread stacks)."""
    out = {}
    cls = None
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                first = line.split(None, 1)[0]
                if "-" in first and not first.endswith(":"):
                    parts = line.split(None, 5)
                    path = parts[5].strip() if len(parts) > 5 else ""
                    if "/__db." in path:
                        cls = "Berkeley DB regions (__db.*)"
                    elif path.startswith("/dev/shm/") or path.startswith("/SYSV"):
                        cls = "registry (POSIX shm)"
                    elif ".so" in path:
                        cls = "shared libraries"
                    elif path.startswith("/"):
                        cls = "program and other files"
                    else:
                        cls = "anonymous (heap, stacks)"
                elif first in ("Rss:", "Pss:") and cls is not None:
                    v = out.setdefault(cls, [0, 0])
                    v[0 if first == "Rss:" else 1] += int(line.split()[1])
    except OSError:
        pass
    return out


def memory(pid):
    """Memory of pid in KiB: VmRSS and its split, Pss and its split."""
    m = kib_fields("/proc/%d/status" % pid, ("VmRSS", "RssAnon", "RssFile", "RssShmem"))
    m.update(kib_fields("/proc/%d/smaps_rollup" % pid,
                        ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem")))
    return m


# --- HTTP ----------------------------------------------------------------------------

class Client:
    """One keep-alive HTTP/1.1 connection to lighttpd."""

    def __init__(self, token=None):
        self.token = token
        self.conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)

    def request(self, method, path, body=None):
        """Return (status, parsed JSON or None, seconds taken)."""
        headers = {"Content-Length": "0"} if body is None else {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        data = None if body is None else json.dumps(body)
        for attempt in (0, 1):
            try:
                t0 = time.perf_counter()
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                dt = time.perf_counter() - t0
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # lighttpd closed an idle or exhausted keep-alive connection
                self.conn.close()
                if attempt:
                    raise
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        return resp.status, doc, dt

    def expect(self, status, method, path, body=None):
        got, doc, dt = self.request(method, path, body)
        if got != status:
            raise BenchError("%s %s answered %d, expected %d: %r" % (method, path, got, status, doc))
        return doc, dt

    def close(self):
        self.conn.close()


def wait_ready(timeout=30.0):
    deadline = time.monotonic() + timeout
    last = "nothing yet"
    while time.monotonic() < deadline:
        for name, pid in PIDS.items():
            if not alive(pid):
                raise BenchError("%s (pid %d) exited during start-up" % (name, pid))
        try:
            c = Client()
            s1, d1, _ = c.request("GET", "/api/v1/health")
            s2, d2, _ = c.request("GET", "/hello")
            c.close()
            if s1 == 200 and s2 == 200 and d2 == HELLO_BODY \
               and len(children(PIDS["daemon"])) == int(E["WORKERS"]) \
               and len(children(PIDS["hello"])) == int(E["WORKERS"]):
                return
            last = "health %d, hello %d" % (s1, s2)
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise BenchError("not ready after %.0fs (%s)" % (timeout, last))


def dev_login(email):
    doc, _ = Client().expect(200, "POST", "/api/v1/auth/dev/login",
                             {"email": email, "name": "Bench"})
    return doc["access_token"], doc["org_slug"]


def agent_body(name):
    return {"name": name, "step1": {"model": "echo/echo-1"},
            "step2": {"system_prompt": "You help.", "tone": "professional"}}


# --- wrk ------------------------------------------------------------------------------

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * UNIT_MS[m.group(2)] if m else float("nan")


def wrk(url, token, duration, backend_pid):
    """Run wrk once; return its figures and the CPU each side used."""
    cmd = ["wrk", "-t", E["WRK_THREADS"], "-c", E["CONNECTIONS"], "-d", duration,
           "--latency", "-H", "Authorization: Bearer " + token, url]
    watched = {"lighttpd": [PIDS["lighttpd"]], "backend": children(backend_pid)}
    before = {k: sum(cpu_ticks(p) for p in v) for k, v in watched.items()}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, total0 = system_ticks()
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    busy1, total1 = system_ticks()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = {k: sum(cpu_ticks(p) for p in v) for k, v in watched.items()}
    if out.returncode != 0:
        raise BenchError("wrk failed: %s" % (out.stderr.strip() or out.stdout.strip()))
    if children(backend_pid) != watched["backend"]:
        raise BenchError("a backend process was replaced during the run: %s" % url)
    text = out.stdout
    r = {"text": text}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", text)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Latency\s+(\S+)", text)
    r["lat_avg"] = to_ms(m.group(1)) if m else float("nan")
    for q in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % q, text, re.M)
        r["p" + q] = to_ms(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["sock_errors"] = sum(int(x) for x in m.groups()) if m else 0
    secs = wall * HZ                     # ticks of one CPU during the run
    r["cpu"] = {k: 100.0 * (after[k] - before[k]) / secs for k in watched}
    r["cpu"]["wrk"] = 100.0 * ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) / wall
    r["cpu"]["all"] = 100.0 * (busy1 - busy0) / secs
    r["cpu"]["rest"] = (r["cpu"]["all"] - r["cpu"]["lighttpd"] - r["cpu"]["backend"]
                        - r["cpu"]["wrk"])
    n = max(r["requests"], 1)
    r["us_per_req"] = {k: 1e6 * (after[k] - before[k]) / HZ / n for k in watched}
    return r


# --- the three parts ------------------------------------------------------------------

def pct(xs, q):
    """The q-th percentile (nearest rank) of xs."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q / 100.0 * len(s) + 0.5)) - 1))]


def throughput(token, slug):
    """Warm up, then wrk every target ROUNDS times, interleaved. A target is
    (label, url, backend pid, expected status); each answers as expected
    once through http.client before wrk runs."""
    base = "http://127.0.0.1:%d" % PORT
    org = "/api/v1/orgs/%s" % slug
    targets = [
        ("hello-world /hello", "/hello", PIDS["hello"], 200),
        ("GET one agent", org + "/agents/bench-bot", PIDS["daemon"], 200),
        ("GET agent list (%d)" % LIST_SIZE, org + "/agents", PIDS["daemon"], 200),
    ]
    if E["DIAG"] not in ("", "0"):
        targets += [
            ("diag: unknown route 404", "/api/v1/bench-no-such-route", PIDS["daemon"], 404),
            ("diag: missing agent 404", org + "/agents/no-such-agent", PIDS["daemon"], 404),
        ]
    c = Client(token)
    for name, path, _, status in targets:
        got, doc, _ = c.request("GET", path)
        if got != status or (path == "/hello" and doc != HELLO_BODY):
            raise BenchError("%s: GET %s answered %d %r, expected %d" % (name, path, got, doc, status))
    c.close()
    targets = [(name, base + path, pid, status) for name, path, pid, status in targets]
    for _, url, pid, _ in targets:
        wrk(url, token, E["WARMUP"], pid)
    runs = {t[0]: [] for t in targets}
    for _ in range(int(E["ROUNDS"])):
        for name, url, pid, _ in targets:
            runs[name].append(wrk(url, token, E["DURATION"], pid))
    return targets, runs


def print_throughput(targets, runs):
    rounds = int(E["ROUNDS"])
    print("1. Throughput through one lighttpd (wrk -t%s -c%s -d%s, after a %s warm-up per target%s)"
          % (E["WRK_THREADS"], E["CONNECTIONS"], E["DURATION"], E["WARMUP"],
             "" if rounds == 1 else "; median of %d interleaved rounds" % rounds))
    print()
    hdr = ("%-24s %10s %8s %8s %8s %8s   %7s %7s %7s %7s   %9s %9s"
           % ("target", "req/s", "vs hello", "avg ms", "p50 ms", "p99 ms",
              "%lighty", "%backnd", "%wrk", "%rest", "us/req lt", "us/req be"))
    print(hdr)
    print("-" * len(hdr))
    # The ratio of each round is taken side by side (same round), and the
    # median of those is reported; the other columns come from the round
    # with the median req/s.
    hello_runs = runs[targets[0][0]]
    med, ratio = {}, {}
    for name, _, _, _ in targets:
        rs = sorted(runs[name], key=lambda r: r["rps"])
        med[name] = rs[len(rs) // 2]
        ratio[name] = statistics.median(x["rps"] / (h["rps"] or 1.0)
                                        for x, h in zip(runs[name], hello_runs))
    invalid = []
    for name, _, _, status in targets:
        r = med[name]
        print("%-24s %10.0f %7.1f%% %8.2f %8.2f %8.2f   %7.0f %7.0f %7.0f %7.0f   %9.1f %9.1f"
              % (name, statistics.median(x["rps"] for x in runs[name]), 100.0 * ratio[name],
                 r["lat_avg"], r["p50"], r["p99"],
                 r["cpu"]["lighttpd"], r["cpu"]["backend"], r["cpu"]["wrk"], r["cpu"]["rest"],
                 r["us_per_req"]["lighttpd"], r["us_per_req"]["backend"]))
        for x in runs[name]:
            # wrk counts every 404 of a diagnostic row as non-2xx
            wrong = x["non2xx"] if status < 300 else x["requests"] - x["non2xx"]
            if wrong or x["sock_errors"]:
                invalid.append("%s: %d unexpected responses, %d socket errors"
                               % (name, wrong, x["sock_errors"]))
    if rounds > 1:
        print()
        print("per round, req/s (ratio to hello-world of the same round):")
        for i in range(rounds):
            h = runs[targets[0][0]][i]["rps"] or 1.0
            print("  round %d: " % (i + 1) + "; ".join(
                "%s %.0f (%.1f%%)" % (name, runs[name][i]["rps"], 100.0 * runs[name][i]["rps"] / h)
                for name, _, _, _ in targets))
    print()
    print("  %lighty/%backnd/%wrk: CPU of lighttpd / of all backend processes / of wrk, in % of")
    print("  one core; %rest: the rest of the machine's busy time (interrupts, and anything else")
    print("  running: a high %rest means the figures were disturbed). us/req: CPU microseconds")
    print("  per request in lighttpd and in the backend.")
    print("  wrk shares the %d CPUs with lighttpd and the backends: absolute figures are low;"
          % os.cpu_count())
    print("  every target is measured the same way, so compare the ratios, which are from this run.")
    for line in invalid:
        print("  WARNING, figure not valid: " + line)
    return ratio


def deploy_timing(n):
    """n fresh agents: create, deploy (first), pause, deploy (redeploy),
    pause. Returns {phase: [seconds]}."""
    token, slug = dev_login("deploy-bench@example.com")
    c = Client(token)
    base = "/api/v1/orgs/%s/agents" % slug
    t = {"create": [], "first deploy": [], "pause": [], "redeploy": [], "GET agent": []}
    for i in range(n):
        name = "d%05d" % i
        _, dt = c.expect(201, "POST", base, agent_body(name))
        t["create"].append(dt)
        doc, dt = c.expect(200, "POST", "%s/%s/deploy" % (base, name))
        if doc.get("status") != "deployed":
            raise BenchError("deploy answered %r" % doc)
        t["first deploy"].append(dt)
        _, dt = c.expect(200, "POST", "%s/%s/pause" % (base, name))
        t["pause"].append(dt)
        _, dt = c.expect(200, "POST", "%s/%s/deploy" % (base, name))
        t["redeploy"].append(dt)
        _, dt = c.expect(200, "GET", "%s/%s" % (base, name))
        t["GET agent"].append(dt)
        c.expect(200, "POST", "%s/%s/pause" % (base, name))
    # the same client, same connection kind, against the baseline
    t["GET /hello"] = [c.request("GET", "/hello")[2] for _ in range(n)]
    c.close()
    return t


def print_deploy(t, n):
    print("2. Lifecycle latency over HTTP (one keep-alive client, %d fresh agents, "
          "storage.sync: %s)" % (n, E["DB_SYNC"]))
    print()
    hdr = "%-14s %8s %8s %8s %8s %8s" % ("call", "n", "p50 ms", "p90 ms", "p99 ms", "max ms")
    print(hdr)
    print("-" * len(hdr))
    for name, xs in t.items():
        ms = [x * 1000.0 for x in xs]
        print("%-14s %8d %8.2f %8.2f %8.2f %8.2f"
              % (name, len(ms), pct(ms, 50), pct(ms, 90), pct(ms, 99), max(ms)))
    fd, rd = pct(t["first deploy"], 50), pct(t["redeploy"], 50)
    print()
    print("  first deploy = validate + compile + store + registry load; redeploy reuses the")
    print("  stored compilation. Redeploy p50 is %.0f%% of first-deploy p50." % (100.0 * rd / fd))
    print("  Each call includes the HTTP round trip through lighttpd (see GET /hello).")


def print_memory(rows):
    print("3. Memory (KiB converted to MiB; Pss shares shared pages among their users)")
    print()
    hdr = ("%-36s %8s %8s %8s %8s   %8s %8s %8s %8s"
           % ("process", "VmRSS", "RssAnon", "RssFile", "RssShm",
              "Pss", "PssAnon", "PssFile", "PssShm"))
    print(hdr)
    print("-" * len(hdr))
    for label, m in rows:
        print("%-36s %8.2f %8.2f %8.2f %8.2f   %8.2f %8.2f %8.2f %8.2f"
              % (label, m["VmRSS"] / 1024, m["RssAnon"] / 1024, m["RssFile"] / 1024,
                 m["RssShmem"] / 1024, m["Pss"] / 1024, m["Pss_Anon"] / 1024,
                 m["Pss_File"] / 1024, m["Pss_Shmem"] / 1024))
    print()
    print("  RssShm: the registry segment (tmpfs). The Berkeley DB region files are ordinary")
    print("  file mappings, counted in RssFile with the libraries. Pss divides each shared")
    print("  page among the processes that map it.")


def print_mappings(label_maps):
    classes = ["anonymous (heap, stacks)", "shared libraries", "program and other files",
               "Berkeley DB regions (__db.*)", "registry (POSIX shm)"]
    print("   by mapping, MiB:")
    hdr = "   %-30s" % "" + "".join("%22s" % label for label, _ in label_maps)
    print(hdr)
    print("   %-30s" % "" + "".join("%11s%11s" % ("Rss", "Pss") for _ in label_maps))
    for c in classes:
        print("   %-30s" % c + "".join("%11.2f%11.2f" % tuple(x / 1024.0 for x in m.get(c, [0, 0]))
                                        for _, m in label_maps))


def main():
    wait_ready()
    daemon_kids = children(PIDS["daemon"])
    mem_start = [("supervisor %d" % PIDS["daemon"], memory(PIDS["daemon"]))]
    mem_start += [("worker %d, at start" % p, memory(p)) for p in daemon_kids]

    token, slug = dev_login("bench@example.com")
    c = Client(token)
    base = "/api/v1/orgs/%s/agents" % slug
    for i in range(LIST_SIZE):
        c.expect(201, "POST", base, agent_body("bench-bot" if i == 0 else "bench-%d" % i))
    c.expect(200, "POST", base + "/bench-bot/deploy")
    doc, _ = c.expect(200, "GET", base + "/bench-bot")
    doc, _ = c.expect(200, "GET", base)
    c.close()

    print("astromesh-cloudd benchmark, %s" % time.strftime("%Y-%m-%d %H:%M:%S"))
    print("machine: %d CPUs, %s, Linux %s; %s"
          % (os.cpu_count(), cpu_model(), platform.release(), E["LIGHTTPD_VERSION"]))
    print("load average before the run: %.2f %.2f %.2f (other work on the machine skews "
          "every figure)" % os.getloadavg())
    print("daemon: %s workers x %s threads; fcgi_hello: %s processes x %s threads; "
          "one lighttpd (single process), access log to /dev/null"
          % (E["WORKERS"], E["THREADS"], E["WORKERS"], E["THREADS"]))
    print()
    sys.stdout.flush()

    targets, runs = throughput(token, slug)
    time.sleep(1.0)          # let the workers settle: idle, not in a request
    mem_wrk = [("worker %d, idle after wrk" % p, memory(p)) for p in children(PIDS["daemon"])]
    ratio = print_throughput(targets, runs)
    print()
    sys.stdout.flush()

    n = int(E["DEPLOYS"])
    t = deploy_timing(n)
    print_deploy(t, n)
    print()

    time.sleep(1.0)
    rows = mem_start + mem_wrk
    rows += [("worker %d, idle after deploys" % p, memory(p)) for p in children(PIDS["daemon"])]
    rows += [("fcgi_hello child %d, idle" % p, memory(p)) for p in children(PIDS["hello"])]
    rows += [("lighttpd %d" % PIDS["lighttpd"], memory(PIDS["lighttpd"]))]
    print_memory(rows)
    print()
    idle_worker = children(PIDS["daemon"])[0]
    print_mappings([("supervisor", memory_by_mapping(PIDS["daemon"])),
                    ("idle worker %d" % idle_worker, memory_by_mapping(idle_worker))])
    print()

    def worst(tag, key):
        return max(m[key] for label, m in rows if tag in label) / 1024.0
    get = ratio[targets[1][0]]
    lst = ratio[targets[2][0]]
    print("Summary (issue 2 targets; figures from this run)")
    print()
    hdr = "%-40s %16s %12s" % ("figure", "measured", "target")
    print(hdr)
    print("-" * len(hdr))
    print("%-40s %15.1f%% %12s" % ("GET one agent req/s vs hello-world", 100.0 * get, ">= 70%"))
    print("%-40s %15.1f%% %12s" % ("GET agent list req/s vs hello-world", 100.0 * lst, "-"))
    print("%-40s %13.2f ms %12s" % ("first deploy p50", 1000.0 * pct(t["first deploy"], 50), "< 5 ms"))
    print("%-40s %13.2f ms %12s" % ("redeploy p50", 1000.0 * pct(t["redeploy"], 50), "< 5 ms"))
    for tag, what in (("after wrk", "after the wrk runs"), ("after deploys", "after the deploys")):
        print("%-40s %12.2f MiB %12s" % ("idle worker VmRSS, %s" % what, worst(tag, "VmRSS"), "< 8 MiB"))
        print("%-40s %12.2f MiB %12s" % ("idle worker Pss, %s" % what, worst(tag, "Pss"), "-"))
    print()
    print("  The largest of the %s workers is shown. A deploy writes the agent's YAML into a"
          % E["WORKERS"])
    print("  registry slot; the worker that wrote it keeps those shm pages mapped (RssShm),")
    print("  which is why VmRSS grows with deploys while Pss, which shares them out, grows less.")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print("bench.sh: %s" % e, file=sys.stderr)
        sys.exit(1)
PYEOF

LIGHTTPD_VERSION=$("$LIGHTTPD" -v 2>/dev/null | head -n 1 | sed 's/ - .*//')
if ! PORT=$PORT DAEMON_PID=$DAEMON_PID HELLO_PID=$HELLO_PID LIGHTTPD_PID=$LIGHTTPD_PID \
     WORKERS=$BENCH_WORKERS THREADS=$BENCH_THREADS DURATION=$BENCH_DURATION \
     WARMUP=$BENCH_WARMUP CONNECTIONS=$BENCH_CONNECTIONS WRK_THREADS=$BENCH_WRK_THREADS \
     ROUNDS=$BENCH_ROUNDS DIAG=${BENCH_DIAG:-} DEPLOYS=$BENCH_DEPLOYS DB_SYNC=$BENCH_DB_SYNC \
     LIGHTTPD_VERSION=$LIGHTTPD_VERSION python3 "$TMP/bench.py"; then
    show_logs
    exit 1
fi
