#!/usr/bin/env python3
"""The measuring half of bench.sh: HTTP set-up, wrk runs with CPU
accounting from /proc, the deploy timing, the memory table and the
execution figures."""
import http.client
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time

E = os.environ
PORT = int(E["PORT"])
PIDS = {"daemon": int(E["DAEMON_PID"]), "hello": int(E["HELLO_PID"]),
        "lighttpd": int(E["LIGHTTPD_PID"])}
FAKE_PID = int(E["FAKE_PID"])      # tests/fake_provider.py (4c)
CFAKE_PID = int(E["CFAKE_PID"])    # tests/bench/fake_openai (4a)
FAKE_PORT = int(E["FAKE_PORT"])
HZ = os.sysconf("SC_CLK_TCK")
HELLO_BODY = {"hello": "world"}
LIST_SIZE = 5          # agents in the listed org: the default plan's max_agents


class BenchError(Exception):
    pass


# --- /proc ---------------------------------------------------------------------------

def children(pid, skip=("am-store-task", "am-stream")):
    """Live child pids of pid, without the supervisor's short-lived
    Berkeley DB tasks (am-store-task: a checkpoint every 30 s) and its
    stream process (am-stream, measured in section 5): the workers."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    comm, rest = f.read().split("(", 1)[1].rsplit(")", 1)
                    fields = rest.split()
            except (OSError, ValueError):
                continue
            if fields[1] == str(pid) and fields[0] != "Z" and comm not in skip:
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


def disk_flushes():
    """Flush requests completed by the machine's disks since boot (from
    /proc/diskstats; whole physical disks only: partitions, device-mapper,
    md, loop and RAM disks would count the same flush twice or never reach
    a disk). None when the kernel does not report flushes."""
    try:
        disks = set(d for d in os.listdir("/sys/block")
                    if not d.startswith(("loop", "ram", "zram", "dm-", "md")))
        n, seen = 0, False
        with open("/proc/diskstats") as f:
            for line in f:
                v = line.split()
                if len(v) >= 19 and v[2] in disks:
                    n += int(v[18])
                    seen = True
        return n if seen else None
    except OSError:
        return None


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


def wrk(url, token, duration, backend_pid, script=None):
    """Run wrk once; return its figures and the CPU each side used. With a
    Lua script, the script sets the method, the body and the headers."""
    cmd = ["wrk", "-t", E["WRK_THREADS"], "-c", E["CONNECTIONS"], "-d", duration, "--latency"]
    cmd += ["-s", script] if script else ["-H", "Authorization: Bearer " + token]
    cmd.append(url)
    watched = {"lighttpd": [PIDS["lighttpd"]], "backend": children(backend_pid),
               "fake": [CFAKE_PID]}
    before = {k: sum(cpu_ticks(p) for p in v) for k, v in watched.items()}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, total0 = system_ticks()
    fl0 = disk_flushes()
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    busy1, total1 = system_ticks()
    fl1 = disk_flushes()
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
    r["cpu"]["idle"] = 100.0 * ((total1 - busy1) - (total0 - busy0)) / secs
    r["flushes"] = (None if fl0 is None or fl1 is None
                    else (fl1 - fl0) / float(max(r["requests"], 1)))
    r["cpu"]["rest"] = (r["cpu"]["all"] - r["cpu"]["lighttpd"] - r["cpu"]["backend"]
                        - r["cpu"]["fake"] - r["cpu"]["wrk"])
    n = max(r["requests"], 1)
    r["us_per_req"] = {k: 1e6 * (after[k] - before[k]) / HZ / n for k in watched}
    return r


# --- the three parts ------------------------------------------------------------------

def api_key_script(token, slug, name, lines):
    """Create an API key (scopes run) in slug with the person's token and
    write a wrk Lua script sending it as X-API-Key, after lines (Lua).
    Returns (secret, script path)."""
    c = Client(token)
    doc, _ = c.expect(201, "POST", "/api/v1/orgs/%s/keys" % slug, {"name": "bench " + name})
    c.close()
    script = os.path.join(os.path.dirname(E["CONFIG"]), name + ".lua")
    with open(script, "w") as f:
        f.write("-- %s with an API key (written by bench.py)\n" % name + lines
                + "wrk.headers[\"X-API-Key\"] = \"%s\"\n" % doc["secret"])
    return doc["secret"], script


def check_api_key(secret, method, path, body=None):
    """One request with the key through http.client; its status."""
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    headers = {"X-API-Key": secret}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


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
    targets = [(name, base + path, pid, status, None) for name, path, pid, status in targets]
    # the same GET of one agent, authenticated by X-API-Key instead of the JWT
    secret, script = api_key_script(token, slug, "get-by-key", "")
    path = org + "/agents/bench-bot"
    if check_api_key(secret, "GET", path) != 200:
        raise BenchError("GET %s with an API key did not answer 200" % path)
    targets.insert(3, ("GET one agent, X-API-Key", base + path, PIDS["daemon"], 200, script))
    return targets, measure(targets, token)


def measure(targets, token):
    """Warm up every target, then wrk each ROUNDS times, interleaved. A
    target is (label, url, backend pid, expected status, wrk script or
    None). Returns {label: [wrk figures per round]}."""
    for _, url, pid, _, script in targets:
        wrk(url, token, E["WARMUP"], pid, script)
    runs = {t[0]: [] for t in targets}
    for _ in range(int(E["ROUNDS"])):
        for name, url, pid, _, script in targets:
            runs[name].append(wrk(url, token, E["DURATION"], pid, script))
    return runs


def print_throughput(targets, runs, title="1. Throughput through one lighttpd", fake=False):
    rounds = int(E["ROUNDS"])
    print("%s (wrk -t%s -c%s -d%s, after a %s warm-up per target%s)"
          % (title, E["WRK_THREADS"], E["CONNECTIONS"], E["DURATION"], E["WARMUP"],
             "" if rounds == 1 else "; median of %d interleaved rounds" % rounds))
    print()
    cols = ["lighttpd", "backend"] + (["fake"] if fake else []) + ["wrk", "rest"]
    cols += ["idle"] if fake else []
    names = {"lighttpd": "%lighty", "backend": "%backnd", "fake": "%fake",
             "wrk": "%wrk", "rest": "%rest", "idle": "%idle"}
    hdr = ("%-24s %10s %8s %8s %8s %8s   " % ("target", "req/s", "vs hello", "avg ms",
                                              "p50 ms", "p99 ms")
           + " ".join("%7s" % names[k] for k in cols)
           + "   %9s %9s" % ("us/req lt", "us/req be")
           + (" %8s" % "flush/rq" if fake else ""))
    print(hdr)
    print("-" * len(hdr))
    # The ratio of each round is taken side by side (same round), and the
    # median of those is reported; the other columns come from the round
    # with the median req/s.
    hello_runs = runs[targets[0][0]]
    med, ratio = {}, {}
    for t in targets:
        name = t[0]
        rs = sorted(runs[name], key=lambda r: r["rps"])
        med[name] = rs[len(rs) // 2]
        ratio[name] = statistics.median(x["rps"] / (h["rps"] or 1.0)
                                        for x, h in zip(runs[name], hello_runs))
    invalid = []
    for t in targets:
        name, status = t[0], t[3]
        r = med[name]
        print("%-24s %10.0f %7.1f%% %8.2f %8.2f %8.2f   "
              % (name, statistics.median(x["rps"] for x in runs[name]), 100.0 * ratio[name],
                 r["lat_avg"], r["p50"], r["p99"])
              + " ".join("%7.0f" % r["cpu"][k] for k in cols)
              + "   %9.1f %9.1f" % (r["us_per_req"]["lighttpd"], r["us_per_req"]["backend"])
              + ((" %8.2f" % r["flushes"] if r["flushes"] is not None else " %8s" % "?")
                 if fake else ""))
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
                "%s %.0f (%.1f%%)" % (t[0], runs[t[0]][i]["rps"], 100.0 * runs[t[0]][i]["rps"] / h)
                for t in targets))
    print()
    if fake:
        print("  %lighty/%backnd/%fake/%wrk: CPU of lighttpd / of all backend processes / of the")
        print("  fake provider / of wrk, in % of one core; %rest: the rest of the machine's busy")
        print("  time (interrupts, kernel threads, anything else running); %idle: CPU time nobody")
        print("  used (idle and iowait), in % of one core. us/req: CPU microseconds per request in")
        print("  lighttpd and in the backend. flush/rq: disk flush requests completed per request")
        print("  (/proc/diskstats, the whole machine).")
    else:
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
    pause, edit, deploy (a new version), rollback to version 1 while
    deployed, pause. Returns {phase: [seconds]}."""
    token, slug = dev_login("deploy-bench@example.com")
    c = Client(token)
    base = "/api/v1/orgs/%s/agents" % slug
    t = {"create": [], "first deploy": [], "pause": [], "redeploy": [], "GET agent": [],
         "new version": [], "rollback": []}
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
        c.expect(200, "PUT", "%s/%s" % (base, name), {"step2": {"system_prompt": "You help more."}})
        doc, dt = c.expect(200, "POST", "%s/%s/deploy" % (base, name))
        if doc.get("version") != 2:
            raise BenchError("deploy of an edited config answered %r" % doc)
        t["new version"].append(dt)
        doc, dt = c.expect(200, "POST", "%s/%s/rollback" % (base, name), {"version": 1})
        if doc.get("version") != 1 or doc.get("status") != "deployed":
            raise BenchError("rollback answered %r" % doc)
        t["rollback"].append(dt)
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
    print("  new version = a deploy of an edited config (compile + the version record);")
    print("  rollback = a deployed agent back to version 1 (its stored YAML, the registry")
    print("  switched in the same transaction). Rollback p50 is %.0f%% of first-deploy p50."
          % (100.0 * pct(t["rollback"], 50) / fd))
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


# --- execution (issue 3) ----------------------------------------------------------------

RUN_QUERY = "hello"
# (label, agent name, model, expected answer to RUN_QUERY)
EXEC_AGENTS = [
    ("run, echo/echo-1", "run-echo", "echo/echo-1", "echo: " + RUN_QUERY),
    ("run, openai via C fake", "run-openai", "openai/gpt-4o-mini", "fake answer to: " + RUN_QUERY),
]
# 4c's agent: the scriptable Python fake, told to answer slowly
SLOW_AGENT = ("run-slow", "groq/llama-3.1-8b-instant")
DEFAULT_WORKERS = 2       # server.workers when the config does not set it
SLOW_MS = 1000            # the fake's answer delay in 4c


def fake(method, path, body=None):
    """A call to the fake provider's control API."""
    conn = http.client.HTTPConnection("127.0.0.1", FAKE_PORT, timeout=30)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise BenchError("fake provider: %s %s answered %d: %r" % (method, path, resp.status, raw))
    return json.loads(raw) if raw else None


def exec_setup():
    """An org of its own with the run agents, deployed."""
    token, slug = dev_login("run-bench@example.com")
    c = Client(token)
    base = "/api/v1/orgs/%s/agents" % slug
    for name, model in [(a[1], a[2]) for a in EXEC_AGENTS] + [SLOW_AGENT]:
        body = agent_body(name)
        body["step1"]["model"] = model
        c.expect(201, "POST", base, body)
        doc, _ = c.expect(200, "POST", "%s/%s/deploy" % (base, name))
        if doc.get("status") != "deployed":
            raise BenchError("deploy of %s answered %r" % (name, doc))
    c.close()
    return token, slug


def run_path(slug, name):
    return "/api/v1/orgs/%s/agents/%s/run" % (slug, name)


def check_run(doc, name, model, answer):
    if not isinstance(doc, dict) or doc.get("answer") != answer or doc.get("model") != model:
        raise BenchError("run of %s answered %r, expected answer %r from %s"
                         % (name, doc, answer, model))


def exec_throughput(token, slug):
    """4a: wrk POST .../run of both agents and POST /hello, one Lua script."""
    script = os.path.join(os.path.dirname(E["CONFIG"]), "run.lua")
    body = json.dumps({"query": RUN_QUERY}, separators=(",", ":"))
    with open(script, "w") as f:
        f.write("-- POST {\"query\":...} with the bench token (written by bench.sh)\n"
                "wrk.method = \"POST\"\n"
                "wrk.body = '%s'\n"
                "wrk.headers[\"Content-Type\"] = \"application/json\"\n"
                "wrk.headers[\"Authorization\"] = \"Bearer %s\"\n" % (body, token))
    fake("POST", "/_control", {})
    c = Client(token)
    got, doc, _ = c.request("POST", "/hello", {"query": RUN_QUERY})
    if got != 200 or doc != HELLO_BODY:
        raise BenchError("POST /hello answered %d %r" % (got, doc))
    for _, name, model, answer in EXEC_AGENTS:
        doc, _ = c.expect(200, "POST", run_path(slug, name), {"query": RUN_QUERY})
        check_run(doc, name, model, answer)
    c.close()
    base = "http://127.0.0.1:%d" % PORT
    targets = [("hello-world POST /hello", base + "/hello", PIDS["hello"], 200, script)]
    targets += [(label, base + run_path(slug, name), PIDS["daemon"], 200, script)
                for label, name, _, _ in EXEC_AGENTS]
    # the echo run again, authenticated by X-API-Key instead of the JWT
    secret, kscript = api_key_script(token, slug, "run-by-key",
                                     "wrk.method = \"POST\"\nwrk.body = '%s'\n"
                                     "wrk.headers[\"Content-Type\"] = \"application/json\"\n"
                                     % body)
    path = run_path(slug, EXEC_AGENTS[0][1])
    if check_api_key(secret, "POST", path, {"query": RUN_QUERY}) != 200:
        raise BenchError("POST %s with an API key did not answer 200" % path)
    targets.append(("run echo, X-API-Key", base + path, PIDS["daemon"], 200,
                    kscript))
    runs = measure(targets, token)
    fake("DELETE", "/_requests")       # the fake keeps every request: let it go
    return targets, runs


def print_exec_throughput(targets, runs):
    ratio = print_throughput(targets, runs, fake=True,
                             title="4a. Runs with the fake provider answering at once, "
                                   "through one lighttpd")
    print("  Every target is sent the same POST with the body {\"query\":\"%s\"} by one wrk Lua"
          % RUN_QUERY)
    print("  script (fcgi_hello ignores the body); each run starts a new session, so each one")
    print("  also writes memory, usage and the run log (storage.sync: %s, run_flush_ms: %s)."
          % (E["DB_SYNC"], E["RUN_FLUSH_MS"]))
    def median_run(label):
        rs = sorted(runs[label], key=lambda r: r["rps"])
        return rs[len(rs) // 2]
    echo, hello = median_run(EXEC_AGENTS[0][0]), median_run(targets[0][0])
    if echo["cpu"]["idle"] - hello["cpu"]["idle"] >= 40.0:
        print("  '%s' left %.0f%% of a core idle (hello-world: %.0f%%): the runs wait for"
              % (EXEC_AGENTS[0][0], echo["cpu"]["idle"], hello["cpu"]["idle"]))
        if echo["flushes"] is not None and echo["flushes"] >= 0.5:
            print("  something other than the CPU: %.1f disk flushes per run (storage.sync: %s;"
                  % (echo["flushes"], E["DB_SYNC"]))
            print("  with true, every commit waits for the disk).")
        else:
            print("  something other than the CPU.")
    label = EXEC_AGENTS[1][0]
    f = median_run(label)["cpu"]["fake"]
    print("  The fake provider (tests/bench/fake_openai, C, one thread) used %.0f%% of a core in"
          % f)
    print("  '%s'; the daemon keeps one connection to it per accept thread." % label)
    return ratio


def overhead(token, slug, n):
    """4b: n runs of the echo agent over one keep-alive connection, each
    followed by GET /hello on the same connection. Returns the client
    times of both (seconds), the daemon's latency_ms, and the CPU seconds
    of the daemon and of fcgi_hello over the loop."""
    _, name, model, answer = EXEC_AGENTS[0]
    path = run_path(slug, name)
    c = Client(token)
    for _ in range(min(100, n)):                  # warm-up, not counted
        doc, _ = c.expect(200, "POST", path, {"query": RUN_QUERY})
        c.expect(200, "GET", "/hello")
    check_run(doc, name, model, answer)
    run, hello, lat = [], [], []
    d_kids, h_kids = children(PIDS["daemon"]), children(PIDS["hello"])
    d0, h0 = sum(cpu_ticks(p) for p in d_kids), sum(cpu_ticks(p) for p in h_kids)
    fl0 = disk_flushes()
    for _ in range(n):
        doc, dt = c.expect(200, "POST", path, {"query": RUN_QUERY})
        if doc.get("answer") != answer:
            check_run(doc, name, model, answer)
        run.append(dt)
        lat.append(doc.get("latency_ms"))
        doc, dt = c.expect(200, "GET", "/hello")
        hello.append(dt)
    d1, h1 = sum(cpu_ticks(p) for p in d_kids), sum(cpu_ticks(p) for p in h_kids)
    fl1 = disk_flushes()
    c.close()
    flushes = None if fl0 is None or fl1 is None else (fl1 - fl0) / float(n)
    return run, hello, lat, (d1 - d0) / HZ, (h1 - h0) / HZ, flushes


def print_overhead(run, hello, lat, d_cpu, h_cpu, flushes):
    n = len(run)
    print("4b. Pipeline overhead per run (one keep-alive client; %d runs of the echo agent, each"
          % n)
    print("    followed by GET /hello on the same connection; storage.sync: %s)" % E["DB_SYNC"])
    print()
    hdr = "%-36s %8s %8s %8s %8s %8s" % ("measure", "n", "p50 ms", "p90 ms", "p99 ms", "max ms")
    print(hdr)
    print("-" * len(hdr))
    rm = [x * 1000.0 for x in run]
    hm = [x * 1000.0 for x in hello]
    for label, ms in (("POST run, echo agent (client)", rm), ("GET /hello (client)", hm)):
        print("%-36s %8d %8.3f %8.3f %8.3f %8.3f"
              % (label, len(ms), pct(ms, 50), pct(ms, 90), pct(ms, 99), max(ms)))
    print("%-36s %8s %8.3f %8.3f %8s %8s"
          % ("difference: the pipeline's overhead", "", pct(rm, 50) - pct(hm, 50),
             pct(rm, 90) - pct(hm, 90), "", ""))
    good = [x for x in lat if isinstance(x, (int, float))]
    if good:
        print("%-36s %8d %8d %8d %8d %8d"
              % ("daemon latency_ms (1 ms resolution)", len(good), pct(good, 50), pct(good, 90),
                 pct(good, 99), max(good)))
    print()
    print("  The difference of the p50s is the daemon's own work per run beyond a FastCGI")
    print("  hello-world answer (the run body, a bigger answer, the whole pipeline and its")
    print("  database writes); the client's own time cancels out.")
    print("  CPU (user+sys, all threads) over the loop: daemon workers %.0f us per run,"
          % (1e6 * d_cpu / n))
    print("  fcgi_hello %.0f us per GET /hello (clock-tick resolution: %.0f us over %d requests)."
          % (1e6 * h_cpu / n, 1e6 / HZ / n, n))
    if flushes is not None:
        print("  Disk flush requests completed per run (the whole machine): %.2f." % flushes)
    return pct(rm, 50) - pct(hm, 50)


def status_int(path, key):
    return kib_fields(path, (key,))[key]


def reload_default():
    """Rewrite the config without server.workers, server.threads and
    storage.run_flush_ms and reload the daemon (SIGHUP): the supervisor
    replaces every worker with one started from the defaults. Returns the
    new workers' pids and their thread counts."""
    return reload(lambda ls: [l for l in ls
                              if not re.match(r"\s+(workers|threads|run_flush_ms):", l)],
                  DEFAULT_WORKERS)


def reload_run_flush(ms):
    """Reload with storage.run_flush_ms set to ms."""
    return reload(lambda ls: [re.sub(r"^(\s+run_flush_ms:).*", r"\1 %d" % ms, l) for l in ls],
                  int(E["WORKERS"]))


def reload(edit, nworkers):
    """Rewrite the config through edit(lines) and reload the daemon
    (SIGHUP); wait until nworkers new workers serve."""
    with open(E["CONFIG"]) as f:
        lines = f.readlines()
    with open(E["CONFIG"], "w") as f:
        f.writelines(edit(lines))
    old = set(children(PIDS["daemon"]))
    os.kill(PIDS["daemon"], signal.SIGHUP)
    deadline = time.monotonic() + 30.0
    last = None
    while time.monotonic() < deadline:
        if not alive(PIDS["daemon"]):
            raise BenchError("the daemon exited on SIGHUP")
        kids = children(PIDS["daemon"])
        if len(kids) == nworkers and not old & set(kids):
            threads = [status_int("/proc/%d/status" % p, "Threads") for p in kids]
            if threads == last:
                c = Client()
                got, _, _ = c.request("GET", "/api/v1/health")
                c.close()
                if got == 200:
                    return kids, threads
            last = threads
        time.sleep(0.1)
    raise BenchError("the workers were not replaced within 30 s of SIGHUP")


def tcp_counts(port):
    """(server-side ESTABLISHED, client-side ESTABLISHED, client-side
    SYN_SENT) IPv4 sockets of the fake's port."""
    srv = cli = syn = 0
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                lport = int(parts[1].rsplit(":", 1)[1], 16)
                rport = int(parts[2].rsplit(":", 1)[1], 16)
                st = parts[3]
                if lport == port and st == "01":
                    srv += 1
                elif rport == port and st == "01":
                    cli += 1
                elif rport == port and st == "02":
                    syn += 1
    except OSError:
        pass
    return srv, cli, syn


def listen_drops():
    """TcpExt ListenOverflows + ListenDrops of the whole machine."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    for head, vals in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            d = dict(zip(head.split()[1:], vals.split()[1:]))
            return int(d.get("ListenOverflows", 0)) + int(d.get("ListenDrops", 0))
    return 0


def daemon_memory(pids):
    """(VmRSS, Pss) in KiB summed over pids."""
    rss = pss = 0
    for p in pids:
        rss += status_int("/proc/%d/status" % p, "VmRSS")
        pss += kib_fields("/proc/%d/smaps_rollup" % p, ("Pss",))["Pss"]
    return rss, pss


def burst(token, slug, nconc, dpids):
    """4c: nconc runs, one per thread and connection, released together by a
    barrier while the fake answers after SLOW_MS. Samples memory, the fake's
    threads and the TCP connections to it every 50 ms."""
    name, model = SLOW_AGENT
    path = run_path(slug, name)
    barrier = threading.Barrier(nconc + 1)
    results = [None] * nconc
    sent = [0.0] * nconc

    def one(i):
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
        body = json.dumps({"query": "%s %d" % (RUN_QUERY, i)})
        hdrs = {"Content-Type": "application/json", "Authorization": "Bearer " + token}
        try:
            conn.connect()
        except OSError as e:
            results[i] = (0, ("connect: %s" % e).encode(), 0.0)
            barrier.abort()
            return
        try:
            barrier.wait(timeout=60)
            conn.request("POST", path, body=body, headers=hdrs)
            sent[i] = time.perf_counter()
            resp = conn.getresponse()
            results[i] = (resp.status, resp.read(), time.perf_counter())
        except Exception as e:           # recorded as a wrong answer
            results[i] = (0, repr(e).encode(), time.perf_counter())
        finally:
            conn.close()

    peak = {"rss": 0, "pss": 0, "fake_threads": 0, "srv": 0, "cli": 0, "syn": 0}
    stop = threading.Event()
    fake_threads0 = status_int("/proc/%d/status" % FAKE_PID, "Threads")

    def sample():
        while not stop.is_set():
            rss, pss = daemon_memory(dpids)
            srv, cli, syn = tcp_counts(FAKE_PORT)
            ft = status_int("/proc/%d/status" % FAKE_PID, "Threads") - fake_threads0
            for k, v in (("rss", rss), ("pss", pss), ("fake_threads", ft), ("srv", srv),
                         ("cli", cli), ("syn", syn)):
                peak[k] = max(peak[k], v)
            stop.wait(0.05)

    old_stack = threading.stack_size(256 * 1024)
    workers = [threading.Thread(target=one, args=(i,)) for i in range(nconc)]
    for t in workers:
        t.start()
    threading.stack_size(old_stack)
    sampler = threading.Thread(target=sample)
    cpu_pids = {"daemon": [PIDS["daemon"]] + dpids, "fake": [FAKE_PID],
                "lighttpd": [PIDS["lighttpd"]]}
    try:
        barrier.wait(timeout=60)
    except threading.BrokenBarrierError:
        for t in workers:
            t.join()
        bad = [r for r in results if r and r[0] == 0]
        raise BenchError("could not open %d client connections: %s"
                         % (nconc, bad[0][1].decode() if bad else "barrier broken"))
    t0 = time.perf_counter()
    drops0 = listen_drops()
    cpu0 = {k: sum(cpu_ticks(p) for p in v) for k, v in cpu_pids.items()}
    sampler.start()
    for t in workers:
        t.join()
    wall = time.perf_counter() - t0
    cpu1 = {k: sum(cpu_ticks(p) for p in v) for k, v in cpu_pids.items()}
    drops = listen_drops() - drops0
    stop.set()
    sampler.join()
    ok, wrong, times, lat = 0, [], [], []
    for i, (status, raw, t1) in enumerate(results):
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("latency_ms"), (int, float)):
            lat.append(doc["latency_ms"])
        want = "fake answer to: %s %d" % (RUN_QUERY, i)
        if status == 200 and isinstance(doc, dict) and doc.get("answer") == want \
           and doc.get("model") == model:
            ok += 1
        else:
            wrong.append("%d %s" % (status, raw[:160].decode("utf-8", "replace")))
        if t1:
            times.append(t1 - t0)
    cpu = {k: 100.0 * (cpu1[k] - cpu0[k]) / HZ / wall for k in cpu_pids}
    return {"n": nconc, "ok": ok, "wrong": wrong, "wall": wall, "times": times,
            "sent": max(sent) - t0, "peak": peak, "cpu": cpu, "drops": drops, "lat": lat}


def concurrency(token, slug):
    kids, threads = reload_default()
    time.sleep(0.5)
    dpids = [PIDS["daemon"]] + kids
    idle = daemon_memory(dpids)
    fake("POST", "/_control", {"mode": "slow", "delay_ms": SLOW_MS})
    out = []
    try:
        for nconc in [int(x) for x in E["CONCURRENCY"].split()]:
            out.append(burst(token, slug, nconc, kids))
            time.sleep(0.5)
    finally:
        fake("POST", "/_control", {})
    fake("DELETE", "/_requests")
    return kids, threads, idle, out


def print_concurrency(kids, threads, idle, out):
    print("4c. Concurrent runs with the fake provider answering after %d ms (server.workers and"
          % SLOW_MS)
    print("    server.threads not set: the defaults; reloaded by SIGHUP: %d workers with %s threads"
          % (len(kids), "/".join(str(t) for t in threads)))
    print("    each, all threads of the process counted)")
    print()
    hdr = ("%6s %6s %6s %7s %7s %7s %7s %7s %7s %7s   %7s %7s %7s %6s   %6s %7s %7s"
           % ("runs", "ok", "wrong", "sent s", "wall s", "p50 s", "max s", ">1.5 s",
              "d p50 s", "d max s",
              "fakethr", "estab", "synsent", "lstdrp", "%fake", "%daemon", "%lighty"))
    print(hdr)
    print("-" * len(hdr))
    for r in out:
        ts = r["times"] or [0.0]
        p = r["peak"]
        lat = r["lat"] or [float("nan")]
        print("%6d %6d %6d %7.2f %7.2f %7.2f %7.2f %7d %7.2f %7.2f   %7d %7d %7d %6d   "
              "%6.0f %7.0f %7.0f"
              % (r["n"], r["ok"], len(r["wrong"]), r["sent"], r["wall"], pct(ts, 50), max(ts),
                 sum(1 for t in ts if t > 1.5 * SLOW_MS / 1000.0),
                 pct(lat, 50) / 1000.0, max(lat) / 1000.0,
                 p["fake_threads"], p["srv"], p["syn"], r["drops"],
                 r["cpu"]["fake"], r["cpu"]["daemon"], r["cpu"]["lighttpd"]))
    print()
    print("  ok: 200 with this thread's own answer (\"fake answer to: %s <i>\") and the model;"
          % RUN_QUERY)
    print("  sent: barrier release to the last request written by this client (its threads")
    print("  share the CPUs with everything else); wall: barrier release to the last answer:")
    print("  about %.1f s if all were in flight at once, about %.1f s if some queued behind a"
          % (SLOW_MS / 1000.0, 2 * SLOW_MS / 1000.0))
    print("  full set of threads; p50/max/>1.5 s: each request's time, seen by this client;")
    print("  d p50/d max: the daemon's own latency_ms of the answers. Peaks sampled every 50 ms:")
    print("  fakethr = threads the fake had beyond idle (one per connection it serves); estab =")
    print("  connections to the fake it has accepted or holds in its listen queue; synsent =")
    print("  connects waiting for a SYN-ACK. lstdrp: the machine's TcpExt ListenOverflows +")
    print("  ListenDrops during the burst (the fake's listen queue is 1024 long, at most")
    print("  net.core.somaxconn). %fake/%daemon/%lighty: CPU in % of one core over the wall time.")
    for r in out:
        for w in r["wrong"][:3]:
            print("  WRONG (%d runs): %s" % (r["n"], w))
    print()
    hdr = "%-40s %10s %10s %14s" % ("daemon memory (supervisor + workers)", "VmRSS MiB",
                                     "Pss MiB", "Pss KiB/run")
    print(hdr)
    print("-" * len(hdr))
    print("%-40s %10.2f %10.2f %14s" % ("idle, after the reload", idle[0] / 1024.0,
                                         idle[1] / 1024.0, "-"))
    for r in out:
        p = r["peak"]
        print("%-40s %10.2f %10.2f %14.1f"
              % ("peak, %d runs waiting" % r["n"], p["rss"] / 1024.0, p["pss"] / 1024.0,
                 (p["pss"] - idle[1]) / float(r["n"])))
    print()
    print("  Pss KiB/run: (peak Pss - idle Pss) / runs: what one waiting run costs the daemon.")
    for r in out:
        p = r["peak"]
        if r["cpu"]["fake"] >= 70.0:
            print("  %d runs: the fake provider used %.0f%% of a core: near its one-core (GIL)"
                  " ceiling." % (r["n"], r["cpu"]["fake"]))
        limited = []
        if r["drops"]:
            limited.append("%d listen-queue drops (SYN retried after 1 s)" % r["drops"])
        if p["fake_threads"] < r["n"] and max(r["times"] or [0]) > 1.5 * SLOW_MS / 1000.0:
            limited.append("at most %d requests served at once" % p["fake_threads"])
        if limited:
            print("  %d runs: THE FAKE PROVIDER LIMITED CONCURRENCY, not the daemon:" % r["n"])
            for x in limited:
                print("    %s;" % x)
            print("    the slow answers' own latency_ms (d max) includes that wait.")
        elif p["fake_threads"] >= r["n"] or p["srv"] >= r["n"]:
            print("  %d runs: all %d reached the fake at once; it did not limit concurrency."
                  % (r["n"], r["n"]))


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
    sys.stdout.flush()

    rtoken, rslug = exec_setup()
    etargets, eruns = exec_throughput(rtoken, rslug)
    eratio = print_exec_throughput(etargets, eruns)
    print()
    sys.stdout.flush()
    ov = overhead(rtoken, rslug, int(E["RUNS"]))
    overhead_p50 = print_overhead(*ov)
    print()
    sys.stdout.flush()
    strict = None
    if E["DB_SYNC"] == "true" and E["RUN_FLUSH_MS"] != "0":
        reload_run_flush(0)
        strict_targets = etargets[:2]
        sruns = measure(strict_targets, rtoken)
        strict = print_throughput(strict_targets, sruns, fake=True,
                                  title="4a'. The echo runs again, every run fsynced before its "
                                        "answer (storage.run_flush_ms: 0, reloaded by SIGHUP)")
        print("  With run_flush_ms: %s (4a) a run's memory turn, count and log line are written"
              % E["RUN_FLUSH_MS"])
        print("  to the log before the answer (they outlive any process) and fsynced within that")
        print("  many ms by a flusher thread; with 0 each run also waits for its fsync.")
        print()
        sys.stdout.flush()
    conc = concurrency(rtoken, rslug)
    print_concurrency(*conc)
    print()
    sys.stdout.flush()
    import bench_stream
    sc = Client(rtoken)
    st = bench_stream.run(PORT, int(E["RELAY_PORT"]), E["STREAM_SOCKET"], rtoken, rslug, sc,
                          memory, PIDS["daemon"], lambda p: children(p, skip=()),
                          n_idle=int(E.get("STREAM_IDLE") or 2000))
    sc.close()
    print()

    def worst(tag, key):
        return max(m[key] for label, m in rows if tag in label) / 1024.0
    get = ratio[targets[1][0]]
    lst = ratio[targets[2][0]]
    print("Summary (issue 2 and issue 3 targets; figures from this run)")
    print()
    hdr = "%-40s %16s %12s" % ("figure", "measured", "target")
    print(hdr)
    print("-" * len(hdr))
    print("%-40s %15.1f%% %12s" % ("GET one agent req/s vs hello-world", 100.0 * get, ">= 70%"))
    print("%-40s %15.1f%% %12s" % ("GET agent list req/s vs hello-world", 100.0 * lst, "-"))
    print("%-40s %13.2f ms %12s" % ("first deploy p50", 1000.0 * pct(t["first deploy"], 50), "< 5 ms"))
    print("%-40s %13.2f ms %12s" % ("redeploy p50", 1000.0 * pct(t["redeploy"], 50), "< 5 ms"))
    for q in (50, 99):
        for what in ("first deploy", "redeploy", "rollback"):
            print("%-40s %13.2f ms %12s" % ("%s p%d" % (what, q), 1000.0 * pct(t[what], q),
                                            "< half of first" if what != "first deploy" else "-"))
    for tag, what in (("after wrk", "after the wrk runs"), ("after deploys", "after the deploys")):
        print("%-40s %12.2f MiB %12s" % ("idle worker VmRSS, %s" % what, worst(tag, "VmRSS"), "< 8 MiB"))
        print("%-40s %12.2f MiB %12s" % ("idle worker Pss, %s" % what, worst(tag, "Pss"), "-"))
    for label, _, _, _ in EXEC_AGENTS:
        print("%-40s %15.1f%% %12s" % ("%s req/s vs hello" % label, 100.0 * eratio[label],
                                       ">= 40%"))
    if strict is not None:
        label = EXEC_AGENTS[0][0]
        print("%-40s %15.1f%% %12s" % ("%s, run_flush_ms: 0" % label, 100.0 * strict[label], "-"))
    print("%-40s %13.3f ms %12s" % ("pipeline overhead per run, p50", overhead_p50, "< 1 ms"))
    for r in conc[3]:
        print("%-40s %16s %12s" % ("runs in flight, fake answering in %.0f s" % (SLOW_MS / 1000.0),
                                   "%d/%d ok %.2fs" % (r["ok"], r["n"], r["wall"]),
                                   ">= 200 ok"))
        print("%-40s %12.2f MiB %12s" % ("  daemon VmRSS at peak, %d runs" % r["n"],
                                         r["peak"]["rss"] / 1024.0, "-"))
        print("%-40s %12.2f MiB %12s" % ("  daemon Pss at peak, %d runs" % r["n"],
                                         r["peak"]["pss"] / 1024.0, "-"))
    print("%-40s %13.3f ms %12s" % ("stream relay p50 (direct fake p50)", st["ws_p50"],
                                    "%.3f ms" % st["direct_p50"]))
    print("%-40s %13.3f ms %12s" % ("stream relay p50 overhead", st["ws_p50"] - st["direct_p50"],
                                    "< 0.5 ms"))
    print("%-40s %13.3f ms %12s" % ("stream relay p99", st["ws_p99"], "-"))
    print("%-40s %13.3f ms %12s" % ("  with %d idle streams open" % st["n_idle"],
                                    st["busy_p99"], "-"))
    print("%-40s %12.2f KiB %12s" % ("memory per idle stream (Pss)", st["per_pss_kib"],
                                     "< 16 KiB"))
    print("%-40s %12.2f KiB %12s" % ("memory per idle stream (VmRSS)", st["per_rss_kib"], "-"))
    print()
    print("  Idle worker rows: the largest of the %s workers is shown. A deploy writes the"
          % E["WORKERS"])
    print("  agent's YAML into a registry slot; the worker that wrote it keeps those shm pages")
    print("  mapped (RssShm), which is why VmRSS grows with deploys while Pss, which shares")
    print("  them out, grows less. Run rows: see 4a, 4a', 4b and 4c.")


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
