"""test_replication_ops - operating a replication group (issue 16): the
replication metrics of GET /api/v1/metrics on a loopback group of three
hosts (three daemons, each behind its own front server, Replication
Manager sites on 127.0.0.1), and their absence without a group.

What a user sees: exactly one master; its metrics say role="master" and
is_master 1, the replicas' role="replica" and is_master 0; the master has
won an election; a write sent to a replica is answered by the
master through it and counted as forwarded there (not on the master); with
ack_policy all and a replica gone, a write is answered 503
replication_unavailable and counted as not acknowledged on the master.
And a replica stopped for longer than the master keeps its log comes back
by itself: Berkeley DB copies it the whole databases."""

import os
import secrets
import signal
import sys
import tempfile
import time
import unittest

from harness import (BUILDDIR, Instance, assert_error, assert_json, free_port, group_in_step,
                     main, poll, outcome_failed)
from test_metrics import parse, value

NAMES = ("astromesh_replication_role", "astromesh_replication_is_master",
         "astromesh_replication_elections_total", "astromesh_replication_lag_bytes",
         "astromesh_replication_forwarded_total",
         "astromesh_replication_not_acknowledged_total")


def make_group(add_cleanup, n=3, replication=None, name="rep", config=None,
               failed=lambda: False):
    """n Instances (not started; config merged over the harness's) forming
    one group on loopback: the same jwt_secret, master key and cluster
    secret, sites 127.0.0.1:<free port>, each listing the others with its
    front server's URL. add_cleanup(fn) is called with each one's stop
    (failed() says whether to keep and print its logs). Also used by
    tests/bench/bench_cluster.py."""
    tmproot = os.path.join(BUILDDIR, "tests", "tmp")
    os.makedirs(tmproot, exist_ok=True)
    shared = tempfile.mkdtemp(prefix=name + "-group-", dir=tmproot)
    secret_file = os.path.join(shared, "cluster.secret")
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, (secrets.token_hex(24) + "\n").encode())
    os.close(fd)
    jwt_secret = secrets.token_hex(24)
    master_key = secrets.token_bytes(32)
    insts = [Instance(config, name="%s%d" % (name, i + 1)) for i in range(n)]
    sites = ["127.0.0.1:%d" % free_port() for _ in insts]
    for i, inst in enumerate(insts):
        add_cleanup(lambda inst=inst: inst.stop(failed=failed()))
        with open(inst.master_key_file, "wb") as f:
            f.write(master_key)
        inst.jwt_secret = jwt_secret
        inst.config["auth"]["jwt_secret"] = jwt_secret
        peers = " ".join("%s=%s" % (sites[j], other.base_url)
                         for j, other in enumerate(insts) if j != i)
        rep = {"site": sites[i], "url": inst.base_url, "peers": peers,
               "secret_file": secret_file, "priority": 100 - i}
        rep.update(replication or {})
        inst.config["replication"] = rep
        inst.write_config()
    return insts


def start_group(insts, timeout=60):
    """Start every host, then wait until one is master, every other knows
    it and has copied the databases; return (master, [replicas])."""
    for inst in insts:
        inst.start_daemon()
    for inst in insts:
        if inst.front == "apache":
            inst.start_apache()
        else:
            inst.start_lighttpd()
    for inst in insts:
        inst.wait_healthy()

    def settled():
        roles = [inst.health() for inst in insts]
        masters = [i for i, h in enumerate(roles) if h.get("role") == "master"]
        if len(masters) != 1 or any(not h.get("master") for h in roles):
            return None
        if len({h["master"] for h in roles}) != 1:
            return None
        return insts[masters[0]]

    m = poll(settled, timeout, interval=0.2, what="one master that every host knows")
    replicas = [inst for inst in insts if inst is not m]

    group_in_step(m, replicas, timeout)
    return m, replicas


def scrape(tc, inst):
    status, headers, body = inst.request("GET", "/api/v1/metrics")
    tc.assertEqual(status, 200, body)
    return parse(body)


class GroupMetricsTest(unittest.TestCase):

    def test_roles_elections_forwarded_and_not_acknowledged(self):
        # ack_policy all: a commit needs every replica; with one gone the
        # master answers 503 replication_unavailable after ack_timeout_ms.
        insts = make_group(self.addCleanup, failed=lambda: outcome_failed(self),
                           replication={"ack_policy": "all", "ack_timeout_ms": 500})
        master, replicas = start_group(insts)

        m = scrape(self, master)
        self.assertEqual(value(m, "astromesh_replication_role", role="master"), 1)
        self.assertEqual(value(m, "astromesh_replication_role", role="replica"), 0)
        self.assertEqual(value(m, "astromesh_replication_role", role="none"), 0)
        self.assertEqual(value(m, "astromesh_replication_is_master"), 1)
        for r in replicas:
            s = scrape(self, r)
            self.assertEqual(value(s, "astromesh_replication_role", role="replica"), 1)
            self.assertEqual(value(s, "astromesh_replication_role", role="master"), 0)
            self.assertEqual(value(s, "astromesh_replication_is_master"), 0)
        for inst in insts:
            s = scrape(self, inst)
            for name in NAMES:
                self.assertIn(name, {n for n, _ in s}, "%s on %s" % (name, inst.base_url))
            # a host that joins after the election has taken part in none
            self.assertGreaterEqual(value(s, "astromesh_replication_elections_total"),
                                    1 if inst is master else 0)
            self.assertGreaterEqual(value(s, "astromesh_replication_lag_bytes"), 0)
            self.assertEqual(value(s, "astromesh_replication_forwarded_total"), 0)
            if inst is not master:      # only the master commits
                self.assertEqual(value(s, "astromesh_replication_not_acknowledged_total"), 0)
        # the master's own first commits (its databases, made while the
        # replicas were still joining) may have gone unacknowledged: a
        # slow machine's replica can take longer than ack_timeout_ms to join
        unacked = value(m, "astromesh_replication_not_acknowledged_total")

        # Writes sent to a replica: the master answers them through it.
        rep = replicas[0]
        tok, slug = rep.user("ops-%s@example.com" % secrets.token_hex(4))     # a write
        base = "/api/v1/orgs/%s/agents" % slug
        wc = {"name": "fwd", "step1": {"model": "echo/echo-1"},
              "step2": {"system_prompt": "E."}}
        resp = rep.request("POST", base, wc, token=tok)
        assert_json(self, resp, 201)
        headers = resp[1]
        self.assertIn("x-astromesh-commit", headers)
        s = scrape(self, rep)
        self.assertEqual(value(s, "astromesh_replication_forwarded_total"), 2)
        self.assertEqual(value(scrape(self, master), "astromesh_replication_forwarded_total"), 0)
        self.assertEqual(value(scrape(self, replicas[1]),
                               "astromesh_replication_forwarded_total"), 0)
        # A read is served where it lands: not forwarded.
        assert_json(self, rep.request("GET", base + "/fwd", token=tok,
                                      headers={"X-Astromesh-After":
                                               headers["x-astromesh-commit"]}), 200)
        self.assertEqual(value(scrape(self, rep), "astromesh_replication_forwarded_total"), 2)
        assert_error(self, rep.request("GET", base + "/fwd", token=tok,
                                       headers={"X-Astromesh-After": "not-a-token"}), 400,
                     "bad_request")

        # One replica gone: with ack_policy all no write is acknowledged.
        gone = replicas[1]
        gone.kill_daemon(signal.SIGKILL)
        wc2 = dict(wc, name="unacked")
        resp = master.request("POST", base, wc2, token=tok)
        assert_error(self, resp, 503, "replication_unavailable")
        m = scrape(self, master)
        self.assertEqual(value(m, "astromesh_replication_not_acknowledged_total"), unacked + 1)
        self.assertEqual(value(m, "astromesh_replication_forwarded_total"), 0)
        # Through the replica: forwarded, answered 503 by the master, counted there.
        resp = rep.request("POST", base, dict(wc, name="unacked2"), token=tok)
        assert_error(self, resp, 503, "replication_unavailable")
        self.assertEqual(value(scrape(self, master),
                               "astromesh_replication_not_acknowledged_total"), unacked + 2)
        s = scrape(self, rep)
        self.assertEqual(value(s, "astromesh_replication_not_acknowledged_total"), 0)
        self.assertEqual(value(s, "astromesh_replication_forwarded_total"), 3)


def log_numbers(data_dir):
    """The numbers of the Berkeley DB log files in data_dir, sorted."""
    return sorted(int(n[4:]) for n in os.listdir(data_dir)
                  if n.startswith("log.") and n[4:].isdigit())


class FarBehindTest(unittest.TestCase):

    def test_a_replica_behind_the_masters_oldest_log_catches_up_from_a_full_copy(self):
        # small log files (Berkeley DB reads DB_CONFIG in the environment's
        # home): the master's checkpoint (every 30 s) soon removes the log
        # a stopped replica would need, and only a full copy can bring it back
        insts = make_group(self.addCleanup, failed=lambda: outcome_failed(self), name="far")
        for inst in insts:
            with open(os.path.join(inst.data_dir, "DB_CONFIG"), "w") as f:
                f.write("set_lg_max 65536\n")
        master, replicas = start_group(insts)
        behind = replicas[1]
        tok, slug = master.user("far-%s@example.com" % secrets.token_hex(4))
        base = "/api/v1/orgs/%s/agents" % slug
        resp = master.request("POST", base, {"name": "before", "step1": {"model": "echo/echo-1"}},
                              token=tok)
        assert_json(self, resp, 201)
        group_in_step(master, [behind])
        behind.kill_daemon(signal.SIGTERM)
        had = log_numbers(behind.data_dir)
        self.assertTrue(had, "log files in %s" % behind.data_dir)

        # writes at the master (sign-ins: users, orgs, tokens) until its logs
        # are four files past the replica's last, then until a checkpoint
        # has removed the one the replica would need next
        signins = [0]

        def write():
            signins[0] += 1
            master.login("far-%d-%s@example.com" % (signins[0], secrets.token_hex(3)))
        for _ in range(5000):
            if log_numbers(master.data_dir)[-1] >= had[-1] + 4:
                break
            write()
        self.assertGreaterEqual(log_numbers(master.data_dir)[-1], had[-1] + 4,
                                "%d sign-ins did not fill four 64 KiB log files" % signins[0])

        def removed():
            write()
            return log_numbers(master.data_dir)[0] > had[-1] + 1
        poll(removed, 75, interval=0.5, what="the master's checkpoint to remove log file %d"
             % (had[-1] + 1))
        resp = master.request("POST", base, {"name": "after", "step1": {"model": "echo/echo-1"}},
                              token=tok)
        assert_json(self, resp, 201)
        commit = resp[1]["x-astromesh-commit"]

        # back: no operator step; the replica is copied whole and serves
        t0 = time.monotonic()
        behind.start_daemon()
        behind.wait_healthy()

        def caught_up():
            status, _, body = behind.request("GET", base + "/after", token=tok,
                                             headers={"X-Astromesh-After": commit})
            return status == 200 and body.get("name") == "after"
        poll(caught_up, 60, interval=0.5, what="%s to catch up with the master"
             % behind.base_url)
        sys.stderr.write("\nthe replica (log files %d-%d; the master's now from %d) served "
                         "the master's last write %.1f s after its start\n"
                         % (had[0], had[-1], log_numbers(master.data_dir)[0],
                            time.monotonic() - t0))
        health = behind.health()
        self.assertEqual((health.get("role"), health.get("master")),
                         ("replica", master.health().get("master")))
        # its log now starts where the master's copy did: its own old log
        # files could not have brought it there
        self.assertGreater(log_numbers(behind.data_dir)[0], had[-1],
                           "the replica's log files after the catch-up: %r (before: %r)"
                           % (log_numbers(behind.data_dir), had))
        status, _, body = behind.request("GET", base, token=tok)
        self.assertEqual(status, 200, body)
        self.assertEqual(sorted(a["name"] for a in body["agents"]), ["after", "before"])
        # and it goes on following: a write through it, read there at once
        resp = behind.request("POST", base, {"name": "later", "step1": {"model": "echo/echo-1"}},
                              token=tok)
        assert_json(self, resp, 201)
        assert_json(self, behind.request("GET", base + "/later", token=tok,
                                         headers={"X-Astromesh-After":
                                                  resp[1]["x-astromesh-commit"]}), 200)


class NoGroupTest(unittest.TestCase):

    def test_no_replication_lines_without_a_group(self):
        inst = Instance(name="norep")
        self.addCleanup(lambda: inst.stop(failed=outcome_failed(self)))
        inst.start()
        status, _, body = inst.request("GET", "/api/v1/metrics")
        self.assertEqual(status, 200, body)
        self.assertIn("astromesh_requests_total", body)
        self.assertNotIn("astromesh_replication", body)
        self.assertNotIn("role", inst.health())


if __name__ == "__main__":
    main()
