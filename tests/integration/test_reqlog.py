"""test_reqlog - the daemon's line per answered request (issue 11): method,
route pattern (never the raw path), status, latency, org, agent, request id
(the client's X-Request-Id when well-formed, echoed back) and a run's trace
id; never a token, an API key, a provider key, the query string or a query's
text; off with log.requests: false. Through lighttpd and through Apache,
and for the WebSocket stream: a line per query (method WS) and one per
session at its close (method GET, status 101)."""

import re

from harness import InstanceTestCase, assert_json, main, poll

WC = {"name": "log-bot", "step1": {"model": "echo/echo-1"},
      "step2": {"system_prompt": "Logs."}}
AGENT = "/api/v1/orgs/{slug}/agents/{name}"
LINE = re.compile(r"request (method=\S+ route=\S+ status=\S+ latency_ms=\S+ org=\S+ "
                  r"agent=\S+ request_id=\S+ trace_id=\S+) \(")


def request_lines(inst):
    """Every request line of the daemon log, as dicts of its fields."""
    out = []
    for m in LINE.finditer(inst.read_log(inst.daemon_log, limit=10 ** 8)):
        out.append(dict(kv.split("=", 1) for kv in m.group(1).split(" ")))
    return out


class RequestLogTest(InstanceTestCase):

    def line_of(self, request_id, timeout=10):
        """The request line carrying request_id (waits for it)."""
        found = []

        def seen():
            found[:] = [d for d in request_lines(self.inst) if d["request_id"] == request_id]
            return found
        poll(seen, timeout, what="the request line of %s" % request_id)
        self.assertEqual(len(found), 1, found)
        return found[0]

    def setUp(self):
        self.tok, self.slug = self.inst.user(self.unique_email("reqlog"))
        self.base = "/api/v1/orgs/%s/agents" % self.slug

    def test_a_run_is_one_line_with_route_org_agent_and_trace(self):
        assert_json(self, self.inst.request("POST", self.base, WC, token=self.tok), 201)
        assert_json(self, self.inst.request("POST", self.base + "/log-bot/deploy",
                                            token=self.tok), 200)
        query = "the private question about invoice 4471-XQ"
        status, headers, body = self.inst.request(
            "POST", self.base + "/log-bot/run", {"query": query}, token=self.tok)
        self.assertEqual(status, 200, body)
        rid = headers.get("x-request-id")
        self.assertRegex(rid or "", r"^[0-9a-f]{16}$")
        line = self.line_of(rid)
        self.assertEqual(line["method"], "POST")
        self.assertEqual(line["route"], AGENT + "/run")
        self.assertEqual(line["status"], "200")
        self.assertEqual(line["org"], self.slug)
        self.assertEqual(line["agent"], "log-bot")
        self.assertEqual(line["trace_id"], body["trace_id"])
        self.assertGreaterEqual(float(line["latency_ms"]), 0.0)
        log = self.inst.read_log(self.inst.daemon_log, limit=10 ** 8)
        self.assertNotIn(query, log)
        self.assertNotIn("4471-XQ", log)
        self.assertNotIn(self.tok, log)

    def test_errors_have_their_line_and_status(self):
        cases = [
            ("GET", self.base + "/nobody", None, self.tok, 404, AGENT, self.slug, "nobody"),
            ("GET", self.base, None, "not-a-token", 401, "/api/v1/orgs/{slug}/agents",
             self.slug, "-"),
            ("DELETE", "/api/v1/orgs/me", None, self.tok, 405, "-", "-", "-"),
            ("POST", self.base + "/x/run", {"query": "q"}, self.tok, 404, AGENT + "/run",
             self.slug, "x"),
            ("POST", self.base + "/x/run", None, self.tok, 415, AGENT + "/run", self.slug, "x"),
        ]
        for method, path, body, tok, want, route, org, agent in cases:
            with self.subTest(method=method, path=path):
                status, headers, _ = self.inst.request(method, path, body, token=tok)
                self.assertEqual(status, want)
                line = self.line_of(headers["x-request-id"])
                self.assertEqual((line["method"], line["route"], line["status"], line["org"],
                                  line["agent"]), (method, route, str(want), org, agent))

    def test_never_the_raw_path_query_string_or_a_key(self):
        status, headers, body = self.inst.request(
            "POST", "/api/v1/orgs/%s/keys" % self.slug, {"name": "k", "scopes": ["run"]},
            token=self.tok)
        self.assertEqual(status, 201, body)
        key = body["secret"]
        status, headers, _ = self.inst.request(
            "GET", self.base + "?token=hunter2secret", headers={"X-API-Key": key})
        self.assertEqual(status, 200)
        self.line_of(headers["x-request-id"])
        status, headers, _ = self.inst.request("GET", "/api/v1/unknownpathsegment-zz9")
        self.assertEqual(status, 404)
        line = self.line_of(headers["x-request-id"])
        self.assertEqual(line["route"], "-")
        log = self.inst.read_log(self.inst.daemon_log, limit=10 ** 8)
        for needle in (key, "hunter2secret", "unknownpathsegment-zz9", self.tok):
            self.assertNotIn(needle, log)

    def test_a_clients_request_id_is_kept_and_a_bad_one_replaced(self):
        status, headers, _ = self.inst.request("GET", "/api/v1/health",
                                               headers={"X-Request-Id": "abc-123.x:y_z"})
        self.assertEqual(status, 200)
        self.assertEqual(headers["x-request-id"], "abc-123.x:y_z")
        self.assertEqual(self.line_of("abc-123.x:y_z")["route"], "/api/v1/health")
        for bad in ("has space", "x" * 65, "semi;colon", "quote\"d"):
            with self.subTest(bad=bad):
                status, headers, _ = self.inst.request("GET", "/api/v1/health",
                                                       headers={"X-Request-Id": bad})
                self.assertEqual(status, 200)
                self.assertRegex(headers["x-request-id"], r"^[0-9a-f]{16}$")
                self.line_of(headers["x-request-id"])
        log = self.inst.read_log(self.inst.daemon_log, limit=10 ** 8)
        self.assertNotIn("semi;colon", log)


    def test_a_stream_query_and_its_session_have_their_lines(self):
        assert_json(self, self.inst.request("POST", self.base, WC, token=self.tok), 201)
        assert_json(self, self.inst.request("POST", self.base + "/log-bot/deploy",
                                            token=self.tok), 200)
        query = "streamed secret question 9931-QZ"
        ws = self.inst.ws_connect(self.slug, "log-bot", token=self.tok)
        try:
            ws.send_json({"query": query})
            while True:
                ev = ws.recv_json(timeout=10)
                if ev.get("type") in ("done", "error"):
                    break
            self.assertEqual(ev["type"], "done", ev)
        finally:
            ws.close()
        route = AGENT + "/stream"

        def lines():
            got = [d for d in request_lines(self.inst)
                   if d["route"] == route and d["org"] == self.slug]
            return got if len(got) >= 2 else None
        got = poll(lines, 10, what="the stream's request lines")
        q = [d for d in got if d["method"] == "WS"]
        self.assertEqual(len(q), 1, got)
        self.assertEqual((q[0]["status"], q[0]["agent"], q[0]["trace_id"]),
                         ("200", "log-bot", ev["trace_id"]))
        session = [d for d in got if d["method"] == "GET"]
        self.assertEqual([d["status"] for d in session], ["101"])
        log = self.inst.read_log(self.inst.daemon_log, limit=10 ** 8)
        self.assertNotIn("9931-QZ", log)


class RequestLogApacheTest(RequestLogTest):
    front = "apache"


class RequestLogOffTest(InstanceTestCase):
    config = {"log": {"requests": False}}

    def test_no_request_line_when_off(self):
        for _ in range(3):
            self.inst.health()
        status, headers, _ = self.inst.request("GET", "/api/v1/nosuch")
        self.assertEqual(status, 404)
        self.assertTrue(headers.get("x-request-id"))
        self.assertEqual(request_lines(self.inst), [])


if __name__ == "__main__":
    main()
