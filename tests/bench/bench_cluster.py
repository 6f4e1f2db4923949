"""bench_cluster.py - the replication group's figures (issue 16), run by
`make bench` after bench.sh, or alone:

    ASTROMESH_BUILDDIR=$PWD ASTROMESH_SRCDIR=$PWD python3 tests/bench/bench_cluster.py

Everything runs on loopback, each host a harness Instance (a daemon behind
its own lighttpd, Replication Manager sites on 127.0.0.1), against the
scriptable fake provider (tests/fake_provider.py) answering after 1 s:

  1. runs per second with one host (no group: a group needs two sites),
     two and three hosts: CLUSTER_CLIENTS
     clients per host (default 24), each on its own host's front server,
     running an openai agent for CLUSTER_SECONDS (default 6) each;
  2. write latency, p50 / p99 of CLUSTER_WRITES (default 200) agent creates
     one after the other, with ack_policy none, quorum and all, at the
     master and through a replica (forwarded); beside it, the latency of a
     run of an echo agent (no provider) at the master and at a replica;
  3. failover: writers on the two surviving hosts, SIGKILL of the master's
     supervisor and every process of it, the time from the kill to the first
     acknowledged (2xx) write through a surviving host, CLUSTER_FAILOVERS
     times (default 3).

CLUSTER_PARTS (default "runs writes failover") picks the parts to run.

It is a benchmark: it prints, it never fails on a figure; it exits 1 only
when it could not measure (a host did not start, an answer was not what
the measurement needs).
"""

import contextlib
import os
import secrets
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from fakeprov import FakeProvider, provider_config              # noqa: E402
from harness import BUILDDIR, Instance, pid_alive, poll, proc_children  # noqa: E402
from test_replication_ops import make_group, start_group         # noqa: E402

CLIENTS = int(os.environ.get("CLUSTER_CLIENTS", "24"))
SECONDS = float(os.environ.get("CLUSTER_SECONDS", "6"))
WRITES = int(os.environ.get("CLUSTER_WRITES", "200"))
FAILOVERS = int(os.environ.get("CLUSTER_FAILOVERS", "3"))
PARTS = os.environ.get("CLUSTER_PARTS", "runs writes failover").split()
SLOW_MS = 1000
WC = {"step1": {"model": "openai/gpt-4o-mini"}, "step2": {"system_prompt": "Bench."}}


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))] if v else float("nan")


class Group:
    """A started group of n hosts; stop() stops every host."""

    def __init__(self, n, fake, replication=None, name="bench"):
        self.stack = contextlib.ExitStack()
        config = {"server": {"workers": 2, "threads": 32},
                  "providers": provider_config(fake, timeout_ms=30000),
                  "limits": {"requests_per_day": 100000000, "max_agents": 100000},
                  "log": {"level": "warn", "requests": False}}
        rep = {"ack_timeout_ms": 2000}
        rep.update(replication or {})
        try:
            if n == 1:      # one host is no group (a group needs another site)
                self.hosts = [Instance(config, name=name)]
                self.stack.callback(self.hosts[0].stop)
                self.master, self.replicas = self.hosts[0].start(), []
            else:
                self.hosts = make_group(self.stack.callback, n=n, replication=rep,
                                        name=name, config=config)
                self.master, self.replicas = start_group(self.hosts)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        self.stack.close()


def must(resp, status, what):
    if resp[0] != status:
        raise SystemExit("bench_cluster: %s: %s %r" % (what, resp[0], resp[2]))
    return resp


def org_with_agent(host, name="bench"):
    """(token, slug) of a fresh org holding a deployed openai agent (the
    writes go wherever host sends them)."""
    tok, slug = host.user("bench-%s@example.com" % secrets.token_hex(4))
    base = "/api/v1/orgs/%s/agents" % slug
    must(host.request("POST", base, dict(WC, name=name), token=tok), 201, "create")
    resp = must(host.request("POST", base + "/%s/deploy" % name, token=tok), 200, "deploy")
    return tok, slug, resp[1].get("x-astromesh-commit")


# ---- 1. runs per second by number of hosts -------------------------------------------

def runs_per_second(fake, n):
    g = Group(n, fake, name="runs%d" % n)
    try:
        tok, slug, commit = org_with_agent(g.master)
        path = "/api/v1/orgs/%s/agents/bench/run" % slug
        # every host serves the agent (its registry follows the master's)
        for h in g.hosts:
            poll(lambda h=h: h.request("GET", path[:-4], token=tok,
                                       headers={"X-Astromesh-After": commit})[0] == 200,
                 30, what="the agent on every host")
            poll(lambda h=h: h.registry_count() >= 1, 30, what="the agent deployed there")
        fake.control(mode="slow", delay_ms=SLOW_MS)
        ok = [0] * len(g.hosts)
        bad = {}
        lock = threading.Lock()
        start = threading.Barrier(CLIENTS * n + 1)
        stop_at = [0.0]

        def client(i, h):
            start.wait()
            while time.monotonic() < stop_at[0]:
                st, _, body = h.request("POST", path, {"query": "q"}, token=tok, timeout=60)
                with lock:
                    if st == 200:
                        ok[i] += 1
                    else:
                        key = (st, body.get("error") if isinstance(body, dict) else None)
                        bad[key] = bad.get(key, 0) + 1

        threads = [threading.Thread(target=client, args=(i, h), daemon=True)
                   for i, h in enumerate(g.hosts) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        stop_at[0] = t0 + SECONDS
        start.wait()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        fake.control({})
        return sum(ok) / wall, [k / wall for k in ok], bad
    finally:
        g.stop()


# ---- 2. write latency by acknowledgement policy ----------------------------------------

def write_latency(fake, policy):
    g = Group(3, fake, replication={"ack_policy": policy}, name="ack-" + policy)
    try:
        out = {}
        for label, host in (("master", g.master), ("replica", g.replicas[0])):
            tok, slug = host.user("lat-%s@example.com" % secrets.token_hex(4))
            base = "/api/v1/orgs/%s/agents" % slug
            lat = []
            for i in range(WRITES):
                t = time.monotonic()
                resp = host.request("POST", base, dict(WC, name="a%d" % i), token=tok)
                lat.append((time.monotonic() - t) * 1000)
                must(resp, 201, "create at the %s (ack_policy %s)" % (label, policy))
                host.request("DELETE", base + "/a%d" % i, token=tok)
            out[label] = (pct(lat, 50), pct(lat, 99))
        # a run on an echo agent (no provider), at the master and at a replica
        tok, slug = g.master.user("echo-%s@example.com" % secrets.token_hex(4))
        base = "/api/v1/orgs/%s/agents/e" % slug
        must(g.master.request("POST", base[:-2], {"name": "e", "step1": {"model": "echo/echo-1"},
                                                  "step2": {"system_prompt": "E."}}, token=tok),
             201, "create echo")
        commit = must(g.master.request("POST", base + "/deploy", token=tok), 200,
                      "deploy echo")[1].get("x-astromesh-commit")
        for label, host in (("run@master", g.master), ("run@replica", g.replicas[0])):
            poll(lambda host=host: host.request("GET", base, token=tok, headers={
                "X-Astromesh-After": commit})[0] == 200 and host.registry_count() >= 1,
                 30, what="the echo agent deployed there")
            lat = []
            for i in range(max(20, WRITES // 4)):
                t = time.monotonic()
                must(host.request("POST", base + "/run", {"query": "q"}, token=tok), 200,
                     "echo run at the " + label)
                lat.append((time.monotonic() - t) * 1000)
            out[label] = (pct(lat, 50), pct(lat, 99))
        return out
    finally:
        g.stop()


# ---- 3. failover ------------------------------------------------------------------------

def kill_host(host):
    """SIGKILL the supervisor and every process it forked (the whole
    daemon of that host; its front server stays, as a machine's would not)."""
    pids = [host.daemon_pid] + proc_children(host.daemon_pid)
    for p in pids:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    host.daemon.wait()
    poll(lambda: not any(pid_alive(p) for p in pids), 30, what="the killed host's processes")


def failover(fake):
    g = Group(3, fake, name="failover")
    try:
        old = g.master
        tok, slug = g.replicas[0].user("fo-%s@example.com" % secrets.token_hex(4))
        base = "/api/v1/orgs/%s/agents" % slug
        first_ok = [None]
        errors = {}
        samples = {}
        killed = [None]
        done = threading.Event()
        lock = threading.Lock()
        n = [0]

        def writer(host):
            while not done.is_set():
                with lock:
                    n[0] += 1
                    name = "w%d" % n[0]
                sent = time.monotonic()
                try:
                    st, _, body = host.request("POST", base, dict(WC, name=name), token=tok,
                                               timeout=30)
                except OSError:
                    st, body = "conn", None
                now = time.monotonic()
                with lock:
                    if killed[0] is None or sent < killed[0]:
                        continue        # only writes sent after the kill count
                    if st == 201 and first_ok[0] is None:
                        first_ok[0] = now
                        done.set()
                    elif st != 201:
                        key = (st, body.get("error") if isinstance(body, dict) else None,
                               body.get("message", "")[:32] if isinstance(body, dict) else "")
                        errors[key] = errors.get(key, 0) + 1
                        if st == 500 and key not in samples:
                            samples[key] = body
                if st != 201:
                    time.sleep(0.02)

        threads = [threading.Thread(target=writer, args=(h,), daemon=True)
                   for h in g.replicas for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.0)                        # the writers under way
        with lock:
            killed[0] = time.monotonic()
        kill_host(old)
        done.wait(120)
        done.set()
        for t in threads:
            t.join(60)
        if first_ok[0] is None:
            raise SystemExit("bench_cluster: no write acknowledged within 120 s of the kill")
        new = [h.health().get("master") for h in g.replicas]
        if samples:     # a 500 is a defect: say what it was and what the host logged
            print("  500 during the failover: %r" % list(samples.values()), file=sys.stderr)
            for h in g.replicas:
                for line in h.read_log(h.daemon_log).splitlines():
                    if "answered 500" in line or line.startswith(("<3>", "<4>")):
                        print("  %s: %s" % (h.base_url, line), file=sys.stderr)
        return first_ok[0] - killed[0], errors, new
    finally:
        g.stop()


def main():
    for var in ("ASTROMESH_BUILDDIR",):
        if not os.environ.get(var):
            os.environ[var] = BUILDDIR
    fake = FakeProvider(log_dir=os.path.join(BUILDDIR, "tests", "tmp"))
    fake.start()
    try:
        print("\n== 7. the replication group (tests/bench/bench_cluster.py) ==")
        print("provider answers after %d ms; %d clients per host, each on its host's lighttpd; "
              "%.0f s per figure" % (SLOW_MS, CLIENTS, SECONDS))
        base = None
        for n in ((1, 2, 3) if "runs" in PARTS else ()):
            rps, per, bad = runs_per_second(fake, n)
            base = base or rps
            print("runs/s with %d host%s: %7.1f  (%.2fx one host; per host %s)%s"
                  % (n, "" if n == 1 else "s", rps, rps / base,
                     " ".join("%.1f" % x for x in per),
                     ("  not 200: %r" % bad) if bad else ""), flush=True)
        if "writes" in PARTS:
            print("\nwrite latency, agent create, %d one after the other (ms):" % WRITES)
            print("%-12s %-22s %-22s %-22s %-22s" % (
                "ack_policy", "at the master p50/p99", "via a replica p50/p99",
                "echo run, master", "echo run, replica"))
        for policy in (("none", "quorum", "all") if "writes" in PARTS else ()):
            r = write_latency(fake, policy)
            print("%-12s" % policy + "".join(
                " %8.2f / %-11.2f" % r[k] for k in ("master", "replica", "run@master",
                                                    "run@replica")), flush=True)
        if "failover" in PARTS:
            print("\nfailover: SIGKILL of the master's daemon under a write load (4 writers on "
                  "the two other hosts); time from the kill to the first acknowledged write "
                  "sent after it:")
        times = []
        for i in range(FAILOVERS if "failover" in PARTS else 0):
            dt, errors, new = failover(fake)
            times.append(dt)
            print("  %d: %.2f s, new master %s; answers meanwhile:" % (i + 1, dt, new[0]))
            for (st, code, msg), count in sorted(errors.items(), key=str):
                print("       %4d x %s %s (%s...)" % (count, st, code, msg), flush=True)
        if times:
            print("  min %.2f s, max %.2f s" % (min(times), max(times)))
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
