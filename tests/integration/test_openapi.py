"""test_openapi - docs/openapi.json against the server that serves it.

  - the route table (`astromesh-cloudd -R`) and the document name the same
    routes (method and path pattern), with the same access (x-access and
    security), and the WebSocket route, which the stream process serves
    outside that table, is marked as such and answers through the front;
  - the document is sound: every $ref resolves, every schema is a valid
    Draft 2020-12 schema, the error code enum is error.c's table exactly;
  - GET /api/v1/openapi.json through lighttpd and through Apache is the
    file, byte for byte, public, with an ETag;
  - the answer checker of harness.py (which every integration test runs on
    every answer it records) refuses what the document does not describe,
    and an SSE answer's events and the WebSocket's events validate against
    the document.
"""

import json
import os
import re
import subprocess

import jsonschema

from harness import (DAEMON, OPENAPI_DOC, SRCDIR, InstanceTestCase, assert_json, main,
                     openapi)

METHODS = ("get", "put", "post", "delete", "patch")


# -R's access columns (access, least role, key scope) -> the document's x-access.
ACCESS = {
    ("public", "-", "never"): "public",
    ("user", "-", "never"): "user",
    ("org", "member", "never"): "member",
    ("org", "admin", "never"): "admin",
    ("org", "member", "run"): "member, or an API key with scope run",
    ("org", "member", "manage"): "member, or an API key with scope manage",
}


def load_doc():
    with open(OPENAPI_DOC, encoding="utf-8") as f:
        return json.load(f)


def daemon_routes():
    """{(METHOD, pattern): (access, role, scope)} from astromesh-cloudd -R."""
    out = subprocess.run([DAEMON, "-R"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    return {tuple(f[:2]): tuple(f[2:5]) for f in (l.split("\t") for l in out.splitlines() if l)}


def documented(doc):
    """{(METHOD, path): operation} of the document."""
    return {(m.upper(), p): op for p, item in doc["paths"].items()
            for m, op in item.items() if m in METHODS}


def error_table():
    """The error names of src/lib/error.c's table, in order, once each."""
    names = []
    with open(os.path.join(SRCDIR, "src", "lib", "error.c"), encoding="utf-8") as f:
        for m in re.finditer(r'\{ AM_E\w+, \d+, "(\w+)" \}', f.read()):
            if m.group(1) not in names:
                names.append(m.group(1))
    return names


class TestDocumentAndRouteTable(InstanceTestCase):
    shared_instance = False

    def test_every_served_route_is_documented_and_every_documented_route_served(self):
        doc, served = load_doc(), daemon_routes()
        ops = documented(doc)
        http_ops = {k for k, op in ops.items() if not op.get("x-websocket")}
        self.assertEqual(sorted(set(served) - http_ops), [],
                         "served (astromesh-cloudd -R) but not in docs/openapi.json")
        self.assertEqual(sorted(http_ops - set(served)), [],
                         "in docs/openapi.json but not served")

    def test_each_operation_says_who_may_call_it_as_the_route_table_does(self):
        ops = documented(load_doc())
        for key, cols in sorted(daemon_routes().items()):
            op = ops.get(key)
            if op is None:
                continue        # the test above reports it
            with self.subTest(route=key):
                self.assertEqual(op.get("x-access"), ACCESS[cols])
                schemes = {s for req in op["security"] for s in req}
                if cols[0] == "public":     # no credentials, or an optional one of its own
                    self.assertTrue(op["security"] == [] or {} in op["security"])
                    self.assertFalse(schemes & {"bearerAuth", "apiKeyAuth"})
                else:
                    self.assertIn("bearerAuth", schemes)
                    self.assertEqual("apiKeyAuth" in schemes, cols[2] != "never")
                statuses = set(op["responses"])
                if cols[0] != "public":
                    self.assertIn("401", statuses)
                if cols[0] == "org":
                    self.assertIn("403", statuses)

    def test_the_websocket_route_is_marked_and_served_by_the_stream_process(self):
        ops = documented(load_doc())
        ws = {k: op for k, op in ops.items() if op.get("x-websocket")}
        self.assertEqual(list(ws), [("GET", "/api/v1/orgs/{slug}/agents/{name}/stream")])
        op = ws[("GET", "/api/v1/orgs/{slug}/agents/{name}/stream")]
        self.assertIn("101", op["responses"])
        self.assertNotIn(("GET", "/api/v1/orgs/{slug}/agents/{name}/stream"), daemon_routes())
        inst = self.new_instance()
        token, slug = inst.user(self.unique_email("ws"))
        # a plain GET, no upgrade: the stream process's envelope, not the front's 404
        status, headers, body = inst.request(
            "GET", "/api/v1/orgs/%s/agents/none/stream" % slug, token=token)
        # (the FastCGI daemon would say not_found, "No such route")
        self.assertEqual((status, body["error"]), (404, "agent_not_found"), body)

    def test_the_document_is_sound(self):
        doc = load_doc()
        self.assertEqual(doc["openapi"], "3.1.0")
        seen_ids = set()

        def walk(node, where):
            if isinstance(node, dict):
                if "$ref" in node:
                    target = doc
                    for part in node["$ref"][2:].split("/"):
                        self.assertIn(part, target, "%s: $ref %s" % (where, node["$ref"]))
                        target = target[part]
                for k, v in node.items():
                    walk(v, where + "/" + k)
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, "%s/%d" % (where, i))
        walk(doc, "#")
        for name, schema in doc["components"]["schemas"].items():
            with self.subTest(schema=name):
                jsonschema.Draft202012Validator.check_schema(schema)
        for (method, path), op in documented(doc).items():
            with self.subTest(route=(method, path)):
                self.assertNotIn(op["operationId"], seen_ids)
                seen_ids.add(op["operationId"])
                params = [openapi().resolve(p) for p in op.get("parameters", [])]
                names = {p["name"] for p in params if p["in"] == "path"}
                self.assertEqual(names, set(re.findall(r"\{(\w+)\}", path)))
                self.assertTrue(op["responses"])

    def test_the_error_enum_is_the_table_of_error_c(self):
        schemas = load_doc()["components"]["schemas"]
        self.assertEqual(sorted(schemas["ErrorCode"]["enum"]), sorted(error_table()))
        # the front server's own codes (etc/lighttpd/errors/, Apache's ErrorDocument) are
        # not the daemon's
        self.assertFalse(set(schemas["FrontErrorCode"]["enum"]) & set(error_table()))


class TestChecker(InstanceTestCase):
    """The checker every integration test runs on its answers can fail."""
    shared_instance = False
    JSON = {"content-type": "application/json; charset=utf-8"}

    def check(self, method, path, status, body, headers=None):
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        return openapi().check(method, path, status, headers or self.JSON, payload)

    def test_a_described_answer_passes(self):
        self.assertIsNone(self.check("GET", "/api/v1/health", 200, {
            "status": "ok", "version": "1", "registry": {"agents": 0}, "db": "ok"}))
        self.assertIsNone(self.check("GET", "/api/v1/orgs/acme/agents/x", 404, {
            "error": "agent_not_found", "message": "No", "status": 404}))

    def test_what_the_document_does_not_describe_is_refused(self):
        env = {"error": "not_found", "message": "No", "status": 404}
        cases = {
            "missing field": ("GET", "/api/v1/health", 200, {"status": "ok"}),
            "unlisted status": ("GET", "/api/v1/health", 418, env),
            "extra envelope field": ("GET", "/api/v1/orgs/a/agents/x", 404,
                                     dict(env, trace="x")),
            "unknown error code": ("GET", "/api/v1/orgs/a/agents/x", 404,
                                   dict(env, error="oops")),
            "status field differs": ("GET", "/api/v1/orgs/a/agents/x", 404,
                                     dict(env, status=400)),
            "undocumented method": ("PUT", "/api/v1/health", 200, {}),
            "bad timestamp": ("GET", "/api/v1/orgs/a/agents", 200, {"agents": [{
                "name": "x", "display_name": "x", "status": "draft", "model": None,
                "version": None, "draft_changed": True, "created_at": "yesterday",
                "updated_at": "2026-01-01T00:00:00Z", "deployed_at": None}]}),
            "a 500 of the API server": ("GET", "/api/v1/orgs/a/agents/x", 500,
                                        {"error": "agent_not_found", "message": "No",
                                         "status": 500}),
        }
        for why, (method, path, status, body) in cases.items():
            with self.subTest(case=why):
                self.assertIsNotNone(self.check(method, path, status, body))
        answer = {"answer": "a", "session_id": "s", "tokens_used": 1, "model": "echo/echo-1",
                  "latency_ms": 0, "trace_id": "t", "version": 1}
        rate = {"x-ratelimit-limit": "1", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"}
        run = "/api/v1/orgs/a/agents/x/run"
        self.assertIsNone(self.check("POST", run, 200, answer, dict(self.JSON, **rate)))
        self.assertIsNotNone(self.check("POST", run, 200, answer, self.JSON),
                             "run without its X-RateLimit headers")
        self.assertIsNotNone(self.check("DELETE", "/api/v1/orgs/a/agents/x", 204, b"{}", {}),
                             "a body on a 204")
        self.assertIsNotNone(self.check(
            "POST", "/api/v1/orgs/a/agents/x/run", 200,
            b'event: token\ndata: {"type":"token","text":"hi"}\n\n',
            {"content-type": "text/event-stream", "x-ratelimit-limit": "1",
             "x-ratelimit-remaining": "1", "x-ratelimit-reset": "1"}), "a bad SSE event")


class TestServed(InstanceTestCase):
    front = "lighttpd"

    def test_the_served_document_is_the_file(self):
        with open(OPENAPI_DOC, "rb") as f:
            want = f.read()
        status, headers, body = self.inst.request("GET", "/api/v1/openapi.json")
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("content-type"), "application/json; charset=utf-8")
        self.assertEqual(json.dumps(body, sort_keys=True),
                         json.dumps(json.loads(want), sort_keys=True))
        self.assertRegex(headers.get("etag", ""), r'^"[0-9]+-%d"$' % len(want))
        # byte for byte
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.inst.port, timeout=30)
        try:
            conn.request("GET", "/api/v1/openapi.json")
            self.assertEqual(conn.getresponse().read(), want)
        finally:
            conn.close()

    def test_an_sse_answer_is_described_by_the_document(self):
        token, slug = self.inst.user(self.unique_email("sse"))
        base = "/api/v1/orgs/%s/agents" % slug
        assert_json(self, self.inst.request("POST", base, {
            "name": "doc-sse", "step1": {"model": "echo/echo-1"},
            "step2": {"system_prompt": "You are a test agent."}}, token=token), 201)
        assert_json(self, self.inst.request("POST", base + "/doc-sse/deploy", token=token), 200)
        status, headers, text = self.inst.request(
            "POST", base + "/doc-sse/run", {"query": "hello there"}, token=token,
            headers={"Accept": "text/event-stream"})
        self.assertEqual(status, 200, text)
        self.assertTrue(headers["content-type"].startswith("text/event-stream"))
        self.assertIn('"type":"done"', text.replace(" ", ""))
        self.assertIsNone(openapi().check("POST", base + "/doc-sse/run", status, headers,
                                          text.encode()))


    def test_websocket_events_are_described_by_the_document(self):
        token, slug = self.inst.user(self.unique_email("ws"))
        base = "/api/v1/orgs/%s/agents" % slug
        assert_json(self, self.inst.request("POST", base, {
            "name": "doc-ws", "step1": {"model": "echo/echo-1"},
            "step2": {"system_prompt": "You are a test agent."}}, token=token), 201)
        assert_json(self, self.inst.request("POST", base + "/doc-ws/deploy", token=token), 200)
        doc = openapi()
        stream = doc.doc["paths"]["/api/v1/orgs/{slug}/agents/{name}/stream"]["get"]
        schema = stream["responses"]["101"]["content"]["application/json"]["schema"]
        ws = self.inst.ws_connect(slug, "doc-ws", token=token)
        try:
            tokens, done = ws.query("hello over the socket")
            self.assertTrue(tokens)
            self.assertEqual(done["type"], "done", done)
            for ev in tokens + [done]:
                self.assertIsNone(doc.schema_error(("ws",), schema, ev), ev)
            ws.send_text("not json")           # an error event
            error = ws.recv_json(timeout=30)
            self.assertEqual(error["type"], "error", error)
            self.assertIsNone(doc.schema_error(("ws",), schema, error), error)
            # and the schema can say no
            self.assertIsNotNone(doc.schema_error(("ws",), schema, dict(done, extra=1)))
        finally:
            ws.close()


class TestServedApache(TestServed):
    front = "apache"
    test_an_sse_answer_is_described_by_the_document = None
    test_websocket_events_are_described_by_the_document = None


if __name__ == "__main__":
    main()
