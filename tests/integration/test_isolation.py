"""test_isolation - two tenants, every route of the API, every kind of
caller (SPEC sections 3, 4 and 7; issue 9).

Two orgs, "A" and "B", each with agents in every state, an API key of each
scope and a revoked one, members of each role, a removed member and a
provider key. Every route of the daemon's own route table (astromesh-cloudd
-R: a route this file does not list fails the test) is called on org A's
resources by every kind of caller, from org A and from org B, and each
status is checked against the tables below, written here by hand from SPEC
section 3. Then the same from B's side. Nothing of one org (an agent's
name, a key id or prefix, a member's e-mail, a masked provider key) may
appear in any answer to a caller that does not belong to it.

The harness (Instance.stop) then greps the database files, the logs and
every recorded answer for each provider key and API key secret created
here: a hit fails the test.
"""

import re
import subprocess
import time

from harness import (DAEMON, InstanceTestCase, assert_json, jwt_decode, jwt_sign, main)

ORG = "/api/v1/orgs/{slug}"
AGENT = ORG + "/agents/{name}"

# Who may call each route (SPEC section 3):
#   public  anyone
#   user    a person's access token (API keys: 403)
#   member  a member of {slug}, any role (API keys: 403)
#   admin   an owner or admin of {slug} (members and API keys: 403)
#   run     a member of {slug}, or a key of {slug} with scope run or manage
#   manage  a member of {slug}, or a key of {slug} with scope manage
ROUTE_ACCESS = {
    ("GET", "/api/v1/health"): "public",
    ("GET", "/api/v1/metrics"): "public",    # loopback or metrics.token: test_metrics
    ("GET", "/api/v1/config"): "public",
    ("POST", "/api/v1/auth/dev/login"): "public",
    ("POST", "/api/v1/auth/refresh"): "public",
    ("POST", "/api/v1/auth/logout"): "user",
    ("POST", "/api/v1/auth/google"): "public",
    ("POST", "/api/v1/auth/github"): "public",
    ("GET", "/api/v1/openapi.json"): "public",
    ("GET", "/api/v1/orgs/me"): "user",
    ("GET", "/api/v1/orgs"): "user",
    ("PATCH", ORG): "admin",
    ("GET", ORG + "/members"): "member",
    ("POST", ORG + "/members/invite"): "admin",
    ("DELETE", ORG + "/members/{email}"): "admin",
    ("GET", ORG + "/keys"): "admin",
    ("POST", ORG + "/keys"): "admin",
    ("DELETE", ORG + "/keys/{id}"): "admin",
    ("GET", ORG + "/providers"): "admin",
    ("POST", ORG + "/providers"): "admin",
    ("DELETE", ORG + "/providers/{provider}"): "admin",
    ("GET", ORG + "/agents"): "run",
    ("POST", ORG + "/agents"): "manage",
    ("POST", ORG + "/agents/import"): "manage",
    ("GET", AGENT): "run",
    ("PUT", AGENT): "manage",
    ("DELETE", AGENT): "manage",
    ("POST", AGENT + "/deploy"): "manage",
    ("POST", AGENT + "/pause"): "manage",
    ("GET", AGENT + "/yaml"): "run",
    ("POST", AGENT + "/run"): "run",
    ("POST", AGENT + "/test"): "run",
    ("GET", ORG + "/usage"): "manage",
    ("GET", AGENT + "/versions"): "run",
    ("GET", AGENT + "/versions/{n}"): "run",
    ("GET", AGENT + "/versions/{a}/diff/{b}"): "run",
    ("POST", AGENT + "/rollback"): "manage",
}

# What each kind of caller gets, by access class, on the target org's
# routes: "ok" = the route's own answer (anything but 401/403 and 5xx).
CLASSES = ("public", "user", "member", "admin", "run", "manage")
OK = "ok"
EXPECT = {
    #                    public user member admin  run  manage
    "no credentials":   (OK, 401, 401, 401, 401, 401),
    "tampered jwt":     (OK, 401, 401, 401, 401, 401),
    "expired jwt":      (OK, 401, 401, 401, 401, 401),
    "logged-out jwt":   (OK, 401, 401, 401, 401, 401),
    "garbage key":      (OK, 401, 401, 401, 401, 401),
    "revoked key":      (OK, 401, 401, 401, 401, 401),
    "run key":          (OK, 403, 403, 403, OK, 403),
    "manage key":       (OK, 403, 403, 403, OK, OK),
    "member":           (OK, OK, OK, 403, OK, OK),
    "admin":            (OK, OK, OK, OK, OK, OK),
    "owner":            (OK, OK, OK, OK, OK, OK),
    "removed member":   (OK, OK, 403, 403, 403, 403),
    "other owner":      (OK, OK, 403, 403, 403, 403),
    "other member":     (OK, OK, 403, 403, 403, 403),
    "other run key":    (OK, 403, 403, 403, 403, 403),
    "other manage key": (OK, 403, 403, 403, 403, 403),
}

# Bodies that an allowed caller's call turns into a 4xx of the route's own
# (validation), so that the matrix changes nothing: what is checked is that
# the caller got past authentication and authorisation, or did not.
HARMLESS_BODY = {
    ("POST", "/api/v1/auth/dev/login"): {"email": "not an e-mail"},
    ("POST", "/api/v1/auth/refresh"): {"refresh_token": "nope"},
    ("PATCH", ORG): {"bogus_field": 1},
    ("POST", ORG + "/members/invite"): {"email": "not an e-mail", "role": "member"},
    ("POST", ORG + "/keys"): {"name": "", "scopes": ["run"]},
    ("POST", ORG + "/providers"): {"provider": "no-such-provider", "api_key": "x" * 20},
    ("POST", ORG + "/agents"): {"bogus_field": 1},
    ("POST", ORG + "/agents/import"): {"bogus_field": 1},    # JSON: 415
    ("PUT", AGENT): {"bogus_field": 1},
    ("POST", AGENT + "/run"): {"query": "hello"},
    ("POST", AGENT + "/test"): {"query": "hello"},
    ("POST", AGENT + "/rollback"): {"version": 999999},
}

# Routes that change or destroy what they name: an allowed caller is sent
# at a name that does not exist (its answer is then a 404 of the route's
# own), a refused caller at the real thing.
DESTRUCTIVE = {
    ("DELETE", ORG + "/members/{email}"), ("DELETE", ORG + "/keys/{id}"),
    ("DELETE", ORG + "/providers/{provider}"), ("DELETE", AGENT),
    ("POST", AGENT + "/deploy"), ("POST", AGENT + "/pause"),
}

WIZARD = {"step1": {"model": "echo/echo-1"},
          "step2": {"system_prompt": "You are a helpful agent.", "tone": "professional"}}


class Org:
    """One tenant and everything made for it."""

    def __init__(self, tag):
        self.tag = tag
        self.slug = None
        self.tokens = {}            # role -> access token
        self.emails = {}            # role -> e-mail
        self.keys = {}              # "run" | "manage" | "revoked" -> (id, secret, prefix)
        self.agents = {}            # state -> name
        self.provider_mask = None

    def secrets_of_mine(self):
        """Strings that must never reach another org's caller."""
        out = set(self.agents.values()) | set(self.emails.values())
        for kid, _, prefix in self.keys.values():
            out |= {kid, prefix}
        if self.provider_mask:
            out.add(self.provider_mask)
        return out


class IsolationTest(InstanceTestCase):
    config = {"limits": {"max_members": 10, "max_agents": 10}}

    # -- building the two tenants -----------------------------------------------------
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.orgs = {"A": cls.build_org("A"), "B": cls.build_org("B")}

    @classmethod
    def call(cls, method, path, body=None, token=None, key=None):
        headers = {"X-API-Key": key} if key is not None else None
        return cls.inst.request(method, path, body, headers=headers, token=token)

    @classmethod
    def ok(cls, resp, status, what):
        if resp[0] != status:
            raise AssertionError("%s: %s %r" % (what, resp[0], resp[2]))
        return resp[2]

    @classmethod
    def build_org(cls, tag):
        o = Org(tag)
        u = "%s-%s" % (tag.lower(), int(time.time() * 1000) % 100000)
        owner = cls.inst.login("owner-%s@example.com" % u)
        o.slug, o.tokens["owner"] = owner["org_slug"], owner["access_token"]
        o.emails["owner"] = "owner-%s@example.com" % u
        base = "/api/v1/orgs/" + o.slug
        # members of each role, and one who is removed after joining
        for role in ("admin", "member", "removed"):
            email = "%s-%s@example.com" % (role, u)
            cls.ok(cls.call("POST", base + "/members/invite",
                            {"email": email, "role": "admin" if role == "admin" else "member"},
                            token=o.tokens["owner"]), 201, "invite " + email)
            o.tokens[role] = cls.inst.login(email)["access_token"]
            o.emails[role] = email
        cls.ok(cls.call("GET", base + "/agents", token=o.tokens["removed"]), 200,
               "the removed member before removal")
        cls.ok(cls.call("DELETE", base + "/members/" + o.emails["removed"],
                        token=o.tokens["owner"]), 204, "remove a member")
        # API keys of each scope, and one revoked
        for name, scopes in (("run", ["run"]), ("manage", ["manage"]), ("revoked", ["run"])):
            k = cls.ok(cls.call("POST", base + "/keys", {"name": "%s-%s" % (name, u),
                                                         "scopes": scopes},
                                token=o.tokens["owner"]), 201, "key " + name)
            o.keys[name] = (k["id"], k["secret"], k["prefix"])
        cls.ok(cls.call("DELETE", base + "/keys/" + o.keys["revoked"][0],
                        token=o.tokens["owner"]), 204, "revoke a key")
        # a provider key
        cls.ok(cls.call("POST", base + "/providers",
                        {"provider": "openai", "api_key": "sk-%s-secret-%s" % (tag, u)},
                        token=o.tokens["admin"]), 200, "provider key")
        o.provider_mask = cls.call("GET", base + "/providers",
                                   token=o.tokens["owner"])[2]["providers"][0]["masked_key"]
        # agents in every state
        for state in ("draft", "deployed", "paused"):
            name = "%s-%s-%s" % (state, tag.lower(), u)
            cls.ok(cls.call("POST", base + "/agents", dict(WIZARD, name=name),
                            token=o.tokens["member"]), 201, "agent " + name)
            if state != "draft":
                cls.ok(cls.call("POST", base + "/agents/%s/deploy" % name,
                                token=o.tokens["member"]), 200, "deploy " + name)
            if state == "paused":
                cls.ok(cls.call("POST", base + "/agents/%s/pause" % name,
                                token=o.tokens["member"]), 200, "pause " + name)
            o.agents[state] = name
        # a logged-out token of the owner
        lo = cls.inst.login(o.emails["owner"])["access_token"]
        cls.ok(cls.call("POST", "/api/v1/auth/logout", token=lo), 204, "logout")
        o.tokens["logged-out"] = lo
        return o

    # -- callers -----------------------------------------------------------------------
    def credentials(self, caller, target, other):
        """(token, key) for a kind of caller aimed at org target."""
        t = target
        jwt = t.tokens["owner"]
        if caller == "no credentials":
            return None, None
        if caller == "tampered jwt":
            return jwt[:-4] + ("AAAA" if not jwt.endswith("AAAA") else "BBBB"), None
        if caller == "expired jwt":
            h, p, _ = jwt_decode(jwt)
            p.update(iat=p["iat"] - 7200, exp=p["iat"] - 3600)
            return jwt_sign(self.inst.jwt_secret, h, p), None
        if caller == "logged-out jwt":
            return t.tokens["logged-out"], None
        if caller == "garbage key":
            return None, "ask-" + "x" * 43
        if caller == "revoked key":
            return None, t.keys["revoked"][1]
        if caller in ("run key", "manage key"):
            return None, t.keys[caller.split()[0]][1]
        if caller in ("member", "admin", "owner"):
            return t.tokens[caller], None
        if caller == "removed member":
            return t.tokens["removed"], None
        if caller in ("other owner", "other member"):
            return other.tokens[caller.split()[1]], None
        if caller in ("other run key", "other manage key"):
            return None, other.keys[caller.split()[1]][1]
        raise AssertionError("unknown caller " + caller)

    def path_for(self, pattern, target, allowed, state):
        """The concrete path of pattern on org target: real names for a
        refused caller, made-up ones for an allowed caller of a
        destructive route."""
        fake = allowed and pattern in {p for _, p in DESTRUCTIVE}
        return (pattern.replace("{slug}", target.slug)
                .replace("{name}", "no-such-agent" if fake else target.agents[state])
                .replace("{email}", "nobody@example.com" if fake else target.emails["member"])
                .replace("{id}", "key_000000000000" if fake else target.keys["run"][0])
                .replace("{provider}", "mistral" if fake else "openai")
                .replace("{n}", "1").replace("{a}", "1").replace("{b}", "1"))

    # -- the matrix --------------------------------------------------------------------
    def test_route_table_is_the_list_this_test_covers(self):
        out = subprocess.run([DAEMON, "-R"], capture_output=True, text=True, timeout=30,
                             check=True).stdout
        daemon_routes = {tuple(line.split("\t")[:2]) for line in out.splitlines() if line}
        self.assertEqual(daemon_routes, set(ROUTE_ACCESS),
                         "routes of the daemon vs routes this test covers")

    def check_matrix(self, target, other):
        foreign = other.secrets_of_mine()
        for (method, pattern), access in sorted(ROUTE_ACCESS.items()):
            want_by_caller = {c: w[CLASSES.index(access)] for c, w in EXPECT.items()}
            states = ("draft", "deployed", "paused") if "{name}" in pattern else ("deployed",)
            for caller, want in want_by_caller.items():
                if pattern == "/api/v1/auth/logout" and want == OK and caller in (
                        "member", "admin", "owner", "removed member", "other owner",
                        "other member"):
                    continue    # would sign the caller out: covered by test_logout_matrix
                token, key = self.credentials(caller, target, other)
                for state in states:
                    path = self.path_for(pattern, target, want == OK, state)
                    body = HARMLESS_BODY.get((method, pattern))
                    status, _, answer = self.call(method, path, body, token=token, key=key)
                    with self.subTest(route="%s %s" % (method, pattern), caller=caller,
                                      state=state, target=target.tag):
                        self.assertTrue(status < 500 or status == 501,  # 501: SPEC's stubs
                                        "%s %s as %s: %s %r" % (method, path, caller, status,
                                                                answer))
                        if want == OK:
                            # a public route's own 401 (refresh with a bad token) is fine
                            if access != "public":
                                self.assertNotIn(status, (401, 403), "%s %s as %s: %r"
                                                 % (method, path, caller, answer))
                        else:
                            self.assertEqual(status, want, "%s %s as %s: %r"
                                             % (method, path, caller, answer))
                        text = repr(answer)
                        if caller.startswith("other") or caller in ("removed member",):
                            for s in target.secrets_of_mine():
                                self.assertNotIn(s, text, "%s leaked to %s" % (s, caller))
                        if not caller.startswith("other"):
                            for s in foreign:
                                self.assertNotIn(s, text, "%s of org %s leaked"
                                                 % (s, other.tag))

    def test_every_route_every_caller_on_org_a(self):
        self.check_matrix(self.orgs["A"], self.orgs["B"])

    def test_every_route_every_caller_on_org_b(self):
        self.check_matrix(self.orgs["B"], self.orgs["A"])

    def test_logout_matrix(self):
        """Logout as each kind of person signs out that token only."""
        a = self.orgs["A"]
        for who in ("owner", "admin", "member", "removed"):
            tok = self.inst.login(a.emails[who])["access_token"]
            with self.subTest(who=who):
                self.assertEqual(self.call("POST", "/api/v1/auth/logout", token=tok)[0], 204)
                self.assertEqual(self.call("GET", "/api/v1/orgs/me", token=tok)[0], 401)
                self.assertEqual(self.call("GET", "/api/v1/orgs/me",
                                           token=a.tokens[who])[0], 200)

    def test_removed_member_keeps_only_their_own_org(self):
        a = self.orgs["A"]
        orgs = assert_json(self, self.call("GET", "/api/v1/orgs", token=a.tokens["removed"]),
                           200)["orgs"]
        self.assertNotIn(a.slug, [o["slug"] for o in orgs])
        self.assertEqual(len(orgs), 1)

    def test_leak_check_finds_a_secret_in_clear(self):
        """The harness's grep for secrets works: a string stored in clear
        (a user's name) is found in the database files."""
        marker = "canary-%d-in-clear" % int(time.time() * 1e6)
        self.inst.login(self.unique_email("canary"), name=marker)
        self.inst.secrets.add(marker)
        try:
            leaks = self.inst.secret_leaks()
        finally:
            self.inst.secrets.discard(marker)
        self.assertTrue(any(re.search(r"/db/", path) for path, _ in leaks), leaks)


if __name__ == "__main__":
    main()
