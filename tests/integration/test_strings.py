#!/usr/bin/env python3
"""test_strings - the one string policy (src/lib/utf8.c), seen by a client.

Every string that enters - each JSON field, each path parameter, the import
body - is shortest-form UTF-8 without NUL and without control characters
(TAB, LF and CR only in a system prompt, a query and a run's context).
Anything else is 400 bad_request naming the field, the same answer for a
NUL in session_id as in query, and nothing is stored or echoed back.
And a system prompt that create accepts always deploys: create and PUT
measure the compiled YAML against the registry slot (422 naming
step2.system_prompt), never a deploy failure afterwards."""

import json

from harness import InstanceTestCase, assert_error, assert_json, main

# each malformed class, as raw bytes inside a JSON string
MALFORMED = {
    "overlong": b"\xc0\xaf",
    "overlong3": b"\xe0\x80\xaf",
    "surrogate": b"\xed\xa0\x80",
    "above_10ffff": b"\xf4\x90\x80\x80",
    "truncated": b"\xe2\x82",
    "lone_continuation": b"\x80",
}
# the same classes a JSON text can carry as escapes
ESCAPED = {
    "nul": b"\\u0000",
    "bell": b"\\u0007",
    "escape": b"\\u001b",
}
MARK = "@@BAD@@"
# the front server's own 400 (etc/lighttpd/errors), for a URL it will not pass on
FRONT_REFUSED = "the front server could not read the request"
GOOD = {"name": "str-bot", "display_name": "Str Bot", "step1": {"model": "echo/echo-1"},
        "step2": {"system_prompt": "Hello.", "persona": "Helper"}}


def with_bad(body, bad):
    """The JSON text of body with MARK replaced by the raw bytes bad."""
    return json.dumps(body).encode().replace(MARK.encode(), b"x" + bad + b"y")


def set_path(body, path, value):
    body = json.loads(json.dumps(body))
    node = body
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return body


class StringPolicyTest(InstanceTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.token, cls.slug = cls.inst.user("strings@example.com")
        cls.agents = "/api/v1/orgs/%s/agents" % cls.slug
        st, _, body = cls.inst.request("POST", cls.agents, GOOD, token=cls.token)
        assert st == 201, (st, body)
        st, _, body = cls.inst.request("POST", cls.agents + "/str-bot/deploy", token=cls.token)
        assert st == 200, (st, body)

    def assert_refused(self, resp, field):
        body = assert_error(self, resp, 400, "bad_request")
        self.assertIn("'%s'" % field, body["message"])
        return body

    def all_bad(self):
        return list(MALFORMED.items()) + list(ESCAPED.items())

    # login: the user record and the token's sub -------------------------------
    def test_login_email_and_name(self):
        for field in ("email", "name"):
            for cls_, bad in self.all_bad():
                with self.subTest(field=field, cls=cls_):
                    body = {"email": "bad-login@example.com", "name": "Bad"}
                    body[field] = (MARK + "@example.com") if field == "email" else MARK
                    self.assert_refused(self.inst.request(
                        "POST", "/api/v1/auth/dev/login", raw=with_bad(body, bad)), field)
        # nothing was created on the way: that e-mail logs in for the first time now
        self.inst.login("bad-login@example.com", "Bad")

    # WizardConfig: every string field, at create and at PUT ---------------------
    WIZARD_FIELDS = [("name",), ("display_name",), ("step1", "model"),
                     ("step2", "system_prompt"), ("step2", "persona"), ("step2", "tone"),
                     ("step3", "tools")]

    def test_wizard_fields_at_create_and_put(self):
        for path in self.WIZARD_FIELDS:
            field = ".".join(path) + ("[0]" if path[-1] == "tools" else "")
            value = [MARK] if path[-1] == "tools" else MARK
            for cls_, bad in self.all_bad():
                with self.subTest(field=field, cls=cls_):
                    body = set_path(dict(GOOD, name="made-%s" % cls_.replace("_", "-")),
                                    path, value)
                    self.assert_refused(self.inst.request(
                        "POST", self.agents, raw=with_bad(body, bad), token=self.token), field)
                    if path != ("name",):
                        patch = set_path({}, path, value)
                        self.assert_refused(self.inst.request(
                            "PUT", self.agents + "/str-bot", raw=with_bad(patch, bad),
                            token=self.token), field)
        listed = assert_json(self, self.inst.request("GET", self.agents, token=self.token), 200)
        self.assertEqual([a["name"] for a in listed["agents"]], ["str-bot"])

    def test_prompt_allows_newlines_and_tabs_but_names_do_not(self):
        ok = set_path(dict(GOOD, name="multi-line"), ("step2", "system_prompt"),
                      "Line one.\n\tLine two.\r\n")
        assert_json(self, self.inst.request("POST", self.agents, ok, token=self.token), 201)
        for path in (("display_name",), ("step2", "persona")):
            with self.subTest(field=path):
                body = set_path(dict(GOOD, name="one-line"), path, "two\nlines")
                self.assert_refused(self.inst.request("POST", self.agents, body,
                                                      token=self.token), ".".join(path))
        self.assertEqual(self.inst.request("DELETE", self.agents + "/multi-line",
                                           token=self.token)[0], 204)

    def test_keys_of_objects_are_strings_too(self):
        raw = b'{"name":"k-bot","step3":{"tool_configs":{"x\xc0\xafy":{}}}}'
        body = self.assert_refused(self.inst.request("POST", self.agents, raw=raw,
                                                     token=self.token), "step3.tool_configs (a key)")
        self.assertNotIn("\ufffd", body["message"])

    # org display name, invitations, API keys -----------------------------------
    def test_org_member_and_key_fields(self):
        cases = [("PATCH", "/api/v1/orgs/%s" % self.slug, {"display_name": MARK}, "display_name"),
                 ("POST", "/api/v1/orgs/%s/members/invite" % self.slug,
                  {"email": MARK + "@example.com"}, "email"),
                 ("POST", "/api/v1/orgs/%s/keys" % self.slug, {"name": MARK}, "name")]
        for method, path, body, field in cases:
            for cls_, bad in self.all_bad():
                with self.subTest(path=path, cls=cls_):
                    self.assert_refused(self.inst.request(method, path, raw=with_bad(body, bad),
                                                          token=self.token), field)
        org = assert_json(self, self.inst.request("GET", "/api/v1/orgs/me", token=self.token), 200)
        self.assertTrue(org["display_name"].isprintable())

    # run and test: query, session_id, context ----------------------------------
    def test_run_fields(self):
        for verb in ("run", "test"):
            path = "%s/str-bot/%s" % (self.agents, verb)
            for field, body in (("query", {"query": MARK}),
                                ("session_id", {"query": "hi", "session_id": MARK}),
                                ("context.note", {"query": "hi", "context": {"note": MARK}})):
                for cls_, bad in self.all_bad():
                    with self.subTest(verb=verb, field=field, cls=cls_):
                        self.assert_refused(self.inst.request(
                            "POST", path, raw=with_bad(body, bad), token=self.token), field)

    def test_nul_in_session_id_and_in_query_answer_alike(self):
        path = self.agents + "/str-bot/test"
        a = self.assert_refused(self.inst.request(
            "POST", path, raw=b'{"query":"hi","session_id":"s1\\u0000tail"}', token=self.token),
            "session_id")
        b = self.assert_refused(self.inst.request(
            "POST", path, raw=b'{"query":"hi\\u0000tail","session_id":"s1"}', token=self.token),
            "query")
        self.assertEqual(a["message"].replace("session_id", "F"), b["message"].replace("query", "F"))
        # and nothing ran under the truncated id
        ok = assert_json(self, self.inst.request("POST", path, {"query": "hi", "session_id": "s1"},
                                                 token=self.token), 200)
        self.assertEqual(ok["session_id"], "s1")

    def test_websocket_messages(self):
        """The stream's JSON messages pass the same policy (an error event
        naming the field; the connection stays usable)."""
        ws = self.inst.ws_connect(self.slug, "str-bot", token=self.token)
        try:
            for field, raw in (("query", b'{"query":"a\\u0000b"}'),
                               ("session_id", b'{"query":"hi","session_id":"s\\u0000t"}'),
                               ("query", b'{"query":"bell\\u0007"}')):
                with self.subTest(field=field, raw=raw):
                    ws.send_frame(0x1, raw)
                    ev = ws.recv_json(timeout=10)
                    self.assertEqual(ev.get("type"), "error", ev)
                    self.assertEqual(ev.get("error"), "bad_request", ev)
                    self.assertIn("'%s'" % field, ev.get("message", ""))
            _, final = ws.query("still here")
            self.assertEqual(final["type"], "done", final)
        finally:
            ws.close()

    def test_query_and_context_allow_newlines(self):
        got = assert_json(self, self.inst.request(
            "POST", self.agents + "/str-bot/test",
            {"query": "two\nlines\tand a tab", "context": {"note": "a\nb"}}, token=self.token),
            200)
        self.assertIn("two", got["answer"])

    # path parameters -----------------------------------------------------------
    def test_path_parameters(self):
        escapes = {"overlong": "%C0%AF", "surrogate": "%ED%A0%80", "above_10ffff": "%F4%90%80%80",
                   "truncated": "%E2%82", "lone_continuation": "%80", "nul": "%00",
                   "control": "%07", "bad_escape": "%G1"}
        for cls_, esc in escapes.items():
            with self.subTest(cls=cls_):
                for method, path, field in (
                        ("GET", "/api/v1/orgs/x%s/agents" % esc, "slug"),
                        ("GET", "%s/bot%s" % (self.agents, esc), "name"),
                        ("PUT", "%s/bot%s" % (self.agents, esc), "name"),
                        ("DELETE", "/api/v1/orgs/%s/members/a%s%%40example.com" % (self.slug, esc),
                         "email"),
                        ("DELETE", "/api/v1/orgs/%s/keys/k%s" % (self.slug, esc), "id")):
                    resp = self.inst.request(method, path, token=self.token)
                    if resp[0] in (400, 404) and resp[1].get("content-type", "").startswith(
                            "text/html"):
                        continue        # Apache refused the URL itself (%00, a bad escape)
                    body = assert_error(self, resp, 400, "bad_request")
                    if body["message"] == FRONT_REFUSED:
                        continue        # the front server refused the URL itself (lighttpd)
                    self.assertIn("'%s'" % field, body["message"])

    # the import body -------------------------------------------------------------
    def test_import_body(self):
        for cls_, bad in MALFORMED.items():
            with self.subTest(cls=cls_):
                raw = b"apiVersion: astromesh/v1\nkind: Agent\nmetadata:\n  name: imp" + bad + b"\n"
                self.assert_refused(self.inst.request(
                    "POST", self.agents + "/import", raw=raw, token=self.token,
                    headers={"Content-Type": "application/yaml"}), "body")
        # what a YAML escape decodes to is held to the same policy, named as
        # the document names it; a newline only where the wizard allows one
        for esc, field in (("\\0", "spec.prompts.system"), ("\\a", "spec.prompts.system"),
                           ("\\x07", "spec.identity.display_name"),
                           ("\\n", "display_name")):
            with self.subTest(escape=esc):
                prompt = '"You\\nanswer' + esc + '."' if "prompts" in field else '"Hi."'
                shown = '"Imp' + esc + '"' if "display_name" in field else "Imp"
                raw = ("apiVersion: astromesh/v1\nkind: Agent\nmetadata:\n  name: imp-esc\n"
                       "spec:\n  identity: {display_name: %s}\n"
                       "  model:\n    primary: {provider: echo, model: echo-1}\n"
                       "  prompts: {system: %s}\n" % (shown, prompt)).encode()
                self.assert_refused(self.inst.request(
                    "POST", self.agents + "/import", raw=raw, token=self.token,
                    headers={"Content-Type": "application/yaml"}), field)
        # and a prompt's newlines come through
        raw = (b"apiVersion: astromesh/v1\nkind: Agent\nmetadata:\n  name: imp-ok\n"
               b"spec:\n  model:\n    primary: {provider: echo, model: echo-1}\n"
               b"  prompts: {system: \"One.\\nTwo.\"}\n")
        got = assert_json(self, self.inst.request(
            "POST", self.agents + "/import", raw=raw, token=self.token,
            headers={"Content-Type": "application/yaml"}), 201)
        self.assertEqual(got["name"], "imp-ok")
        self.assertEqual(self.inst.request("DELETE", self.agents + "/imp-ok",
                                           token=self.token)[0], 204)


class CompiledSizeTest(InstanceTestCase):
    """registry.slot_kb 4: a prompt whose escaped YAML outgrows the slot is
    refused at create and PUT; what they accept deploys."""

    config = {"registry": {"slot_kb": 4}}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.token, cls.slug = cls.inst.user("size@example.com")
        cls.agents = "/api/v1/orgs/%s/agents" % cls.slug

    def test_oversized_escaped_prompt_is_refused_at_create_never_at_deploy(self):
        quotes = '"\n' * 1500                       # 3000 bytes of JSON text, ~6000 escaped
        body = set_path(dict(GOOD, name="quoted"), ("step2", "system_prompt"), quotes)
        err = assert_error(self, self.inst.request("POST", self.agents, body, token=self.token),
                           422, "validation_error", fields=["step2.system_prompt"])
        self.assertIn("4096", json.dumps(err))
        assert_error(self, self.inst.request("GET", self.agents + "/quoted", token=self.token),
                     404, "agent_not_found")
        # the same bytes unescaped fit: created, and it deploys
        plain = set_path(dict(GOOD, name="plain"), ("step2", "system_prompt"), "a" * 3000)
        assert_json(self, self.inst.request("POST", self.agents, plain, token=self.token), 201)
        # PUT is held to the same measure, and the agent is unchanged
        assert_error(self, self.inst.request(
            "PUT", self.agents + "/plain", {"step2": {"system_prompt": quotes}}, token=self.token),
            422, "validation_error", fields=["step2.system_prompt"])
        got = assert_json(self, self.inst.request("POST", self.agents + "/plain/deploy",
                                                  token=self.token), 200)
        self.assertEqual(got["status"], "deployed")


if __name__ == "__main__":
    main()
