"""test_bad_input - every class of bad input a client can send gets the SPEC
error envelope with the right status, and none of it makes a worker crash or
answer 500: after each test the daemon still answers /health with the very
same worker processes it had before the first one."""

import json

from harness import InstanceTestCase, assert_error, assert_json, main

MIB = 1024 * 1024
GOOD = {"name": "good-bot", "step1": {"model": "echo/echo-1"},
        "step2": {"system_prompt": "Hello.", "tone": "casual"}}


class BadInputTest(InstanceTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.token, cls.slug = cls.inst.user("bad@example.com")
        cls.agents = "/api/v1/orgs/%s/agents" % cls.slug
        cls.inst.wait_workers()
        cls.workers = cls.inst.worker_pids()
        status, _, body = cls.inst.request("POST", cls.agents, dict(GOOD, name="target"),
                                           token=cls.token)
        if status != 201:
            raise AssertionError("creating the target agent: %s %r" % (status, body))

    def tearDown(self):
        # no input may kill or restart a worker, or stop the daemon answering
        try:
            self.inst.health()
            self.assertEqual(self.inst.worker_pids(), self.workers,
                             "a worker was restarted during this test")
            self.assertIsNone(self.inst.daemon.poll(), "the daemon exited")
        finally:
            super().tearDown()

    # helpers ---------------------------------------------------------------
    def post(self, raw=None, body=None, headers=None, path=None):
        return self.inst.request("POST", path or self.agents, body, raw=raw,
                                 headers=headers, token=self.token)

    def put(self, raw=None, body=None, headers=None, name="target"):
        return self.inst.request("PUT", "%s/%s" % (self.agents, name), body, raw=raw,
                                 headers=headers, token=self.token)

    def assert_not_created(self, name):
        assert_error(self, self.inst.request("GET", "%s/%s" % (self.agents, name),
                                             token=self.token), 404, "agent_not_found")

    def assert_target_unchanged(self):
        got = assert_json(self, self.inst.request("GET", self.agents + "/target",
                                                  token=self.token), 200)
        self.assertEqual(got["wizard_config"], dict(GOOD, name="target"))

    # malformed JSON ----------------------------------------------------------
    def test_malformed_json(self):
        for raw in ('{"name": "x",', '{name: "x"}', "{'name': 'x'}", "nul", "{]",
                    '{"name":"x"} trailing', '{"name":"x"}}', '{"name" "x"}',
                    '{"name":"x",}', '"unterminated', "\x00"):
            with self.subTest(raw=raw):
                assert_error(self, self.post(raw), 400, "invalid_json")
                assert_error(self, self.put(raw), 400, "invalid_json")
        self.assert_target_unchanged()

    def test_empty_body(self):
        assert_error(self, self.post(b""), 400, ("invalid_json", "bad_request"))
        assert_error(self, self.put(b""), 400, ("invalid_json", "bad_request"))
        assert_error(self, self.inst.request("POST", "/api/v1/auth/dev/login", raw=b""), 400,
                     ("invalid_json", "bad_request"))
        assert_error(self, self.post(b"   \n"), 400, ("invalid_json", "bad_request"))

    # wrong types and values -------------------------------------------------
    def test_wrong_types(self):
        cases = [
            ({"name": 123}, "name"),
            ({"name": None}, "name"),
            ({"name": "t1", "display_name": ["x"]}, "display_name"),
            ({"name": "t1", "step1": "echo/echo-1"}, "step1"),
            ({"name": "t1", "step1": {"model": 5}}, "step1.model"),
            ({"name": "t1", "step1": {"model": "nope/x"}}, "step1.model"),
            ({"name": "t1", "step1": {"model": "echo"}}, "step1.model"),
            ({"name": "t1", "step1": {"routing_strategy": "fastest"}}, "step1.routing_strategy"),
            ({"name": "t1", "step2": {"tone": "angry"}}, "step2.tone"),
            ({"name": "t1", "step2": {"system_prompt": 42}}, "step2.system_prompt"),
            ({"name": "t1", "step3": {"tools": "calculator"}}, "step3.tools"),
            ({"name": "t1", "step4": {"memory_type": "eternal"}}, "step4.memory_type"),
            ({"name": "t1", "step4": {"window_size": 0}}, "step4.window_size"),
            ({"name": "t1", "step4": {"window_size": 101}}, "step4.window_size"),
            ({"name": "t1", "step4": {"window_size": "20"}}, "step4.window_size"),
            ({"name": "t1", "step5": {"max_tokens": "1000"}}, "step5.max_tokens"),
            ({"name": "t1", "step5": {"max_tokens": 0}}, "step5.max_tokens"),
            ({"name": "t1", "step5": {"max_tokens": 32769}}, "step5.max_tokens"),
            ({"name": "t1", "step5": {"max_tokens": 12.5}}, "step5.max_tokens"),
            ({"name": "t1", "step5": {"max_tokens": True}}, "step5.max_tokens"),
            ({"name": "t1", "step5": {"orchestration": "chaos"}}, "step5.orchestration"),
        ]
        for body, field in cases:
            with self.subTest(body=body):
                assert_error(self, self.post(body=body), 422, "validation_error", fields=[field])
                patch = {k: v for k, v in body.items() if k != "name"}
                if patch:
                    assert_error(self, self.put(body=patch), 422, "validation_error",
                                 fields=[field])
        self.assert_not_created("t1")
        self.assert_target_unchanged()
        # a bad tool name is reported against the tools list
        body = assert_error(self, self.post(body={"name": "t1", "step3": {"tools": ["rm-rf"]}}),
                            422, "validation_error")
        self.assertTrue(any(d["field"].startswith("step3.tools") for d in body["details"]), body)

    def test_several_problems_are_all_listed(self):
        body = assert_error(self, self.post(body={
            "name": "t2", "step1": {"model": 1}, "step2": {"tone": "angry"},
            "step5": {"max_tokens": -1}}), 422, "validation_error",
            fields=["step1.model", "step2.tone", "step5.max_tokens"])
        self.assertGreaterEqual(len(body["details"]), 3)

    def test_top_level_not_an_object(self):
        for raw in ("[]", '[{"name":"x"}]', '"support-bot"', "42", "null", "true"):
            with self.subTest(raw=raw):
                assert_error(self, self.post(raw), 422, "validation_error")
                assert_error(self, self.put(raw), 422, "validation_error")
        self.assert_target_unchanged()

    # unknown fields ------------------------------------------------------------
    def test_unknown_fields(self):
        cases = [({"name": "u1", "bogus": 1}, "bogus"),
                 ({"name": "u1", "step9": {}}, "step9"),
                 ({"name": "u1", "step2": {"system_prompt": "a", "colour": "red"}},
                  "step2.colour"),
                 ({"name": "u1", "step1": {"model": "echo/echo-1", "temperature": 0.2}},
                  "step1.temperature"),
                 ({"name": "u1", "step5": {"max_tokens": 5, "Max_Tokens": 5}},
                  "step5.Max_Tokens")]
        for body, field in cases:
            with self.subTest(body=body):
                assert_error(self, self.post(body=body), 422, "validation_error", fields=[field])
                patch = {k: v for k, v in body.items() if k != "name"}
                assert_error(self, self.put(body=patch), 422, "validation_error", fields=[field])
        self.assert_not_created("u1")
        self.assert_target_unchanged()
        resp = self.inst.request("POST", "/api/v1/auth/dev/login",
                                 {"email": "x@example.com", "name": "X", "admin": True})
        assert_error(self, resp, 422, "validation_error", fields=["admin"])

    def test_login_bad_bodies(self):
        for body, field in (({}, "email"), ({"name": "x"}, "email"),
                            ({"email": 123, "name": "x"}, "email"),
                            ({"email": "not-an-email", "name": "x"}, "email"),
                            ({"email": "", "name": "x"}, "email")):
            with self.subTest(body=body):
                assert_error(self, self.inst.request("POST", "/api/v1/auth/dev/login", body),
                             422, "validation_error", fields=[field])
        assert_error(self, self.inst.request("POST", "/api/v1/auth/dev/login", raw="{"), 400,
                     "invalid_json")

    # names --------------------------------------------------------------------
    def test_bad_names(self):
        for name in ("a" * 64, "a__b", "__", "Bot", "UPPER", "-bot", "bot-", "", "with space",
                     "sl/ash", "dot.ted", "caf\u00e9", "under_score", "a" * 1000):
            with self.subTest(name=name):
                assert_error(self, self.post(body=dict(GOOD, name=name)), 422,
                             "validation_error", fields=["name"])
        body = dict(GOOD)
        del body["name"]
        assert_error(self, self.post(body=body), 422, "validation_error", fields=["name"])

    def test_longest_and_shortest_names_are_fine(self):
        for name in ("b" * 63, "x", "a-b", "9"):
            with self.subTest(name=name):
                got = assert_json(self, self.post(body=dict(GOOD, name=name)), 201)
                self.assertEqual(got["name"], name)
                status = self.inst.request("DELETE", "%s/%s" % (self.agents, name),
                                           token=self.token)[0]
                self.assertEqual(status, 204)

    def test_rename_by_put_is_rejected(self):
        assert_error(self, self.put(body={"name": "renamed"}), 422, "validation_error",
                     fields=["name"])
        self.assert_target_unchanged()

    # size -----------------------------------------------------------------------
    def big(self, size, name="big"):
        """A valid WizardConfig serialised to exactly size bytes."""
        head = '{"name":"%s","display_name":"' % name
        tail = '"}'
        return (head + "x" * (size - len(head) - len(tail)) + tail).encode()

    def test_body_over_one_mib(self):
        for size in (MIB + 1, 2 * MIB, 4 * MIB):
            with self.subTest(size=size):
                raw = self.big(size)
                self.assertEqual(len(raw), size)
                assert_error(self, self.post(raw), 413, "payload_too_large")
                assert_error(self, self.put(raw), 413, "payload_too_large")
        self.assert_not_created("big")
        self.assert_target_unchanged()

    def test_body_of_exactly_one_mib_is_not_too_large(self):
        status, _, body = self.post(self.big(MIB, "big-exact"))
        self.assertNotEqual(status, 413, body)
        self.assertLess(status, 500, body)
        if status != 201:
            assert_error(self, (status, {"content-type": "application/json"}, body), status)
        self.inst.request("DELETE", self.agents + "/big-exact", token=self.token)

    # content type --------------------------------------------------------------
    def test_wrong_content_type(self):
        raw = json.dumps(dict(GOOD, name="ct")).encode()
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                      "application/xml", "application/jsonp", None):
            with self.subTest(ctype=ctype):
                assert_error(self, self.post(raw, headers={"Content-Type": ctype}), 415,
                             "unsupported_media_type")
                assert_error(self, self.put(b'{"display_name":"x"}',
                                            headers={"Content-Type": ctype}), 415,
                             "unsupported_media_type")
        self.assert_not_created("ct")
        self.assert_target_unchanged()
        # parameters on the right type are fine
        got = assert_json(self, self.post(raw, headers={
            "Content-Type": "application/json; charset=utf-8"}), 201)
        self.assertEqual(got["name"], "ct")
        self.assertEqual(self.inst.request("DELETE", self.agents + "/ct", token=self.token)[0], 204)

    # methods and routes ----------------------------------------------------------
    def test_wrong_method(self):
        a = self.agents
        for method, path in (("PATCH", a + "/target"), ("DELETE", a), ("PUT", a),
                             ("PATCH", a), ("GET", a + "/target/deploy"),
                             ("DELETE", a + "/target/deploy"), ("GET", a + "/target/pause"),
                             ("POST", a + "/target/yaml"), ("PUT", a + "/target/yaml"),
                             ("POST", "/api/v1/health"), ("DELETE", "/api/v1/health"),
                             ("GET", "/api/v1/auth/dev/login"), ("DELETE", "/api/v1/orgs/me"),
                             ("POST", a + "/target")):
            with self.subTest(method=method, path=path):
                resp = self.inst.request(method, path, token=self.token, raw=(
                    b"{}" if method in ("POST", "PUT", "PATCH") else None))
                assert_error(self, resp, 405, "method_not_allowed")
        self.assert_target_unchanged()

    def test_unknown_route(self):
        a = self.agents
        for path in ("/api/v1/nope", "/api/v1/", "/api/v1/orgs/me/x", a + "X", a + "/target/deploy/now", a + "/target/run/extra/x",
                     "/api/v1/orgs/%s/agents/target/yaml/x" % self.slug, "/api/v1/health/x",
                     "/api/v1/auth/dev", "/api/v1/auth/dev/login/x"):
            with self.subTest(path=path):
                assert_error(self, self.inst.request("GET", path, token=self.token), 404,
                             ("not_found", "agent_not_found"))

    # hostile JSON ----------------------------------------------------------------
    def test_huge_numbers(self):
        for raw in ('{"name":"h1","step5":{"max_tokens":99999999999999999999999999999}}',
                    '{"name":"h1","step5":{"max_tokens":-99999999999999999999999999999}}',
                    '{"name":"h1","step4":{"window_size":1e400}}',
                    '{"name":"h1","step5":{"max_tokens":1e308}}',
                    '{"name":"h1","step4":{"window_size":-1e400}}'):
            with self.subTest(raw=raw):
                body = assert_error(self, self.post(raw), (400, 422),
                                    ("invalid_json", "validation_error"))
                if body["error"] == "validation_error":
                    self.assertTrue(body["details"], body)
        for value in (2 ** 63, -(2 ** 63) - 1, 2 ** 64, 2 ** 31, -(2 ** 31) - 1):
            with self.subTest(max_tokens=value):
                raw = '{"name":"h2","step5":{"max_tokens":%d}}' % value
                assert_error(self, self.post(raw), 422, "validation_error",
                             fields=["step5.max_tokens"])
        self.assert_not_created("h1")
        self.assert_not_created("h2")

    def test_deeply_nested_json(self):
        depth = 10000
        for raw in ("[" * depth + "]" * depth,
                    '{"a":' * depth + "1" + "}" * depth,
                    '{"name":"deep","step3":{"tool_configs":' + '{"a":' * depth + "1"
                    + "}" * depth + "}}",
                    "[" * depth):
            with self.subTest(raw=raw[:30]):
                assert_error(self, self.post(raw), (400, 422),
                             ("invalid_json", "validation_error"))
                assert_error(self, self.put(raw), (400, 422),
                             ("invalid_json", "validation_error"))
        self.assert_not_created("deep")
        self.assert_target_unchanged()

    def test_invalid_utf8(self):
        for bad in (b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80"):
            with self.subTest(bytes=bad):
                raw = b'{"name":"utf","display_name":"a' + bad + b'b"}'
                # the one string policy (lib/utf8.c, test_strings.py): 400 naming the field
                for resp in (self.post(raw), self.put(b'{"display_name":"a' + bad + b'b"}')):
                    body = assert_error(self, resp, 400, "bad_request")
                    self.assertIn("'display_name'", body["message"])
        self.assert_not_created("utf")
        self.assert_target_unchanged()
        # valid UTF-8 round-trips
        got = assert_json(self, self.post(body={"name": "utf-ok", "display_name": "Caf\u00e9 \u2603"}), 201)
        self.assertEqual(got["display_name"], "Caf\u00e9 \u2603")
        self.assertEqual(self.inst.request("DELETE", self.agents + "/utf-ok",
                                           token=self.token)[0], 204)

    def test_nul_bytes(self):
        # a raw NUL inside a string or after the document is not JSON
        for raw in (b'{"name":"n\x00ul"}', b'{"name":"nul"}\x00', b'{"name":"nul"}\x00garbage',
                    b'\x00{"name":"nul"}'):
            with self.subTest(raw=raw):
                assert_error(self, self.post(raw), 400, "invalid_json")
        self.assert_not_created("nul")
        self.assert_not_created("n")
        # an escaped NUL in a name is refused (the one string policy's 400), never cut
        body = assert_error(self, self.post(b'{"name":"ab\\u0000cd"}'), 400, "bad_request")
        self.assertIn("'name'", body["message"])
        self.assert_not_created("ab")
        # in free text it is refused or kept exactly, never cut
        status, _, body = self.post(b'{"name":"nul-text","display_name":"a\\u0000b"}')
        if status == 201:
            got = assert_json(self, self.inst.request("GET", self.agents + "/nul-text",
                                                      token=self.token), 200)
            self.assertEqual(got["display_name"], "a\u0000b")
            self.inst.request("DELETE", self.agents + "/nul-text", token=self.token)
        else:
            assert_error(self, (status, {"content-type": "application/json"}, body), (400, 422))

    def test_zzz_daemon_survived_everything(self):
        """Runs last: the same workers, still healthy, state intact."""
        h = self.inst.health()
        self.assertEqual(h["status"], "ok")
        self.assertEqual(h["db"], "ok")
        self.assertEqual(self.inst.worker_pids(), self.workers)
        self.assert_target_unchanged()
        for name in ("x", "t1", "u1", "big", "deep", "utf", "nul", "ab", "h1", "h2", "ct"):
            self.assert_not_created(name)


if __name__ == "__main__":
    main()
