"""test_apikeys - an org's API keys (SPEC sections 3 and 7), through the real
lighttpd: create, list and delete by an owner; the secret shown once; what a
"run" and a "manage" key may do, and that no key manages keys, members,
providers or the org, or uses a person's routes; a key of one org is
refused on another's; a deleted key is refused by every worker thread on
the very next request; malformed and unknown keys get one generic 401; the
secret never appears in a list, an error message or the daemon's log."""

import json
import re
import secrets
import time

from harness import (InstanceTestCase, TIME_RE, assert_error, assert_json, main, poll,
                     run_concurrently)

SECRET_RE = re.compile(r"^ask-[A-Za-z0-9_-]{43}$")
ID_RE = re.compile(r"^key_[0-9a-f]{12}$")
CREATE_KEYS = {"id", "name", "prefix", "scopes", "secret", "created_at"}
LIST_KEYS = {"id", "name", "prefix", "scopes", "created_at", "last_used_at"}
WIZARD = {"name": "echo-bot", "step1": {"model": "echo/echo-1"},
          "step2": {"system_prompt": "You are a test agent."}}


class ApiKeyTestCase(InstanceTestCase):

    def setUp(self):
        self.token, self.slug = self.inst.user(self.unique_email("keys"))

    def org(self, path="", slug=None):
        return "/api/v1/orgs/%s%s" % (slug or self.slug, path)

    def create(self, body=None, token=None, slug=None):
        """POST a key; assert 201; return the answer."""
        resp = self.inst.request("POST", self.org("/keys", slug), body or {"name": "ci"},
                                 token=token or self.token)
        return assert_json(self, resp, 201)

    def keys(self, token=None, slug=None):
        resp = self.inst.request("GET", self.org("/keys", slug), token=token or self.token)
        return assert_json(self, resp, 200)["keys"]

    def with_key(self, secret, method, path, body=None, headers=None):
        h = {"X-API-Key": secret}
        h.update(headers or {})
        return self.inst.request(method, path, body, headers=h)

    def deployed_agent(self):
        assert_json(self, self.inst.request("POST", self.org("/agents"), WIZARD,
                                            token=self.token), 201)
        assert_json(self, self.inst.request("POST", self.org("/agents/echo-bot/deploy"),
                                            token=self.token), 200)


class KeyLifecycleTest(ApiKeyTestCase):

    def test_create_answer_shows_the_secret_once(self):
        k = self.create({"name": "deploy bot"})
        self.assertEqual(set(k), CREATE_KEYS, k)
        self.assertRegex(k["secret"], SECRET_RE)
        self.assertRegex(k["id"], ID_RE)
        self.assertEqual(k["prefix"], k["secret"][:12])
        self.assertEqual(k["scopes"], ["run"], "run is the default scope")
        self.assertEqual(k["name"], "deploy bot")
        self.assertRegex(k["created_at"], TIME_RE)
        listed = self.keys()
        self.assertEqual(len(listed), 1, listed)
        self.assertEqual(set(listed[0]), LIST_KEYS, listed)
        self.assertEqual({f: listed[0][f] for f in ("id", "name", "prefix", "scopes",
                                                    "created_at")},
                         {f: k[f] for f in ("id", "name", "prefix", "scopes", "created_at")})
        self.assertIsNone(listed[0]["last_used_at"], "never used yet")
        self.assertNotIn(k["secret"], json.dumps(listed))
        self.assertNotIn(k["secret"][12:], json.dumps(listed))

    def test_secrets_and_ids_are_distinct(self):
        made = [self.create({"name": "k%d" % i, "scopes": ["manage", "run"]}) for i in range(5)]
        self.assertEqual(len({k["secret"] for k in made}), 5)
        self.assertEqual(len({k["id"] for k in made}), 5)
        self.assertEqual(made[0]["scopes"], ["run", "manage"])
        self.assertEqual([k["id"] for k in self.keys()], [k["id"] for k in made],
                         "listed oldest first")

    def test_delete_then_gone_then_404(self):
        a = self.create({"name": "a"})
        b = self.create({"name": "b"})
        resp = self.inst.request("DELETE", self.org("/keys/" + a["id"]), token=self.token)
        self.assertEqual(resp[0], 204, resp)
        self.assertEqual([k["id"] for k in self.keys()], [b["id"]])
        assert_error(self, self.inst.request("DELETE", self.org("/keys/" + a["id"]),
                                             token=self.token), 404, "key_not_found")
        for bad in ("key_000000000000", "nope", "key_" + "A" * 12, "x" * 200):
            with self.subTest(id=bad):
                assert_error(self, self.inst.request("DELETE", self.org("/keys/" + bad),
                                                     token=self.token), 404, "key_not_found")
        # b still works, a does not
        self.assertEqual(self.with_key(b["secret"], "GET", self.org("/agents"))[0], 200)
        assert_error(self, self.with_key(a["secret"], "GET", self.org("/agents")), 401,
                     "unauthorized")

    def test_another_orgs_key_id_is_not_found_here(self):
        other_tok, other_slug = self.inst.user(self.unique_email("other"))
        theirs = self.create({"name": "theirs"}, token=other_tok, slug=other_slug)
        assert_error(self, self.inst.request("DELETE", self.org("/keys/" + theirs["id"]),
                                             token=self.token), 404, "key_not_found")
        self.assertEqual(self.keys(), [])
        self.assertEqual([k["id"] for k in self.keys(other_tok, other_slug)], [theirs["id"]])
        self.assertEqual(self.with_key(theirs["secret"], "GET",
                                       self.org("/agents", other_slug))[0], 200)

    def test_bad_bodies_are_422_naming_the_field(self):
        cases = [
            ({}, "name"), ({"name": ""}, "name"), ({"name": "x" * 65}, "name"),
            ({"name": 7}, "name"), ({"name": None}, "name"),
            ({"name": "a\u0085b"}, "name"), ({"name": "   "}, "name"),
            ({"name": "k", "scopes": []}, "scopes"), ({"name": "k", "scopes": "run"}, "scopes"),
            ({"name": "k", "scopes": ["admin"]}, "scopes"),
            ({"name": "k", "scopes": ["run", "run"]}, "scopes"),
            ({"name": "k", "scopes": ["run", 1]}, "scopes"),
            ({"name": "k", "scopes": ["RUN"]}, "scopes"),
            ({"name": "k", "org": "x"}, "org"), ({"name": "k", "secret": "ask-x"}, "secret"),
        ]
        for body, field in cases:
            with self.subTest(body=body):
                resp = self.inst.request("POST", self.org("/keys"), body, token=self.token)
                assert_error(self, resp, 422, "validation_error", fields=[field])
        # NUL and control characters: the one string policy's 400 (test_strings.py)
        for body, field in (({"name": "a\nb"}, "name"), ({"name": "a\x00b"}, "name"),
                            ({"name": "a\x7fb"}, "name"),
                            ({"name": "k", "scopes": ["run\u0000"]}, "scopes[0]")):
            with self.subTest(body=body):
                got = assert_error(self, self.inst.request("POST", self.org("/keys"), body,
                                                           token=self.token), 400, "bad_request")
                self.assertIn("'%s'" % field, got["message"])
        assert_error(self, self.inst.request("POST", self.org("/keys"), raw=b"{", token=self.token),
                     400, "invalid_json")
        assert_error(self, self.inst.request("POST", self.org("/keys"), raw=b"[]",
                                             token=self.token), 422, "validation_error")
        assert_error(self, self.inst.request("POST", self.org("/keys"), raw=b"name=x",
                                             headers={"Content-Type": "text/plain"},
                                             token=self.token), 415)
        self.assertEqual(self.keys(), [], "no bad body made a key")
        # the edges that are fine
        self.assertEqual(self.create({"name": "x" * 64})["name"], "x" * 64)
        self.assertEqual(self.create({"name": "é" * 64})["name"], "é" * 64)
        self.assertEqual(self.create({"name": "k", "scopes": None})["scopes"], ["run"])
        self.assertEqual(self.create({"name": "k", "scopes": ["manage"]})["scopes"], ["manage"])

    def test_an_org_holds_at_most_50_keys(self):
        for i in range(50):
            self.create({"name": "k%d" % i})
        assert_error(self, self.inst.request("POST", self.org("/keys"), {"name": "one more"},
                                             token=self.token), 409, "plan_limit_reached")
        first = self.keys()[0]
        self.assertEqual(self.inst.request("DELETE", self.org("/keys/" + first["id"]),
                                           token=self.token)[0], 204)
        self.create({"name": "room again"})
        self.assertEqual(len(self.keys()), 50)

    def test_concurrent_creates_never_pass_the_cap(self):
        for i in range(45):
            self.create({"name": "k%d" % i})

        def one():
            return self.inst.request("POST", self.org("/keys"), {"name": "race"},
                                     token=self.token)[0]
        got = run_concurrently([one] * 12)
        self.assertEqual(sorted(got), [201] * 5 + [409] * 7, got)
        self.assertEqual(len(self.keys()), 50)


class KeyScopeTest(ApiKeyTestCase):

    def agent_calls(self):
        a = self.org("/agents")
        return {
            "run": [("GET", a, None), ("GET", a + "/echo-bot", None),
                    ("GET", a + "/echo-bot/yaml", None),
                    ("POST", a + "/echo-bot/run", {"query": "hi"}),
                    ("POST", a + "/echo-bot/test", {"query": "hi"})],
            "manage": [("POST", a, dict(WIZARD, name="made-by-key")),
                       ("PUT", a + "/made-by-key", {"display_name": "Edited"}),
                       ("POST", a + "/made-by-key/deploy", None),
                       ("POST", a + "/made-by-key/pause", None),
                       ("DELETE", a + "/made-by-key", None),
                       ("GET", self.org("/usage"), None)],
        }

    def test_run_key_runs_but_does_not_manage(self):
        self.deployed_agent()
        secret = self.create({"name": "runner", "scopes": ["run"]})["secret"]
        calls = self.agent_calls()
        for method, path, body in calls["run"]:
            with self.subTest(method=method, path=path):
                resp = self.with_key(secret, method, path, body)
                self.assertEqual(resp[0], 200, resp)
        run = self.with_key(secret, "POST", self.org("/agents/echo-bot/run"), {"query": "ping"})
        self.assertIn("ping", assert_json(self, run, 200)["answer"])
        # the owner makes the agent the manage calls act on, so each 403 is the scope's
        assert_json(self, self.inst.request("POST", self.org("/agents"),
                                            dict(WIZARD, name="made-by-key"), token=self.token), 201)
        for method, path, body in calls["manage"]:
            with self.subTest(method=method, path=path):
                if method == "POST" and path.endswith("/agents"):
                    body = dict(WIZARD, name="other-by-key")
                resp = self.with_key(secret, method, path, body)
                body = assert_error(self, resp, 403, "forbidden")
                self.assertIn("manage", body["message"])
                self.assertNotIn(secret, json.dumps(body))
        got = assert_json(self, self.inst.request("GET", self.org("/agents/made-by-key"),
                                                  token=self.token), 200)
        self.assertEqual(got["status"], "draft", "nothing changed")

    def test_manage_key_does_both(self):
        self.deployed_agent()
        secret = self.create({"name": "manager", "scopes": ["manage"]})["secret"]
        calls = self.agent_calls()
        for method, path, body in calls["run"] + calls["manage"]:
            with self.subTest(method=method, path=path):
                resp = self.with_key(secret, method, path, body)
                expect = 204 if method == "DELETE" else (
                    201 if method == "POST" and path.endswith("/agents") else 200)
                self.assertEqual(resp[0], expect, resp)

    def test_no_key_manages_keys_members_providers_or_the_org(self):
        victim = self.create({"name": "victim"})
        secret = self.create({"name": "strong", "scopes": ["run", "manage"]})["secret"]
        calls = [("GET", self.org("/keys"), None), ("POST", self.org("/keys"), {"name": "x"}),
                 ("DELETE", self.org("/keys/" + victim["id"]), None),
                 ("DELETE", self.org("/keys/key_000000000000"), None)]
        # routes other branches add: checked where they exist (an owner's
        # call is not a "No such route" 404)
        maybe = [("GET", self.org("/members"), None),
                 ("POST", self.org("/members/invite"), {"email": "x@example.com"}),
                 ("DELETE", self.org("/members/x@example.com"), None),
                 ("PATCH", self.org(), {"display_name": "Pwned"}),
                 ("GET", self.org("/providers"), None),
                 ("POST", self.org("/providers"), {"provider": "openai", "api_key": "sk-x"}),
                 ("DELETE", self.org("/providers/openai"), None)]
        for method, path, body in maybe:
            status, _, got = self.inst.request(method, path, body, token="junk")
            if status != 404:
                calls.append((method, path, body))
        for method, path, body in calls:
            with self.subTest(method=method, path=path):
                body = assert_error(self, self.with_key(secret, method, path, body), 403,
                                    "forbidden")
                self.assertNotIn(secret, json.dumps(body))
        self.assertEqual(len(self.keys()), 2, "no key made or deleted one")
        # a person's routes: 403 for any key
        for method, path in (("GET", "/api/v1/orgs/me"), ("GET", "/api/v1/orgs"),
                             ("POST", "/api/v1/auth/logout")):
            with self.subTest(method=method, path=path):
                assert_error(self, self.with_key(secret, method, path), 403, "forbidden")
        self.assertEqual(self.with_key(secret, "GET", self.org("/agents"))[0], 200,
                         "logout with a key revoked nothing")

    def test_key_of_one_org_is_refused_on_another(self):
        other_tok, other_slug = self.inst.user(self.unique_email("victim"))
        assert_json(self, self.inst.request("POST", self.org("/agents", other_slug), WIZARD,
                                            token=other_tok), 201)
        secret = self.create({"name": "mine", "scopes": ["run", "manage"]})["secret"]
        for slug in (other_slug, "no-such-org", "Bad__Slug"):
            base = self.org("/agents", slug)
            for method, path, body in (("GET", base, None), ("POST", base, WIZARD),
                                       ("GET", base + "/echo-bot", None),
                                       ("POST", base + "/echo-bot/run", {"query": "x"}),
                                       ("DELETE", base + "/echo-bot", None),
                                       ("GET", self.org("/usage", slug), None),
                                       ("GET", self.org("/keys", slug), None)):
                with self.subTest(method=method, path=path):
                    body = assert_error(self, self.with_key(secret, method, path, body), 403,
                                        "forbidden")
                    self.assertNotIn("echo-bot", body["message"])
        lst = assert_json(self, self.inst.request("GET", self.org("/agents", other_slug),
                                                  token=other_tok), 200)
        self.assertEqual([a["name"] for a in lst["agents"]], ["echo-bot"])


class KeyAuthenticationTest(ApiKeyTestCase):

    def test_malformed_unknown_and_deleted_keys_get_one_generic_401(self):
        k = self.create({"name": "real"})
        secret = k["secret"]
        flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        unknown = "ask-" + secrets.token_urlsafe(32)[:43]
        messages = set()
        for bad in ("junk", "ask-", secret[:-1], secret + "A", flipped, unknown,
                    secret.upper(), "Bearer " + secret, "ask-" + "!" * 43):
            with self.subTest(key=bad):
                body = assert_error(self, self.with_key(bad, "GET", self.org("/agents")), 401,
                                    "unauthorized")
                self.assertNotIn(bad.strip(), body["message"])
                messages.add(body["message"])
        self.assertEqual(self.inst.request("DELETE", self.org("/keys/" + k["id"]),
                                           token=self.token)[0], 204)
        body = assert_error(self, self.with_key(secret, "GET", self.org("/agents")), 401,
                            "unauthorized")
        messages.add(body["message"])
        self.assertEqual(len(messages), 1, "one message, never saying which: %s" % messages)
        # no credentials at all: 401 naming both ways
        body = assert_error(self, self.inst.request("GET", self.org("/agents")), 401)
        self.assertIn("X-API-Key", body["message"])

    def test_bearer_wins_when_both_are_sent(self):
        secret = self.create({"name": "both"})["secret"]
        # a person's route: with both headers the token decides (a key alone gets 403)
        resp = self.with_key(secret, "GET", "/api/v1/orgs/me",
                             headers={"Authorization": "Bearer " + self.token})
        self.assertEqual(assert_json(self, resp, 200)["slug"], self.slug)
        resp = self.with_key(secret, "GET", self.org("/agents"),
                             headers={"Authorization": "Bearer junk"})
        assert_error(self, resp, 401, "unauthorized")
        resp = self.with_key("junk", "GET", self.org("/keys"),
                             headers={"Authorization": "Bearer " + self.token})
        self.assertEqual(resp[0], 200, resp)

    def test_deleted_key_is_refused_at_once_by_every_worker_thread(self):
        k = self.create({"name": "doomed"})
        n = 64

        def call():
            return self.with_key(k["secret"], "GET", self.org("/agents"))[0]

        for _ in range(3):          # warm the memo of as many threads as we can
            self.assertEqual(run_concurrently([call] * n), [200] * n)
        self.assertEqual(self.inst.request("DELETE", self.org("/keys/" + k["id"]),
                                           token=self.token)[0], 204)
        for _ in range(3):
            self.assertEqual(run_concurrently([call] * n), [401] * n)

    def test_last_used_at_is_set_by_use_and_written_at_most_once_a_minute(self):
        k = self.create({"name": "used"})
        self.assertIsNone(self.keys()[0]["last_used_at"])
        self.assertEqual(self.with_key(k["secret"], "GET", self.org("/agents"))[0], 200)
        first = self.keys()[0]["last_used_at"]
        self.assertRegex(first or "", TIME_RE)
        # let the clock pass a second, so a second write would show
        t0 = int(time.time())
        poll(lambda: int(time.time()) > t0 + 1, 5, what="two seconds to pass")

        def call():
            return self.with_key(k["secret"], "GET", self.org("/agents"))[0]
        self.assertEqual(run_concurrently([call] * 50), [200] * 50)
        self.assertEqual(self.keys()[0]["last_used_at"], first,
                         "no second write within the minute")

    def test_the_secret_is_in_no_log_line(self):
        k = self.create({"name": "quiet"})
        secret = k["secret"]
        self.with_key(secret, "GET", self.org("/agents"))
        self.with_key(secret, "GET", "/api/v1/orgs/me")
        self.with_key(secret, "GET", self.org("/keys"))
        self.with_key(secret + "x", "GET", self.org("/agents"))
        self.inst.request("DELETE", self.org("/keys/" + k["id"]), token=self.token)
        self.with_key(secret, "GET", self.org("/agents"))
        for path in [self.inst.daemon_log] + self.inst.front_logs():
            text = self.inst.read_log(path)
            self.assertNotIn(secret[12:], text, path)


if __name__ == "__main__":
    main()
