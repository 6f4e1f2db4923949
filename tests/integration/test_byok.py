"""test_byok - the org's own provider keys (SPEC sections 1, 5 deploy, 7
providers), through the real lighttpd, against the fake provider.

What a client sees: the three routes (masks only, validation 422s, 404
key_not_found, 403 for members and outsiders), deploy writing
api_key_ref "org:X" before "server:X" (422 provider_key_missing when
neither), and runs sending the org's key: the fake records a SHA-256 of the
key each request presented (key_sha256), so a test can tell which key
arrived without the fake keeping it. A removed org key falls back to the
server key, or fails 502 naming the key; a provider that quotes the key
back never gets it into an answer or the daemon log; a daemon restarted
with another master key fails org-key runs 502 with a clear message.
"""

import hashlib
import json
import os
import re
import secrets
import signal
import subprocess

from harness import BUILDDIR, DAEMON, InstanceTestCase, assert_error, assert_json, main
from fakeprov import FakeProvider, header, provider_config

SERVER_OPENAI = "sk-server-openai-" + secrets.token_hex(8)
SERVER_GROQ = "gsk-server-groq-" + secrets.token_hex(8)
SYSTEM = "You are a BYOK test agent."
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def sha(key):
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def org_key(tag):
    return "sk-org-%s-%s" % (tag, secrets.token_hex(12))


def mask(key):
    return key[:3] + "..." + key[-4:] if len(key) >= 12 else "..." + key[-2:]


def uniq(tag):
    return "%s-%s" % (tag, secrets.token_hex(3))


class ByokCase(InstanceTestCase):
    """One instance whose providers all point at one fake; only openai and
    groq have server keys."""

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeProvider(log_dir=os.path.join(BUILDDIR, "tests", "tmp"))
        cls.fake.start()
        cls.addClassCleanup(cls.fake.stop)
        cls.config = {
            "providers": provider_config(cls.fake, keys={"openai": SERVER_OPENAI,
                                                         "groq": SERVER_GROQ}),
            "limits": {"max_agents": 100, "requests_per_day": 100000},
        }
        super().setUpClass()

    def setUp(self):
        self.fake.reset()
        self.token, self.slug = self.inst.user(self.unique_email("byok"))
        self.secrets = [SERVER_OPENAI, SERVER_GROQ]

    # -- helpers -------------------------------------------------------------------
    def call(self, method, path, body=None, token=None, slug=None, inst=None, **kw):
        inst = inst or self.inst
        resp = inst.request(method, "/api/v1/orgs/%s%s" % (slug or self.slug, path), body,
                            token=token or self.token, **kw)
        text = json.dumps(resp[2]) + json.dumps(resp[1])
        for s in self.secrets:
            self.assertNotIn(s, text, "a provider key in an answer: %s %r" % (resp[0], resp[2]))
        return resp

    def save_key(self, provider, key, **kw):
        self.secrets.append(key)
        body = assert_json(self, self.call("POST", "/providers",
                                           {"provider": provider, "api_key": key}, **kw), 200)
        self.assertEqual(body, {"provider": provider, "status": "saved"})

    def agent(self, name, model, fallback=None, deploy=True, **kw):
        wc = {"name": name, "step1": {"model": model}, "step2": {"system_prompt": SYSTEM}}
        if fallback:
            wc["step1"]["fallback_model"] = fallback
        assert_json(self, self.call("POST", "/agents", wc, **kw), 201)
        if deploy:
            return self.call("POST", "/agents/%s/deploy" % name, **kw)
        return None

    def deployed(self, name, model, fallback=None, **kw):
        assert_json(self, self.agent(name, model, fallback, **kw), 200)

    def yaml(self, name, **kw):
        status, _, text = self.call("GET", "/agents/%s/yaml" % name, **kw)
        self.assertEqual(status, 200, text)
        for s in self.secrets:
            self.assertNotIn(s, text, "a key in the YAML")
        return text

    def run_agent(self, name, query="hello", **kw):
        return self.call("POST", "/agents/%s/run" % name, {"query": query}, **kw)

    def requests_for(self, model, fake=None):
        return [r for r in (fake or self.fake).provider_requests()
                if isinstance(r.get("body"), dict) and r["body"].get("model") == model]


class RoutesTest(ByokCase):
    """GET, POST, DELETE /orgs/{slug}/providers."""

    def test_list_shows_only_masks_and_a_put_replaces(self):
        body = assert_json(self, self.call("GET", "/providers"), 200)
        self.assertEqual(body, {"providers": []})
        k1, k2, short = org_key("openai"), org_key("anthropic"), "gsk_abc123"
        self.save_key("openai", k1)
        self.save_key("anthropic", k2)
        self.save_key("groq", short)
        body = assert_json(self, self.call("GET", "/providers"), 200)
        self.assertEqual(set(body), {"providers"})
        got = {p["provider"]: p for p in body["providers"]}
        self.assertEqual(set(got), {"openai", "anthropic", "groq"})
        for prov, key in (("openai", k1), ("anthropic", k2), ("groq", short)):
            self.assertEqual(set(got[prov]), {"provider", "masked_key", "added_at"})
            self.assertEqual(got[prov]["masked_key"], mask(key))
            self.assertRegex(got[prov]["added_at"], RFC3339)
        self.assertEqual(got["groq"]["masked_key"], "...23")
        self.assertTrue(got["openai"]["masked_key"].startswith("sk-..."))
        # a put replaces: one entry, the new mask
        k3 = org_key("openai2")
        self.save_key("openai", k3)
        body = assert_json(self, self.call("GET", "/providers"), 200)
        masks = [p["masked_key"] for p in body["providers"] if p["provider"] == "openai"]
        self.assertEqual(masks, [mask(k3)])
        # another org sees none of them
        token2, slug2 = self.inst.user(self.unique_email("other"))
        body = assert_json(self, self.call("GET", "/providers", token=token2, slug=slug2), 200)
        self.assertEqual(body, {"providers": []})

    def test_delete_is_204_then_404_key_not_found(self):
        self.save_key("mistral", org_key("mistral"))
        status, _, body = self.call("DELETE", "/providers/mistral")
        self.assertEqual((status, body), (204, None))
        assert_error(self, self.call("DELETE", "/providers/mistral"), 404, "key_not_found")
        for name in ("openai", "ollama", "echo", "nosuch", "OPENAI"):
            with self.subTest(provider=name):
                assert_error(self, self.call("DELETE", "/providers/" + name), 404,
                             "key_not_found")
        body = assert_json(self, self.call("GET", "/providers"), 200)
        self.assertEqual(body, {"providers": []})

    def test_bad_bodies_are_422_and_never_quote_the_key(self):
        secret = "sk-never-quote-" + secrets.token_hex(8)
        self.secrets.append(secret)
        cases = [
            ({"provider": "ollama", "api_key": secret}, "provider", "no API key"),
            ({"provider": "echo", "api_key": secret}, "provider", "no API key"),
            ({"provider": "nosuch", "api_key": secret}, "provider", "one of"),
            ({"provider": "OpenAI", "api_key": secret}, "provider", "one of"),
            ({"provider": 7, "api_key": secret}, "provider", None),
            ({"api_key": secret}, "provider", "required"),
            ({"provider": "openai"}, "api_key", "required"),
            ({"provider": "openai", "api_key": ""}, "api_key", None),
            ({"provider": "openai", "api_key": "k" * 256}, "api_key", "255"),
            ({"provider": "openai", "api_key": secret + " x"}, "api_key", "spaces"),
            ({"provider": "openai", "api_key": 12345}, "api_key", "string"),
            ({"provider": "openai", "api_key": None}, "api_key", "string"),
            ({"provider": "openai", "api_key": secret, "extra": 1}, "extra", "unknown"),
        ]
        for body, field, says in cases:
            with self.subTest(body=body):
                err = assert_error(self, self.call("POST", "/providers", body), 422,
                                   "validation_error", fields=[field])
                if says:
                    problems = " ".join(d["problem"] for d in err["details"])
                    self.assertIn(says, problems, err)
        # control characters: the one string policy's 400 (test_strings.py), which
        # names the field and never quotes it
        for tail in ("\tx", "\nx", "\u007f"):
            with self.subTest(tail=tail):
                err = assert_error(self, self.call("POST", "/providers",
                                                   {"provider": "openai", "api_key": secret + tail}),
                                   400, "bad_request")
                self.assertIn("'api_key'", err["message"])
                self.assertNotIn(secret, err["message"])
        ok = assert_json(self, self.call("POST", "/providers",
                                         {"provider": "openai", "api_key": "k" * 255}), 200)
        self.assertEqual(ok["status"], "saved")
        assert_error(self, self.call("POST", "/providers", raw="{not json"), 400,
                     "invalid_json")
        assert_error(self, self.call("POST", "/providers", raw="[1]"), 422)
        assert_error(self, self.call("POST", "/providers", raw="provider=openai",
                                     headers={"Content-Type": "text/plain"}), 415)
        assert_error(self, self.call("PUT", "/providers", {"provider": "openai"}), 405)
        assert_error(self, self.call("GET", "/providers/openai"), 405)
        self.assertNotIn(secret, self.inst.read_log(self.inst.daemon_log, limit=10 ** 7))

    def test_outsiders_and_members_get_403_on_every_provider_route(self):
        self.save_key("openai", org_key("openai"))
        outsider, _ = self.inst.user(self.unique_email("outsider"))
        routes = (("GET", "/providers", None),
                  ("POST", "/providers", {"provider": "openai", "api_key": "sk-evil-123456"}),
                  ("DELETE", "/providers/openai", None))
        for method, path, body in routes:
            with self.subTest(who="outsider", method=method):
                assert_error(self, self.call(method, path, body, token=outsider), 403,
                             "forbidden")
        assert_error(self, self.call("GET", "/providers", token="not-a-token"), 401)
        # a member (not admin)
        email = self.unique_email("member")
        assert_json(self, self.call("POST", "/members/invite", {"email": email, "role": "member"}),
                    201)
        member, _ = self.inst.user(email)
        for method, path, body in routes:
            with self.subTest(who="member", method=method):
                assert_error(self, self.call(method, path, body, token=member), 403,
                             "forbidden")
        body = assert_json(self, self.call("GET", "/providers"), 200)
        self.assertEqual([p["provider"] for p in body["providers"]], ["openai"])

    def test_route_table_says_admin_only_and_no_api_key(self):
        out = subprocess.run([DAEMON, "-R"], capture_output=True, timeout=30, check=True)
        rows = [l.split("\t") for l in out.stdout.decode().splitlines()]
        mine = {(r[0], r[1]): r[2:] for r in rows if "/providers" in r[1]}
        self.assertEqual(mine, {
            ("GET", "/api/v1/orgs/{slug}/providers"): ["org", "admin", "never"],
            ("POST", "/api/v1/orgs/{slug}/providers"): ["org", "admin", "never"],
            ("DELETE", "/api/v1/orgs/{slug}/providers/{provider}"): ["org", "admin", "never"],
        })


class DeployAndRunTest(ByokCase):
    """Deploy writes the reference; a run sends the org's key."""

    def test_org_openai_key_is_referenced_and_sent_as_bearer(self):
        key = org_key("openai")
        self.save_key("openai", key)
        model = uniq("gpt-org")
        self.deployed("org-openai", "openai/" + model)
        y = self.yaml("org-openai")
        self.assertIn('api_key_ref: "org:openai"', y)
        self.assertNotIn("server:openai", y)
        assert_json(self, self.run_agent("org-openai"), 200)
        (e,) = self.requests_for(model)
        self.assertEqual(header(e, "authorization"), "<present>")
        self.assertEqual(e["key_sha256"], sha(key), "the org's key, not the server's")

    def test_org_anthropic_key_goes_in_x_api_key(self):
        model = uniq("claude-org")
        resp = self.agent("org-anthropic", "anthropic/" + model)
        err = assert_error(self, resp, 422, "provider_key_missing")
        self.assertIn("anthropic", err["message"])
        key = org_key("anthropic")
        self.save_key("anthropic", key)
        assert_json(self, self.call("POST", "/agents/org-anthropic/deploy"), 200)
        self.assertIn('api_key_ref: "org:anthropic"', self.yaml("org-anthropic"))
        assert_json(self, self.run_agent("org-anthropic"), 200)
        (e,) = self.requests_for(model)
        self.assertEqual(header(e, "x-api-key"), "<present>")
        self.assertIsNone(header(e, "authorization"))
        self.assertEqual(e["key_sha256"], sha(key))

    def test_server_key_when_the_org_has_none(self):
        model = uniq("gpt-server")
        self.deployed("srv", "openai/" + model)
        self.assertIn('api_key_ref: "server:openai"', self.yaml("srv"))
        assert_json(self, self.run_agent("srv"), 200)
        (e,) = self.requests_for(model)
        self.assertEqual(e["key_sha256"], sha(SERVER_OPENAI))

    def test_no_org_key_and_no_server_key_is_422_naming_the_provider(self):
        for prov in ("anthropic", "mistral", "cohere"):
            with self.subTest(provider=prov):
                err = assert_error(self, self.agent("nokey-" + prov, prov + "/m-1"), 422,
                                   "provider_key_missing")
                self.assertIn("'%s'" % prov, err["message"])
        # a fallback without a key fails the deploy too
        err = assert_error(self, self.agent("nokey-fb", "openai/gpt-1", "cohere/c-1"), 422,
                           "provider_key_missing")
        self.assertIn("cohere", err["message"])
        # ollama and echo need none
        self.deployed("nokey-ok", "echo/echo-1", "ollama/llama3")

    def test_fallback_uses_its_own_providers_key(self):
        ko, ka = org_key("openai"), org_key("anthropic")
        self.save_key("openai", ko)
        self.save_key("anthropic", ka)
        primary, fb_org, fb_srv = uniq("gpt-down"), uniq("claude-fb"), uniq("groq-fb")
        self.fake.control(per_model={primary: {"mode": "fail", "status": 503}})
        self.deployed("fb-org", "openai/" + primary, "anthropic/" + fb_org)
        y = self.yaml("fb-org")
        self.assertIn('api_key_ref: "org:openai"', y)
        self.assertIn('api_key_ref: "org:anthropic"', y)
        body = assert_json(self, self.run_agent("fb-org"), 200)
        self.assertEqual(body["model"], "anthropic/" + fb_org)
        self.assertEqual([e["key_sha256"] for e in self.requests_for(primary)], [sha(ko)])
        self.assertEqual([e["key_sha256"] for e in self.requests_for(fb_org)], [sha(ka)])
        # a fallback on a provider with only a server key uses the server's
        self.deployed("fb-srv", "openai/" + primary, "groq/" + fb_srv)
        self.assertIn('api_key_ref: "server:groq"', self.yaml("fb-srv"))
        body = assert_json(self, self.run_agent("fb-srv"), 200)
        self.assertEqual(body["model"], "groq/" + fb_srv)
        self.assertEqual([e["key_sha256"] for e in self.requests_for(fb_srv)],
                         [sha(SERVER_GROQ)])

    def test_removed_org_key_falls_back_to_the_server_key(self):
        key = org_key("openai")
        self.save_key("openai", key)
        model = uniq("gpt-removed")
        self.deployed("rm-srv", "openai/" + model)
        assert_json(self, self.run_agent("rm-srv"), 200)
        self.assertEqual(self.call("DELETE", "/providers/openai")[0], 204)
        assert_json(self, self.run_agent("rm-srv"), 200)
        self.assertEqual([e["key_sha256"] for e in self.requests_for(model)],
                         [sha(key), sha(SERVER_OPENAI)])
        # saved again: the next run uses it, no redeploy needed
        key2 = org_key("openai-again")
        self.save_key("openai", key2)
        assert_json(self, self.run_agent("rm-srv"), 200)
        self.assertEqual(self.requests_for(model)[-1]["key_sha256"], sha(key2))

    def test_removed_org_key_without_a_server_key_is_502_naming_it(self):
        key = org_key("anthropic")
        self.save_key("anthropic", key)
        model = uniq("claude-removed")
        self.deployed("rm-none", "anthropic/" + model)
        assert_json(self, self.run_agent("rm-none"), 200)
        self.assertEqual(self.call("DELETE", "/providers/anthropic")[0], 204)
        self.fake.clear()
        for mode in ("run", "test"):
            resp = self.call("POST", "/agents/rm-none/" + mode, {"query": "hi"})
            err = assert_error(self, resp, 502, "provider_error")
            self.assertIn("anthropic key was removed", err["message"])
        self.assertEqual(self.requests_for(model), [], "no call without a key")
        self.inst.health()
        # a paused agent redeployed now has no key at all: 422
        assert_json(self, self.call("POST", "/agents/rm-none/pause"), 200)
        assert_error(self, self.call("POST", "/agents/rm-none/deploy"), 422,
                     "provider_key_missing")
        # with the key back, the redeploy works and runs
        self.save_key("anthropic", key)
        assert_json(self, self.call("POST", "/agents/rm-none/deploy"), 200)
        assert_json(self, self.run_agent("rm-none"), 200)

    def test_redeploy_recompiles_when_the_reference_changed(self):
        model = uniq("gpt-redeploy")
        self.deployed("redeploy", "openai/" + model)
        self.assertIn('"server:openai"', self.yaml("redeploy"))
        assert_json(self, self.call("POST", "/agents/redeploy/pause"), 200)
        key = org_key("openai")
        self.save_key("openai", key)
        assert_json(self, self.call("POST", "/agents/redeploy/deploy"), 200)
        self.assertIn('"org:openai"', self.yaml("redeploy"))
        assert_json(self, self.run_agent("redeploy"), 200)
        self.assertEqual(self.requests_for(model)[-1]["key_sha256"], sha(key))

    def test_a_provider_quoting_the_key_back_never_gets_it_into_an_answer(self):
        key = org_key("openai")
        self.save_key("openai", key)
        models = {}
        for status, quoted in ((401, key), (400, key), (400, key[:-3] + "***"),
                               (500, "..." + key[9:])):
            m = uniq("gpt-quote")
            models[m] = {"mode": "fail", "status": status,
                         "error_message": "Incorrect API key provided: %s." % quoted}
        self.fake.control(per_model=models)
        for i, m in enumerate(models):
            name = "quote-%d" % i
            self.deployed(name, "openai/" + m)
            # a 400 is the request's error (422, the provider's message, scrubbed)
            status = models[m]["status"]
            err = assert_error(self, self.run_agent(name), *((422, "provider_rejected_request")
                               if status == 400 else (502, "provider_error")))
            for j in range(len(key) - 7):
                self.assertNotIn(key[j:j + 8], err["message"], err)
        log = self.inst.read_log(self.inst.daemon_log, limit=10 ** 7)
        self.assertNotIn(key, log)


class MasterKeyTest(ByokCase):
    """The same data directory under a daemon with another master key."""

    def test_other_master_key_fails_org_key_runs_with_502(self):
        key = org_key("openai")
        self.save_key("openai", key)
        model = uniq("gpt-master")
        self.deployed("mk", "openai/" + model)
        assert_json(self, self.run_agent("mk"), 200)
        inst = self.inst
        inst.kill_daemon(signal.SIGTERM)
        with open(inst.master_key_file, "wb") as f:
            f.write(secrets.token_bytes(32))
        os.chmod(inst.master_key_file, 0o600)
        inst.restart_daemon()
        self.fake.clear()
        err = assert_error(self, self.run_agent("mk"), 502, "provider_error")
        self.assertIn("master key", err["message"])
        self.assertIn("openai", err["message"])
        self.assertEqual(self.requests_for(model), [], "never a call with a garbage key")
        # the listing still works (masks are not sealed); a new save works again
        body = assert_json(self, self.call("GET", "/providers"), 200)
        self.assertEqual(body["providers"][0]["masked_key"], mask(key))
        key2 = org_key("openai-new-master")
        self.save_key("openai", key2)
        assert_json(self, self.run_agent("mk"), 200)
        self.assertEqual(self.requests_for(model)[-1]["key_sha256"], sha(key2))


if __name__ == "__main__":
    main()
