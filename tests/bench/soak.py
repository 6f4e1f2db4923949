#!/usr/bin/env python3
"""soak - a bounded soak run: a mixed load for a fixed time through the
real lighttpd against the fake provider (tests/fake_provider.py), then the
figures: throughput, p50/p99 per kind of request, errors (must be zero),
and each process's memory (VmRSS of the supervisor, every worker and the
stream process) at the start of the load (after a warm-up, 5 s) and at its
end.

usage: soak.py [--seconds N] [--threads N] [--warmup N] [--json FILE]
    (env SOAK_SECONDS, default 60; `make soak` runs it on the build tree)

The load, from --threads clients over four orgs, each with three deployed
agents on the fake provider and a draft: GET one agent (35%), list the
agents (15%), run (25%), test (5%), edit the draft's prompt (10%), read
usage (5%), read the versions (5%). Every answer must be its 2xx; anything else is an error and
makes the exit status 1. The instance is the integration harness's
(tests/integration/harness.py): its own data dir, lighttpd and master key,
removed at the end."""

import argparse
import json
import os
import random
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

from harness import BUILDDIR, Instance  # noqa: E402
from fakeprov import FakeProvider, provider_config  # noqa: E402

ORGS, AGENTS = 4, 3
MIX = [("get", 35), ("list", 15), ("run", 25), ("test", 5), ("edit", 10), ("usage", 5),
       ("versions", 5)]
WANT = {"get": 200, "list": 200, "run": 200, "test": 200, "edit": 200, "usage": 200,
        "versions": 200}


def vmrss_kib(pid):
    """(VmRSS, RssAnon) of pid in KiB: RssAnon is the process's own heap
    and stacks, where a leak grows; the rest of VmRSS is the shared
    Berkeley DB cache and registry pages it has touched."""
    got = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key = line.split(":")[0]
                if key in ("VmRSS", "RssAnon"):
                    got[key] = int(line.split()[1])
    except OSError:
        pass
    return (got.get("VmRSS"), got.get("RssAnon")) if got else None


def memory(inst):
    """{label: VmRSS KiB} of the supervisor, each worker and the stream process."""
    out = {"supervisor": vmrss_kib(inst.daemon_pid)}
    for i, pid in enumerate(sorted(inst.worker_pids())):
        out["worker %d" % (i + 1)] = vmrss_kib(pid)
    for i, pid in enumerate(sorted(inst.stream_pids())):
        out["stream" if i == 0 else "stream %d" % (i + 1)] = vmrss_kib(pid)
    return out


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


class Soak:
    def __init__(self, inst, orgs, seconds, threads):
        self.inst, self.orgs, self.seconds, self.threads = inst, orgs, seconds, threads
        self.lat = {k: [] for k, _ in MIX}
        self.errors = []
        self.lock = threading.Lock()
        self.edits = 0

    def one(self, rnd, kind):
        tok, slug, names = rnd.choice(self.orgs)
        name = "soak-draft" if kind == "edit" else rnd.choice(names)
        base = "/api/v1/orgs/%s" % slug
        agent = "%s/agents/%s" % (base, name)
        if kind == "get":
            return self.inst.request("GET", agent, token=tok)
        if kind == "list":
            return self.inst.request("GET", base + "/agents", token=tok)
        if kind in ("run", "test"):
            return self.inst.request("POST", "%s/%s" % (agent, kind),
                                     {"query": "soak %d" % rnd.randrange(1 << 30)}, token=tok)
        if kind == "edit":
            return self.inst.request("PUT", agent, {"step2": {"system_prompt": "soak prompt %d"
                                                              % rnd.randrange(1 << 30)}},
                                     token=tok)
        if kind == "usage":
            return self.inst.request("GET", base + "/usage?days=1", token=tok)
        return self.inst.request("GET", agent + "/versions", token=tok)

    def client(self, seed, deadline):
        rnd = random.Random(seed)
        kinds = [k for k, w in MIX for _ in range(w)]
        while time.monotonic() < deadline:
            kind = rnd.choice(kinds)
            t0 = time.monotonic()
            try:
                status, _, body = self.one(rnd, kind)
            except Exception as e:    # a cut connection is an error like any other
                status, body = None, repr(e)
            ms = (time.monotonic() - t0) * 1000.0
            with self.lock:
                self.lat[kind].append(ms)
                if status != WANT[kind]:
                    self.errors.append((kind, status, str(body)[:200]))

    def run(self, seconds):
        """The load for seconds; returns the time it took. Latencies start
        afresh; errors accumulate."""
        self.lat = {k: [] for k, _ in MIX}
        deadline = time.monotonic() + seconds
        ts = [threading.Thread(target=self.client, args=(i, deadline), daemon=True)
              for i in range(self.threads)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join(seconds + 120)
        return time.monotonic() - t0


def setup(inst):
    orgs = []
    for o in range(ORGS):
        tok, slug = inst.user("soak%d-%d@example.com" % (o, os.getpid()))
        names = []
        for a in range(AGENTS):
            name = "soak-%d" % a
            wc = {"name": name, "display_name": "Soak %d" % a,
                  "step1": {"model": "openai/gpt-4o-mini"},
                  "step2": {"system_prompt": "You answer briefly.", "tone": "casual"}}
            for method, path, body, want in (
                    ("POST", "/api/v1/orgs/%s/agents" % slug, wc, 201),
                    ("POST", "/api/v1/orgs/%s/agents/%s/deploy" % (slug, name), None, 200)):
                status, _, answer = inst.request(method, path, body, token=tok)
                if status != want:
                    raise SystemExit("soak: set-up %s %s: %s %r" % (method, path, status, answer))
            names.append(name)
        # the agent the edits go to: a draft (a deployed agent must be paused first)
        wc = {"name": "soak-draft", "step1": {"model": "openai/gpt-4o-mini"}}
        status, _, answer = inst.request("POST", "/api/v1/orgs/%s/agents" % slug, wc, token=tok)
        if status != 201:
            raise SystemExit("soak: set-up of the draft: %s %r" % (status, answer))
        orgs.append((tok, slug, names))
    return orgs


def report(elapsed, soak, mem0, mem1, args):
    total = sum(len(v) for v in soak.lat.values())
    alls = [x for v in soak.lat.values() for x in v]
    lines = ["soak: %.0f s, %d clients through lighttpd, fake provider" % (elapsed, args.threads),
             "  requests %d, throughput %.1f req/s, errors %d" % (total, total / elapsed,
                                                                   len(soak.errors)),
             "  %-9s %8s %9s %9s" % ("kind", "count", "p50 ms", "p99 ms")]
    for kind, _ in MIX:
        xs = soak.lat[kind]
        lines.append("  %-9s %8d %9.2f %9.2f" % (kind, len(xs), pct(xs, 0.5), pct(xs, 0.99)))
    lines.append("  %-9s %8d %9.2f %9.2f" % ("all", total, pct(alls, 0.5), pct(alls, 0.99)))
    lines.append("  %-12s %22s %22s" % ("process", "VmRSS (anon) start", "VmRSS (anon) end"))

    def kib(v):
        return "-" if v is None else "%d (%d) KiB" % v
    for label in sorted(set(mem0) | set(mem1)):
        lines.append("  %-12s %22s %22s" % (label, kib(mem0.get(label)), kib(mem1.get(label))))
    for e in soak.errors[:10]:
        lines.append("  error: %s -> %s %s" % e)
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds": elapsed, "threads": args.threads, "requests": total,
                       "throughput": total / elapsed, "errors": len(soak.errors),
                       "latency_ms": {k: {"n": len(v), "p50": pct(v, 0.5), "p99": pct(v, 0.99)}
                                      for k, v in soak.lat.items()},
                       "vmrss_kib": {"start": mem0, "end": mem1}}, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 60)))
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--warmup", type=float, default=5.0,
                    help="seconds of load before the start figures (errors count)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    fake = FakeProvider(log_dir=os.path.join(BUILDDIR, "tests", "tmp"))
    fake.start()
    inst = None
    failed = True
    try:
        inst = Instance({"providers": provider_config(fake),
                         "server": {"workers": 2, "threads": 8},
                         "limits": {"max_agents": 100, "requests_per_day": 100000000}},
                        name="soak")
        inst.start()
        soak = Soak(inst, setup(inst), args.seconds, args.threads)
        soak.run(args.warmup)         # caches, thread stacks, the first sessions
        mem0 = memory(inst)
        elapsed = soak.run(args.seconds)
        mem1 = memory(inst)
        report(elapsed, soak, mem0, mem1, args)
        failed = bool(soak.errors)
    finally:
        if inst is not None:
            inst.stop(failed=failed)
        fake.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
