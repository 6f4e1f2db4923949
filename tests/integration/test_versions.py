"""test_versions - every deploy of a changed config is a numbered version
that can be listed, read, compared and rolled back to (issue 12, SPEC
section 9), through the real front server.

Asserted as a client sees it: the version in deploy, run and test answers
and in usage ?by=version; the list (newest first, live flag, ?limit=,
?before=), one version (its config and YAML "N.0.0"), the diff (validation
paths); rollback of a deployed agent while 16 threads run it (every answer
is v1's or v2's, each thread sees v2 then v1 and never back, and no request
sent after the rollback's 200 is answered by v2); rollback of a paused
agent (config only); retention with max_versions 3; the error envelopes;
and a SIGKILL of the daemon in the middle of rollbacks, after which the
registry serves the version the store says is live."""

import signal
import threading
import time

from harness import InstanceTestCase, assert_error, assert_json, main, poll

WC = {"display_name": "Versioned", "step1": {"model": "echo/echo-1"},
      "step2": {"system_prompt": "first prompt", "tone": "professional"}}
BIG_LIMIT = {"limits": {"requests_per_day": 10000000}}


class Agent:
    """One agent of one org, with short calls."""

    def __init__(self, inst, tc, token, slug, name):
        self.inst, self.tc, self.token = inst, tc, token
        self.base = "/api/v1/orgs/%s/agents/%s" % (slug, name)
        self.slug = slug

    def call(self, method, suffix="", body=None, **kw):
        return self.inst.request(method, self.base + suffix, body, token=self.token, **kw)

    def ok(self, method, suffix="", body=None, status=200):
        return assert_json(self.tc, self.call(method, suffix, body), status)

    def deploy(self):
        return self.ok("POST", "/deploy")

    def pause(self):
        return self.ok("POST", "/pause")

    def prompt(self, text):
        return self.ok("PUT", "", {"step2": {"system_prompt": text}})

    def run(self, mode="run"):
        return self.ok("POST", "/" + mode, {"query": "hi"})


class VersionsTest(InstanceTestCase):
    config = BIG_LIMIT

    def new_agent(self, wc=None, inst=None):
        inst = inst or self.inst
        token, slug = inst.user(self.unique_email("ver"))
        name = "bot-%d" % (len(getattr(self, "_names", ())) + 1)
        self._names = getattr(self, "_names", ()) + (name,)
        body = dict(wc or WC, name=name)
        status, _, answer = inst.request("POST", "/api/v1/orgs/%s/agents" % slug, body,
                                         token=token)
        self.assertEqual(status, 201, answer)
        return Agent(inst, self, token, slug, name)

    def two_versions(self, inst=None):
        a = self.new_agent(inst=inst)
        self.assertEqual(a.deploy()["version"], 1)
        a.pause()
        a.prompt("second prompt")
        self.assertEqual(a.deploy()["version"], 2)
        return a

    def test_versions_are_made_listed_read_and_compared(self):
        a = self.new_agent()
        got = a.ok("GET")
        self.assertIsNone(got["version"])
        self.assertIs(got["draft_changed"], True)
        self.assertEqual(a.deploy()["version"], 1)
        self.assertEqual(a.run()["version"], 1)
        self.assertEqual(a.run("test")["version"], 1)
        a.pause()
        self.assertEqual(a.deploy()["version"], 1, "an unchanged redeploy makes no version")
        a.pause()
        a.prompt("second prompt")
        got = a.ok("GET")
        self.assertEqual((got["version"], got["draft_changed"]), (1, True))
        self.assertEqual(a.deploy()["version"], 2)
        got = a.ok("GET")
        self.assertEqual((got["version"], got["draft_changed"]), (2, False))
        self.assertEqual(a.run()["version"], 2)

        versions = a.ok("GET", "/versions")["versions"]
        self.assertEqual([(v["version"], v["live"]) for v in versions], [(2, True), (1, False)])
        for v in versions:
            self.assertEqual(set(v), {"version", "created_at", "created_by", "config_hash",
                                      "live"})
            self.assertRegex(v["config_hash"], "^[0-9a-f]{64}$")
            self.assertRegex(v["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            self.assertTrue(v["created_by"].startswith("ver-"))
        self.assertNotEqual(versions[0]["config_hash"], versions[1]["config_hash"])
        page = a.ok("GET", "/versions?limit=1")["versions"]
        self.assertEqual([v["version"] for v in page], [2])
        page = a.ok("GET", "/versions?limit=1&before=2")["versions"]
        self.assertEqual([v["version"] for v in page], [1])

        one = a.ok("GET", "/versions/1")
        self.assertEqual(one["wizard_config"]["step2"]["system_prompt"], "first prompt")
        self.assertIn('version: "1.0.0"', one["yaml"])
        self.assertIs(one["live"], False)
        self.assertIn('version: "2.0.0"', a.call("GET", "/yaml")[2])

        diff = a.ok("GET", "/versions/1/diff/2")
        self.assertEqual(diff["changes"], [{"path": "step2.system_prompt",
                                            "from": "first prompt", "to": "second prompt"}])
        self.assertEqual(a.ok("GET", "/versions/2/diff/2")["changes"], [])

        usage = assert_json(self, self.inst.request(
            "GET", "/api/v1/orgs/%s/usage?days=1&by=version" % a.slug, token=a.token), 200)
        rows = {(r["agent"], r["version"]): r["requests"] for r in usage["by_version"]}
        name = a.base.rsplit("/", 1)[1]
        self.assertEqual(rows, {(name, 1): 1, (name, 2): 1})
        plain = assert_json(self, self.inst.request(
            "GET", "/api/v1/orgs/%s/usage?days=1" % a.slug, token=a.token), 200)
        self.assertNotIn("by_version", plain)

    def test_bad_requests_get_the_envelope(self):
        a = self.new_agent()
        a.deploy()
        for suffix in ("/versions/0", "/versions/abc", "/versions/99", "/versions/1/diff/99",
                       "/versions/99999999999", "/versions/-1"):
            assert_error(self, a.call("GET", suffix), 404, "version_not_found")
        for q in ("limit=0", "limit=101", "limit=x", "before=0", "before=-2", "limit="):
            assert_error(self, a.call("GET", "/versions?" + q), 422, "validation_error")
        for body in ({}, {"version": "1"}, {"version": 0}, {"version": 1.5},
                     {"version": 1, "extra": 1}, {"version": None}):
            assert_error(self, a.call("POST", "/rollback", body), 422, "validation_error",
                         fields=None)
        assert_error(self, a.call("POST", "/rollback", {"version": 999999}), 404,
                     "version_not_found")
        assert_error(self, a.call("POST", "/rollback", raw="[1]"), 422)
        assert_error(self, a.call("POST", "/rollback", raw="{"), 400, "invalid_json")
        assert_error(self, a.call("POST", "/rollback", raw="{}",
                                  headers={"Content-Type": "text/plain"}), 415)
        missing = Agent(self.inst, self, a.token, a.slug, "no-such-agent")
        assert_error(self, missing.call("GET", "/versions"), 404, "agent_not_found")
        assert_error(self, missing.call("POST", "/rollback", {"version": 1}), 404,
                     "agent_not_found")
        assert_error(self, a.call("DELETE", "/versions"), 405)

    def test_rollback_of_paused_agent_restores_only_the_config(self):
        a = self.two_versions()
        a.pause()
        got = a.ok("POST", "/rollback", {"version": 1})
        self.assertEqual((got["status"], got["version"], got["draft_changed"]),
                         ("paused", 1, False))
        self.assertEqual(got["wizard_config"]["step2"]["system_prompt"], "first prompt")
        assert_error(self, a.call("POST", "/run", {"query": "hi"}), 400, "agent_not_deployed")
        self.assertEqual(a.deploy()["version"], 1)
        self.assertEqual(a.run()["version"], 1)
        self.assertEqual([(v["version"], v["live"]) for v in a.ok("GET", "/versions")["versions"]],
                         [(2, False), (1, True)])

    def test_rollback_to_a_version_whose_provider_key_is_gone_changes_nothing(self):
        a = self.new_agent(dict(WC, step1={"model": "openai/gpt-4o-mini"}))
        providers = "/api/v1/orgs/%s/providers" % a.slug
        key = "sk-versions-test-0123456789"
        assert_json(self, self.inst.request("POST", providers,
                                            {"provider": "openai", "api_key": key},
                                            token=a.token), 200)
        self.assertEqual(a.deploy()["version"], 1)
        a.pause()
        a.ok("PUT", "", {"step1": {"model": "echo/echo-1"}})
        self.assertEqual(a.deploy()["version"], 2)
        status, _, _ = self.inst.request("DELETE", providers + "/openai", token=a.token)
        self.assertEqual(status, 204)
        before = a.ok("GET")
        assert_error(self, a.call("POST", "/rollback", {"version": 1}), 422,
                     "provider_key_missing")
        self.assertEqual(a.ok("GET"), before)
        self.assertEqual(a.run()["version"], 2)

    def test_rollback_while_16_threads_run(self):
        a = self.two_versions()
        stop = threading.Event()
        rolled = {}
        seen = [[] for _ in range(16)]
        errors = []

        def runner(i):
            while not stop.is_set():
                start = time.monotonic()
                status, _, body = a.call("POST", "/run", {"query": "q%d" % i})
                if status != 200:
                    errors.append((status, body))
                    return
                seen[i].append((start, body["version"]))

        threads = [threading.Thread(target=runner, args=(i,), daemon=True) for i in range(16)]
        for t in threads:
            t.start()
        poll(lambda: all(len(s) >= 3 for s in seen) or errors, 60, what="runs before")
        got = a.ok("POST", "/rollback", {"version": 1})
        rolled["at"] = time.monotonic()
        self.assertEqual((got["status"], got["version"]), ("deployed", 1))
        count = sum(len(s) for s in seen)
        poll(lambda: sum(len(s) for s in seen) >= count + 48 or errors, 60, what="runs after")
        stop.set()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        for i, s in enumerate(seen):
            versions = [v for _, v in s]
            self.assertTrue(set(versions) <= {1, 2}, versions)
            first_v1 = versions.index(1) if 1 in versions else len(versions)
            self.assertEqual(versions[first_v1:], [1] * (len(versions) - first_v1),
                             "thread %d went back to v2: %s" % (i, versions))
            late = [v for start, v in s if start > rolled["at"]]
            self.assertEqual(set(late) - {1}, set(), "thread %d: v2 after the rollback" % i)
        self.assertIn(2, [v for s in seen for _, v in s])
        self.assertEqual(a.run()["version"], 1)


class RetentionTest(InstanceTestCase):
    config = {"agents": {"max_versions": 3}}

    def test_only_max_versions_are_kept(self):
        token, slug = self.inst.user(self.unique_email("ret"))
        a = Agent(self.inst, self, token, slug, "kept")
        assert_json(self, self.inst.request("POST", "/api/v1/orgs/%s/agents" % slug,
                                            dict(WC, name="kept"), token=token), 201)
        self.assertEqual(a.deploy()["version"], 1)
        for n in range(2, 6):
            a.pause()
            a.prompt("prompt %d" % n)
            self.assertEqual(a.deploy()["version"], n)
        self.assertEqual([v["version"] for v in a.ok("GET", "/versions")["versions"]], [5, 4, 3])
        assert_error(self, a.call("GET", "/versions/2"), 404, "version_not_found")
        assert_error(self, a.call("POST", "/rollback", {"version": 1}), 404, "version_not_found")
        # deleting the agent deletes its versions: a new one starts at 1
        self.assertEqual(a.call("DELETE")[0], 204)
        assert_json(self, self.inst.request("POST", "/api/v1/orgs/%s/agents" % slug,
                                            dict(WC, name="kept"), token=token), 201)
        self.assertEqual(a.deploy()["version"], 1)
        self.assertEqual([v["version"] for v in a.ok("GET", "/versions")["versions"]], [1])


class CrashTest(InstanceTestCase):
    config = BIG_LIMIT

    def test_sigkill_mid_rollback_then_restart_serves_the_live_version(self):
        inst = self.inst
        token, slug = inst.user(self.unique_email("crash"))
        a = Agent(inst, self, token, slug, "crashy")
        assert_json(self, inst.request("POST", "/api/v1/orgs/%s/agents" % slug,
                                       dict(WC, name="crashy"), token=token), 201)
        a.deploy()
        a.pause()
        a.prompt("second prompt")
        a.deploy()
        stop = threading.Event()
        acked = []

        def flipper():
            n = 1
            while not stop.is_set():
                try:
                    status, _, _ = a.call("POST", "/rollback", {"version": n})
                except OSError:
                    continue
                if status == 200:
                    acked.append(n)
                    n = 3 - n

        t = threading.Thread(target=flipper, daemon=True)
        t.start()
        poll(lambda: len(acked) >= 20, 60, what="rollbacks before the kill")
        inst.kill_daemon(signal.SIGKILL)
        stop.set()
        t.join(30)
        inst.restart_daemon()
        got = a.ok("GET")
        live = got["version"]
        self.assertEqual(got["status"], "deployed")
        self.assertIn(live, (1, 2))
        if acked:
            # the last acknowledged rollback, or one the kill cut short after it
            self.assertIn(live, (acked[-1], 3 - acked[-1]))
        listed = [v["version"] for v in a.ok("GET", "/versions")["versions"] if v["live"]]
        self.assertEqual(listed, [live])
        want = {1: "first prompt", 2: "second prompt"}[live]
        self.assertEqual(got["wizard_config"]["step2"]["system_prompt"], want)
        for _ in range(8):      # several calls, so both workers answer
            self.assertEqual(a.run()["version"], live)


if __name__ == "__main__":
    main()
