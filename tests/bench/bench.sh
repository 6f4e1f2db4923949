#!/bin/sh
# bench.sh - `make bench`: how fast and how small astromesh-cloudd is,
# measured against a hello-world libfcgi program behind the same lighttpd.
#
#   sh tests/bench/bench.sh ABS_BUILDDIR ABS_SRCDIR
#
# It starts, in a fresh temporary directory, on a free loopback port:
#   - astromesh-cloudd (BENCH_WORKERS workers x BENCH_THREADS threads),
#     with providers.openai pointed at
#   - tests/bench/fake_openai, a fast fake of the OpenAI chat API in C
#     (providers.openai), for the run throughput,
#   - tests/fake_provider.py, the scriptable fake model provider
#     (providers.groq, same wire protocol), for the slow-provider burst,
#   - tests/bench/fcgi_hello with the same number of processes and threads,
#   - ONE lighttpd serving /api/v1/ (the daemon, through the shared
#     etc/lighttpd files, unchanged) and /hello (fcgi_hello), see
#     tests/bench/lighttpd-bench.conf,
# and prints four tables:
#   1. wrk requests/s for /hello, GET of one agent and GET of the agent list,
#      measured one after the other in this run with identical wrk settings,
#      with the ratio to /hello and where the CPU went (lighttpd, backend,
#      everything else, i.e. wrk and the kernel);
#   2. deploy latency over HTTP (one keep-alive client): first deploy of a
#      fresh agent and redeploy of a paused one, p50/p90/p99;
#   3. memory of the daemon's processes (VmRSS and Pss) at start, idle after
#      the wrk runs and idle after the deploys, next to fcgi_hello's and
#      lighttpd's, and the supervisor's and one worker's by mapping;
#   4. execution (POST .../run), with the fake provider answering at once:
#      a. wrk requests/s of runs on an `echo/echo-1` agent (no network) and
#         on an `openai/gpt-4o-mini` agent (the C fake), next to /hello sent
#         the same POST in the same run, with the CPU of each process, the
#         fake's included;
#      b. the pipeline's own overhead: BENCH_RUNS sequential runs of the
#         echo agent over one keep-alive connection, interleaved with GET
#         /hello on the same connection (the HTTP + lighttpd + FastCGI
#         floor): p50/p90 of both and the difference, and the daemon's own
#         latency_ms;
#      a'. (with storage.sync: true) after a SIGHUP reload with
#         storage.run_flush_ms: 0, /hello and the echo runs of 4a again:
#         what it costs when every run waits for its own fsync;
#      then, after a SIGHUP reload into the default server.workers and
#      server.threads, with the fake answering after 1 s:
#      c. BENCH_CONCURRENCY concurrent runs, each from its own thread and
#         connection, released together by a barrier: how many answered 200
#         with their own expected answer, the wall time, how many reached
#         the fake at once, and the daemon's peak RSS and Pss while they
#         wait.
#   5. the WebSocket stream (tests/bench/bench_stream.py): relay latency
#      p50/p99 from a streaming fake in the bench process (providers.mistral)
#      to a client through lighttpd, next to the same fake read directly;
#      BENCH_STREAM_IDLE (default 2000) idle streams opened on the stream
#      socket, the stream process's memory per connection, and the relay
#      again while they are open (limits.max_streams raised for it).
# Targets from issue 2: agent GET >= 70% of /hello, deploy p50 < 5 ms, one
# idle worker < 8 MiB. From issue 3: run >= 40% of /hello, pipeline
# overhead p50 < 1 ms, >= 200 runs in flight with every answer correct.
# It is a benchmark: it reports, it never fails on a figure. It exits
# non-zero only when it could not measure (a tool is missing, a process did
# not start, a request did not answer as expected).
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
#   BENCH_RUN_FLUSH_MS storage.run_flush_ms (default 100, the shipped default);
#                      4a is also measured again with 0 (every run fsynced
#                      before its answer) after a reload
#   BENCH_RUNS         sequential runs timed for the pipeline overhead
#                      (default 2000)
#   BENCH_CONCURRENCY  the concurrent-run counts tried against the slow
#                      fake provider, space-separated (default "200 256")
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
BENCH_RUN_FLUSH_MS=${BENCH_RUN_FLUSH_MS:-100}
BENCH_RUNS=${BENCH_RUNS:-2000}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-200 256}

DAEMON=$BUILDDIR/astromesh-cloudd
HELLO=$BUILDDIR/tests/bench/fcgi_hello
LIGHTTPD_DIR=$SRCDIR/etc/lighttpd
BENCH_CONF=$SRCDIR/tests/bench/lighttpd-bench.conf
FAKE=$SRCDIR/tests/fake_provider.py
CFAKE=$BUILDDIR/tests/bench/fake_openai

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
[ -x "$CFAKE" ] || die "$CFAKE not built: run make tests/bench/fake_openai"
for f in "$LIGHTTPD_DIR/astromesh-dev.conf" "$LIGHTTPD_DIR/astromesh-cloud-fastcgi.conf" \
         "$BENCH_CONF" "$FAKE"; do
    [ -r "$f" ] || die "missing $f"
done
case $BENCH_WORKERS$BENCH_THREADS$BENCH_CONNECTIONS$BENCH_WRK_THREADS$BENCH_ROUNDS$BENCH_DEPLOYS$BENCH_RUNS$BENCH_RUN_FLUSH_MS in
    *[!0-9]*) die "BENCH_WORKERS, _THREADS, _CONNECTIONS, _WRK_THREADS, _ROUNDS, _DEPLOYS, _RUNS, _RUN_FLUSH_MS must be integers" ;;
esac
[ -n "$(echo $BENCH_CONCURRENCY)" ] || die "BENCH_CONCURRENCY is empty"
for c in $BENCH_CONCURRENCY; do
    case $c in
        *[!0-9]*) die "BENCH_CONCURRENCY must be space-separated integers" ;;
    esac
done

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
RELAY_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BENCH_STREAM_IDLE=${BENCH_STREAM_IDLE:-2000}
SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
mkdir "$TMP/db" "$TMP/run"

# The fake model providers first: the daemon's config needs their ports,
# the first line each prints. Both exit by themselves if this shell goes
# away. Sets pid and FAKE_PORT to the new fake's.
start_fake() {    # name, pid variable name, command...
    name=$1
    shift
    "$@" --port 0 >"$TMP/$name.port" 2>"$TMP/$name.log" &
    pid=$!
    PIDS="$pid $PIDS"
    FAKE_PORT=
    n=0
    while :; do
        FAKE_PORT=$(head -n 1 "$TMP/$name.port" 2>/dev/null || true)
        [ -z "$FAKE_PORT" ] || break
        kill -0 "$pid" 2>/dev/null || { show_logs; die "$name exited at start"; }
        [ $n -lt 100 ] || { show_logs; die "$name printed no port in 10 s"; }
        sleep 0.1
        n=$((n + 1))
    done
}
start_fake cfake "$CFAKE"
CFAKE_PID=$pid
CFAKE_PORT=$FAKE_PORT
start_fake fake python3 "$FAKE"
FAKE_PID=$pid

# The daemon's config. max_agents is raised so the deploy timing can create
# its agents in one org; access_ttl so a long run keeps its token;
# requests_per_day so the daily limit never interferes with the run figures.
# Part 4c rewrites this file without the workers and threads lines and
# reloads the daemon (SIGHUP), so that it runs with the defaults.
(umask 077 && head -c 32 /dev/urandom >"$TMP/master.key")
cat >"$TMP/bench.yaml" <<EOF
server:
  socket: $TMP/fcgi.sock
  workers: $BENCH_WORKERS
  threads: $BENCH_THREADS
storage:
  data_dir: $TMP/db
  sync: $BENCH_DB_SYNC
  run_flush_ms: $BENCH_RUN_FLUSH_MS
limits:
  max_agents: 100000
  requests_per_day: 100000000
  max_streams: $((BENCH_STREAM_IDLE + 100))
auth:
  jwt_secret: "$SECRET"
  master_key_file: $TMP/master.key
  dev_login: true
  access_ttl: 86400
log:
  level: warn
providers:
  openai:
    base_url: http://127.0.0.1:$CFAKE_PORT/v1
    api_key: sk-bench
  groq:
    base_url: http://127.0.0.1:$FAKE_PORT/v1
    api_key: sk-bench
  mistral:
    base_url: http://127.0.0.1:$RELAY_PORT/v1
    api_key: sk-bench
EOF
chmod 600 "$TMP/bench.yaml"    # it holds jwt_secret inline

# lighttpd resolves relative includes against the directory of the -f file,
# so the bench file and the two shared files sit side by side here.
ln -s "$BENCH_CONF" "$TMP/lighttpd-bench.conf"
ln -s "$LIGHTTPD_DIR/astromesh-dev.conf" "$TMP/astromesh-dev.conf"
ln -s "$LIGHTTPD_DIR/astromesh-cloud-fastcgi.conf" "$TMP/astromesh-cloud-fastcgi.conf"
ln -s "$LIGHTTPD_DIR/astromesh-cloud-stream.conf" "$TMP/astromesh-cloud-stream.conf"
ASTROMESH_PORT=$PORT
ASTROMESH_SOCKET=$TMP/fcgi.sock
ASTROMESH_STREAM_SOCKET=$TMP/stream.sock
ASTROMESH_RUNDIR=$TMP/run
ASTROMESH_ERRORLOG=$TMP/lighttpd-error.log
ASTROMESH_ACCESSLOG=/dev/null    # same for both backends; see lighttpd-bench.conf
ASTROMESH_PIDFILE=$TMP/lighttpd.pid
BENCH_HELLO_SOCKET=$TMP/hello.sock
export ASTROMESH_PORT ASTROMESH_SOCKET ASTROMESH_STREAM_SOCKET ASTROMESH_RUNDIR ASTROMESH_ERRORLOG \
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
# tests/bench/bench.py takes the set-up above from its environment
LIGHTTPD_VERSION=$("$LIGHTTPD" -v 2>/dev/null | head -n 1 | sed 's/ - .*//')
if ! PORT=$PORT DAEMON_PID=$DAEMON_PID HELLO_PID=$HELLO_PID LIGHTTPD_PID=$LIGHTTPD_PID \
     WORKERS=$BENCH_WORKERS THREADS=$BENCH_THREADS DURATION=$BENCH_DURATION \
     WARMUP=$BENCH_WARMUP CONNECTIONS=$BENCH_CONNECTIONS WRK_THREADS=$BENCH_WRK_THREADS \
     ROUNDS=$BENCH_ROUNDS DIAG=${BENCH_DIAG:-} DEPLOYS=$BENCH_DEPLOYS DB_SYNC=$BENCH_DB_SYNC \
     RUN_FLUSH_MS=$BENCH_RUN_FLUSH_MS FAKE_PID=$FAKE_PID FAKE_PORT=$FAKE_PORT CFAKE_PID=$CFAKE_PID RUNS=$BENCH_RUNS CONCURRENCY="$BENCH_CONCURRENCY" \
     CONFIG=$TMP/bench.yaml RELAY_PORT=$RELAY_PORT STREAM_SOCKET=$TMP/stream.sock \
     STREAM_IDLE=$BENCH_STREAM_IDLE \
     LIGHTTPD_VERSION=$LIGHTTPD_VERSION python3 "$SRCDIR/tests/bench/bench.py"; then
    show_logs
    exit 1
fi
