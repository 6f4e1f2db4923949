"""test_metrics - GET /api/v1/metrics (issue 11, SPEC section 8): the
Prometheus text format, served to loopback clients or with metrics.token
(403 in the envelope otherwise), and every metric moving when its event
happens: a request, an error status, a provider call and its latency, a
provider failure and the breaker it opens, a run in flight (busy thread,
quota hold), a killed worker's restart, a deploy's registry entry, the
database cache."""

import os
import re
import signal
import threading

from fakeprov import FakeProvider, provider_config
from harness import (BUILDDIR, FcgiConnection, InstanceTestCase, assert_error, assert_json,
                     main, merge_config, poll)

TOKEN = "metrics-token-0123456789abcdef"
AGENT = "/api/v1/orgs/{slug}/agents/{name}"
SAMPLE = re.compile(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, ((label, value), ...)): float} of every sample; checks that
    each line is a comment or a well-formed sample."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = SAMPLE.match(line)
        if m is None:
            raise AssertionError("not a Prometheus sample: %r" % line)
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples, name, **labels):
    """The sum of name's samples whose labels include labels (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


class MetricsTest(InstanceTestCase):
    shared_instance = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = FakeProvider(log_dir=os.path.join(BUILDDIR, "tests", "tmp"))
        cls.fake.start()
        cls.addClassCleanup(cls.fake.stop)

    def setUp(self):
        self.fake.reset()
        config = merge_config({"providers": provider_config(self.fake)},
                              {"metrics": {"token": TOKEN},
                               "runtime": {"breaker_failures": 1}})
        self.inst = self.new_instance(config)
        self.tok, self.slug = self.inst.user(self.unique_email("metrics"))
        self.base = "/api/v1/orgs/%s/agents" % self.slug

    def scrape(self):
        status, headers, body = self.inst.request("GET", "/api/v1/metrics")
        self.assertEqual(status, 200, body)
        self.assertEqual(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        return parse(body)

    def fcgi(self, remote_addr, authorization=None):
        conn = FcgiConnection(self.inst.socket)
        try:
            headers = {"Authorization": authorization} if authorization else {}
            conn.begin("GET", "/api/v1/metrics", headers, env={"REMOTE_ADDR": remote_addr})
            conn.send_body(b"", last=True)
            return conn.response()
        finally:
            conn.close()

    def agent(self, name, model):
        wc = {"name": name, "step1": {"model": model}, "step2": {"system_prompt": "M."}}
        assert_json(self, self.inst.request("POST", self.base, wc, token=self.tok), 201)
        assert_json(self, self.inst.request("POST", self.base + "/%s/deploy" % name,
                                            token=self.tok), 200)

    def run_agent(self, name, query="how many?"):
        return self.inst.request("POST", self.base + "/%s/run" % name, {"query": query},
                                 token=self.tok)

    def test_only_loopback_or_the_token(self):
        status, headers, body = self.fcgi("127.0.0.1")
        self.assertEqual(status, 200)
        self.assertIn(b"astromesh_requests_total", body)
        for addr in ("10.1.2.3", "192.168.0.7", "2001:db8::1", "", "127"):
            for auth in (None, "Bearer wrong-token", "Bearer " + TOKEN + "x", TOKEN,
                         "Bearer " + TOKEN[:-1], "Basic " + TOKEN):
                with self.subTest(addr=addr, auth=auth):
                    status, headers, body = self.fcgi(addr, auth)
                    self.assertEqual(status, 403, body)
                    self.assertEqual(headers["content-type"], "application/json; charset=utf-8")
                    self.assertIn(b'"error":"forbidden"', body)
        status, _, body = self.fcgi("10.1.2.3", "Bearer " + TOKEN)
        self.assertEqual(status, 200, body)
        status, _, body = self.fcgi("::1")
        self.assertEqual(status, 200, body)

    def test_requests_and_errors_count_by_route_and_status(self):
        before = self.scrape()
        self.inst.health()
        self.inst.health()
        assert_error(self, self.inst.request("GET", self.base + "/ghost", token=self.tok), 404)
        assert_error(self, self.inst.request("GET", "/api/v1/no/such/thing"), 404)
        after = self.scrape()
        health = dict(method="GET", route="/api/v1/health")
        self.assertEqual(value(after, "astromesh_requests_total", status="200", **health)
                         - value(before, "astromesh_requests_total", status="200", **health), 2)
        ghost = dict(method="GET", route=AGENT, status="404")
        self.assertEqual(value(after, "astromesh_requests_total", **ghost)
                         - value(before, "astromesh_requests_total", **ghost), 1)
        unmatched = dict(route="-", status="404")
        self.assertEqual(value(after, "astromesh_requests_total", **unmatched)
                         - value(before, "astromesh_requests_total", **unmatched), 1)
        hist = dict(method="GET", route="/api/v1/health")
        self.assertEqual(value(after, "astromesh_request_duration_seconds_count", **hist)
                         - value(before, "astromesh_request_duration_seconds_count", **hist), 2)
        self.assertGreater(value(after, "astromesh_request_duration_seconds_bucket", le="+Inf",
                                 **hist), 0)

    def test_deploy_is_a_registry_entry_and_provider_calls_are_timed(self):
        before = self.scrape()
        self.assertEqual(value(before, "astromesh_registry_capacity"), 4096)
        self.agent("timed", "openai/gpt-4o-mini")
        self.fake.control(delay_ms=120)
        status, _, body = self.run_agent("timed")
        self.assertEqual(status, 200, body)
        after = self.scrape()
        self.assertEqual(value(after, "astromesh_registry_entries")
                         - value(before, "astromesh_registry_entries"), 1)
        p = dict(provider="openai")
        self.assertEqual(value(after, "astromesh_provider_call_duration_seconds_count", **p), 1)
        self.assertGreaterEqual(value(after, "astromesh_provider_call_duration_seconds_sum", **p),
                                0.1)
        self.assertEqual(value(after, "astromesh_provider_call_duration_seconds_bucket",
                               le="0.1", **p), 0)
        self.assertEqual(value(after, "astromesh_provider_errors_total", **p), 0)
        self.assertGreater(value(after, "astromesh_db_cache_hits_total"),
                           value(before, "astromesh_db_cache_hits_total"))
        self.assertIn(("astromesh_db_deadlocks_total", ()), after)
        ratio = value(after, "astromesh_db_cache_hit_ratio")
        self.assertTrue(0 < ratio <= 1, ratio)

    def test_a_provider_failure_counts_and_opens_the_breaker(self):
        self.agent("failing", "anthropic/claude-3-haiku")
        self.fake.control(per_model={"claude-3-haiku": {"mode": "fail", "status": 500}})
        status, _, body = self.run_agent("failing")
        self.assertEqual(status, 502, body)
        after = self.scrape()
        p = dict(provider="anthropic")
        self.assertEqual(value(after, "astromesh_provider_errors_total", **p), 1)
        # the org's breaker of that model, shared by the workers: open
        self.assertEqual(value(after, "astromesh_breaker_open", model="claude-3-haiku", **p), 1)
        self.assertEqual(value(after, "astromesh_breaker_open", provider="openai"), 0)

    def test_a_run_in_flight_holds_a_thread_and_a_quota_hold(self):
        self.agent("slow", "openai/gpt-4o-mini")
        self.fake.control(delay_ms=3000)
        idle0 = value(self.scrape(), "astromesh_worker_threads", state="idle")
        self.assertEqual(idle0, 2 * 8 - 1)    # the scrape itself is busy
        t = threading.Thread(target=self.run_agent, args=("slow",))
        t.start()
        try:
            run_route = dict(route=AGENT + "/run")
            # the handler starts (in flight), then the run takes its hold
            s = poll(lambda: (lambda s: s if value(s, "astromesh_requests_in_flight",
                                                   **run_route) == 1 and
                              value(s, "astromesh_quota_holds") == 1 else None)(self.scrape()),
                     10, what="a run in flight with its quota hold")
            # this scrape and the run: two busy threads
            self.assertEqual(value(s, "astromesh_worker_threads", state="busy"), 2)
            self.assertEqual(value(s, "astromesh_worker_threads", state="idle"), 2 * 8 - 2)
        finally:
            t.join(30)
        s = self.scrape()
        self.assertEqual(value(s, "astromesh_requests_in_flight", route=AGENT + "/run"), 0)
        self.assertEqual(value(s, "astromesh_quota_holds"), 0)
        self.assertEqual(value(s, "astromesh_worker_threads", state="busy"), 1)

    def test_a_stream_query_is_in_flight_then_counted(self):
        self.agent("streamed", "openai/gpt-4o-mini")
        self.fake.control(delay_ms=2000)
        row = dict(method="WS", route=AGENT + "/stream")
        ws = self.inst.ws_connect(self.slug, "streamed", token=self.tok)
        try:
            ws.send_json({"query": "stream me"})
            poll(lambda: value(self.scrape(), "astromesh_requests_in_flight", **row) == 1, 10,
                 what="the stream query in flight")
            while True:
                ev = ws.recv_json(timeout=15)
                if ev.get("type") in ("done", "error"):
                    break
            self.assertEqual(ev["type"], "done", ev)
        finally:
            ws.close()
        s = poll(lambda: (lambda s: s if value(s, "astromesh_requests_total", status="200",
                                               **row) == 1 else None)(self.scrape()),
                 10, what="the stream query counted")
        self.assertEqual(value(s, "astromesh_requests_in_flight", **row), 0)
        self.assertEqual(value(s, "astromesh_provider_call_duration_seconds_count",
                               provider="openai"), 1)

    def test_a_killed_worker_is_a_restart(self):
        s = self.scrape()
        self.assertEqual(value(s, "astromesh_worker_restarts_total"), 0)
        workers = self.inst.worker_pids()
        os.kill(workers[0], signal.SIGKILL)
        self.inst.wait_workers(exclude=[workers[0]])
        s = poll(lambda: (lambda s: s if value(s, "astromesh_worker_restarts_total") == 1
                          else None)(self.scrape()), 10, what="the restart counted")
        pids = {dict(ls)["pid"] for (n, ls), _ in s.items() if n == "astromesh_worker_threads"}
        self.assertNotIn(str(workers[0]), pids)
        poll(lambda: len({dict(ls)["pid"] for (n, ls), _ in self.scrape().items()
                          if n == "astromesh_worker_threads"}) == 2, 10,
             what="both workers' threads shown")


class MetricsApacheTest(InstanceTestCase):
    """Apache passes the client's address as REMOTE_ADDR too."""
    front = "apache"

    def test_loopback_through_apache(self):
        status, headers, body = self.inst.request("GET", "/api/v1/metrics")
        self.assertEqual(status, 200, body)
        self.assertEqual(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        self.assertGreaterEqual(value(parse(body), "astromesh_requests_total",
                                      route="/api/v1/health", status="200"), 1)


if __name__ == "__main__":
    main()
