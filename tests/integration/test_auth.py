"""test_auth - dev login, org slugs, /orgs/me, bearer tokens and tenancy
(SPEC sections 3 and 4), through the real lighttpd."""

import json
import time

from harness import (InstanceTestCase, SLUG_RE, TIME_RE, assert_error, assert_json,
                     jwt_decode, jwt_sign, b64url_encode, main, run_concurrently)

WIZARD = {
    "name": "support-bot",
    "display_name": "Support Bot",
    "step1": {"model": "echo/echo-1"},
    "step2": {"system_prompt": "You are a helpful support agent.", "tone": "professional"},
}


class DevLoginTest(InstanceTestCase):

    def test_dev_login_answer_shape(self):
        resp = self.inst.request("POST", "/api/v1/auth/dev/login",
                                 {"email": "dev@example.com", "name": "Dev"})
        body = assert_json(self, resp, 200)
        self.assertEqual(set(body), {"access_token", "refresh_token", "token_type",
                                     "expires_in", "org_slug"}, body)
        self.assertEqual(body["token_type"], "bearer")
        self.assertEqual(body["org_slug"], "dev-example-com")
        self.assertIs(type(body["expires_in"]), int)
        self.assertEqual(body["expires_in"], 900, "access tokens live 15 min")
        for tok in (body["access_token"], body["refresh_token"]):
            header, payload, sig = jwt_decode(tok)
            self.assertEqual(header.get("alg"), "HS256")
            for claim in ("sub", "exp", "iat", "jti"):
                self.assertIn(claim, payload)
            self.assertEqual(len(sig), 32, "HMAC-SHA256 signature")
        _, access, _ = jwt_decode(body["access_token"])
        _, refresh, _ = jwt_decode(body["refresh_token"])
        self.assertEqual(access["exp"] - access["iat"], 900)
        self.assertEqual(refresh["exp"] - refresh["iat"], 7 * 24 * 3600)
        self.assertLessEqual(abs(access["iat"] - time.time()), 120)
        self.assertNotEqual(access["jti"], refresh["jti"])
        self.assertNotEqual(body["access_token"], body["refresh_token"])

    def test_second_login_of_same_user_keeps_the_slug(self):
        a = self.inst.login("again@example.com")
        b = self.inst.login("again@example.com")
        self.assertEqual(a["org_slug"], "again-example-com")
        self.assertEqual(b["org_slug"], a["org_slug"])
        self.assertNotEqual(a["access_token"], b["access_token"], "fresh jti per token")

    def test_slug_taken_by_another_user_gets_a_suffix(self):
        first = self.inst.login("sam.lee@example.org")
        second = self.inst.login("sam-lee@example.org")
        third = self.inst.login("sam_lee@example.org")
        self.assertEqual(first["org_slug"], "sam-lee-example-org")
        slugs = [first["org_slug"], second["org_slug"], third["org_slug"]]
        self.assertEqual(len(set(slugs)), 3, slugs)
        for s in slugs[1:]:
            self.assertTrue(s.startswith("sam-lee-example-org-"), s)
            self.assertRegex(s, SLUG_RE)
        # each user lands in their own org
        for b in (first, second, third):
            me = assert_json(self, self.inst.request("GET", "/api/v1/orgs/me",
                                                     token=b["access_token"]), 200)
            self.assertEqual(me["slug"], b["org_slug"])

    def test_long_email_gives_a_valid_slug_and_distinct_suffixes(self):
        local = "a-very-long-local-part-for-testing-slugs"
        e1 = local + "@some-really-long-domain-name.example.com"
        e2 = local + "@some-really-long-domain-name.example.net"
        s1 = self.inst.login(e1)["org_slug"]
        s2 = self.inst.login(e2)["org_slug"]
        for s in (s1, s2):
            self.assertRegex(s, SLUG_RE)
            self.assertNotIn("__", s)
        self.assertNotEqual(s1, s2)

    def test_orgs_me_shape(self):
        b = self.inst.login("me@example.com", "Me Myself")
        me = assert_json(self, self.inst.request("GET", "/api/v1/orgs/me",
                                                 token=b["access_token"]), 200)
        for key in ("slug", "display_name", "plan", "role", "limits", "created_at"):
            self.assertIn(key, me)
        self.assertEqual(me["slug"], "me-example-com")
        self.assertEqual(me["plan"], "free")
        self.assertEqual(me["role"], "owner")
        self.assertEqual(me["limits"], {"max_agents": 5, "requests_per_day": 1000,
                                        "max_members": 3, "max_streams": 5})
        self.assertIsInstance(me["display_name"], str)
        self.assertRegex(me["created_at"], TIME_RE)


class BadTokenTest(InstanceTestCase):
    """Every way a bearer token can be wrong gets 401 with the envelope."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.session = cls.inst.login("tok@example.com")
        cls.token = cls.session["access_token"]
        cls.slug = cls.session["org_slug"]

    def assert_401(self, headers, what):
        for path in ("/api/v1/orgs/me", "/api/v1/orgs/%s/agents" % self.slug):
            with self.subTest(token=what, path=path):
                resp = self.inst.request("GET", path, headers=headers)
                assert_error(self, resp, 401, "unauthorized")
        with self.subTest(token=what, path="POST agents"):
            resp = self.inst.request("POST", "/api/v1/orgs/%s/agents" % self.slug,
                                     dict(WIZARD, name="never"), headers=headers)
            assert_error(self, resp, 401, "unauthorized")

    def resigned(self, header=None, **claims):
        h, p, _ = jwt_decode(self.token)
        p.update(claims)
        return jwt_sign(self.inst.jwt_secret, header or h, p)

    def test_valid_token_works(self):
        assert_json(self, self.inst.request("GET", "/api/v1/orgs/me", token=self.token), 200)

    def test_our_resigning_is_accepted(self):
        """Control for the crafted tokens below: the same claims signed
        here with the configured secret are accepted."""
        assert_json(self, self.inst.request("GET", "/api/v1/orgs/me",
                                            token=self.resigned()), 200)

    def test_missing_authorization(self):
        self.assert_401({}, "none")

    def test_garbage_tokens(self):
        for t in ("garbage", "", "a.b.c", "....", "x" * 3000,
                  b64url_encode(b'{"alg":"HS256"}') + ".e30.", "Bearer"):
            self.assert_401({"Authorization": "Bearer " + t}, "garbage %r" % t[:20])
        self.assert_401({"Authorization": "Basic ZGV2OmRldg=="}, "basic")
        self.assert_401({"Authorization": self.token}, "no scheme")

    def test_tampered_signature(self):
        h, p, s = self.token.split(".")
        flipped = s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1]
        self.assert_401({"Authorization": "Bearer " + ".".join([h, p, flipped])}, "sig")
        self.assert_401({"Authorization": "Bearer " + ".".join([h, p, ""])}, "no sig")

    def test_tampered_payload_keeps_old_signature(self):
        h, _, s = self.token.split(".")
        _, payload, _ = jwt_decode(self.token)
        payload["sub"] = "someone-else@example.com"
        forged = b64url_encode(json.dumps(payload).encode())
        self.assert_401({"Authorization": "Bearer " + ".".join([h, forged, s])}, "payload")

    def test_expired_token(self):
        now = int(time.time())
        expired = self.resigned(iat=now - 3600, exp=now - 60)
        self.assert_401({"Authorization": "Bearer " + expired}, "expired")

    def test_alg_none(self):
        h, p, _ = jwt_decode(self.token)
        for alg in ("none", "None", "NONE"):
            head = b64url_encode(json.dumps({"alg": alg, "typ": "JWT"}).encode())
            body = self.token.split(".")[1]
            self.assert_401({"Authorization": "Bearer %s.%s." % (head, body)}, alg)
            self.assert_401({"Authorization": "Bearer %s.%s.%s" % (
                head, body, self.token.split(".")[2])}, alg + " with sig")

    def test_other_algorithm_header(self):
        h, _, _ = jwt_decode(self.token)
        for alg in ("HS512", "RS256"):
            self.assert_401({"Authorization": "Bearer " + self.resigned(dict(h, alg=alg))}, alg)

    def test_wrong_secret(self):
        h, p, _ = jwt_decode(self.token)
        self.assert_401({"Authorization": "Bearer " + jwt_sign("x" * 48, h, p)}, "secret")

    def test_unknown_user(self):
        self.assert_401({"Authorization": "Bearer " + self.resigned(sub="ghost@example.com")},
                        "unknown sub")

    def test_refresh_token_is_not_an_access_token(self):
        self.assert_401({"Authorization": "Bearer " + self.session["refresh_token"]},
                        "refresh token")


class TenancyTest(InstanceTestCase):
    """A valid token on another org's slug: 403 on every agent route and
    method, whether the agent exists or not, and nothing changes."""

    def test_logout_is_seen_at_once_by_every_worker_thread(self):
        """A logged-out access token is refused by every accept thread of
        every worker, also by those whose per-thread memo had accepted it a
        moment before: the logout's auth epoch reaches all processes."""
        tok = self.inst.login(self.unique_email("logout"))["access_token"]
        n = 64

        def me():
            return self.inst.request("GET", "/api/v1/orgs/me", token=tok)[0]

        for _ in range(3):          # warm the memo of as many threads as we can
            self.assertEqual(run_concurrently([me] * n), [200] * n)
        self.assertEqual(self.inst.request("POST", "/api/v1/auth/logout", token=tok)[0], 204)
        for _ in range(3):
            self.assertEqual(run_concurrently([me] * n), [401] * n)

    def test_other_org_is_forbidden_everywhere(self):
        owner_tok, owner_slug = self.inst.user("owner@example.com")
        other_tok, other_slug = self.inst.user("intruder@example.com")
        self.assertNotEqual(owner_slug, other_slug)
        assert_json(self, self.inst.request("POST", "/api/v1/orgs/%s/agents" % owner_slug,
                                            WIZARD, token=owner_tok), 201)
        before = self.inst.request("GET", "/api/v1/orgs/%s/agents/support-bot" % owner_slug,
                                   token=owner_tok)[2]
        for slug in (owner_slug, "no-such-org"):
            for name in ("support-bot", "does-not-exist"):
                base = "/api/v1/orgs/%s/agents" % slug
                calls = [("GET", base, None), ("POST", base, dict(WIZARD, name="x1")),
                         ("GET", base + "/" + name, None),
                         ("PUT", base + "/" + name, {"step2": {"system_prompt": "pwned"}}),
                         ("POST", base + "/" + name + "/deploy", None),
                         ("POST", base + "/" + name + "/pause", None),
                         ("GET", base + "/" + name + "/yaml", None),
                         ("DELETE", base + "/" + name, None)]
                for method, path, body in calls:
                    with self.subTest(method=method, path=path):
                        resp = self.inst.request(method, path, body, token=other_tok)
                        assert_error(self, resp, 403, "forbidden")
                        self.assertNotIn("support-bot", resp[2]["message"])
        # a bad token on another org's slug is 401, not 403
        resp = self.inst.request("GET", "/api/v1/orgs/%s/agents" % owner_slug, token="junk")
        assert_error(self, resp, 401, "unauthorized")
        # the owner's agent is untouched
        after = assert_json(self, self.inst.request(
            "GET", "/api/v1/orgs/%s/agents/support-bot" % owner_slug, token=owner_tok), 200)
        self.assertEqual(after, before)
        lst = assert_json(self, self.inst.request(
            "GET", "/api/v1/orgs/%s/agents" % owner_slug, token=owner_tok), 200)
        self.assertEqual([a["name"] for a in lst["agents"]], ["support-bot"])
        # and the intruder's own org saw nothing of it
        lst = assert_json(self, self.inst.request(
            "GET", "/api/v1/orgs/%s/agents" % other_slug, token=other_tok), 200)
        self.assertEqual(lst["agents"], [])


if __name__ == "__main__":
    main()
