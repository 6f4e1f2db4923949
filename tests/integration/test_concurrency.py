"""test_concurrency - transitions are atomic (SPEC section 5): under any
interleaving of concurrent deploy / pause / put / delete calls on one agent,
every call takes effect completely or fails with the right 409, and the
stored state, the registry and the answers agree. Plan limits hold under
concurrent creates."""

import random

from harness import InstanceTestCase, assert_error, assert_json, main, run_concurrently

WC = {"name": "hot", "display_name": "Hot", "step1": {"model": "echo/echo-1"},
      "step2": {"system_prompt": "initial prompt", "tone": "technical"}}

# what each call may answer while others race it (status, error code)
ALLOWED = {
    "create": {(201, None), (409, "agent_exists")},
    "deploy": {(200, None), (409, "already_deployed"), (404, "agent_not_found")},
    "pause": {(200, None), (409, "already_paused"), (409, "invalid_transition"),
              (404, "agent_not_found")},
    "put": {(200, None), (409, "agent_deployed"), (404, "agent_not_found")},
    "delete": {(204, None), (404, "agent_not_found")},
    "get": {(200, None), (404, "agent_not_found")},
}


class ConcurrencyTest(InstanceTestCase):
    config = {"server": {"workers": 3, "threads": 8}}

    def setUp(self):
        self.token, self.slug = self.inst.user(self.unique_email("race"))
        self.base = "/api/v1/orgs/%s/agents" % self.slug

    def do(self, op, name="hot", value=None):
        """One call; returns (op, status, error code or None, body)."""
        path = "%s/%s" % (self.base, name)
        if op == "create":
            resp = self.inst.request("POST", self.base, dict(WC, name=name), token=self.token)
        elif op == "put":
            resp = self.inst.request("PUT", path, {"step2": {"system_prompt": value}},
                                     token=self.token)
        elif op in ("deploy", "pause"):
            resp = self.inst.request("POST", path + "/" + op, token=self.token)
        elif op == "delete":
            resp = self.inst.request("DELETE", path, token=self.token)
        else:
            resp = self.inst.request("GET", path, token=self.token)
        status, _, body = resp
        code = body.get("error") if isinstance(body, dict) and status >= 400 else None
        if status >= 400:
            assert_error(self, resp, status)
        return op, status, code, body, value

    def check_allowed(self, results):
        for op, status, code, body, _ in results:
            self.assertIn((status, code), ALLOWED[op],
                          "%s answered %s %r" % (op, status, body))

    def storm(self, ops, threads, per_thread, seed):
        """threads threads each doing per_thread random ops; return every answer."""
        def worker(t):
            rnd = random.Random(seed * 1000 + t)
            out = []
            for i in range(per_thread):
                op = rnd.choice(ops)
                out.append(self.do(op, value="prompt-%d-%d" % (t, i) if op == "put" else None))
            return out
        per = run_concurrently([lambda t=t: worker(t) for t in range(threads)])
        return [r for rs in per for r in rs]

    def final_state(self):
        status, _, body = self.inst.request("GET", self.base + "/hot", token=self.token)
        if status == 404:
            return None
        self.assertEqual(status, 200, body)
        return body

    def check_registry_agrees(self, agent, others_deployed=0):
        """Registry membership == stored status, and the YAML the agent is
        served from is the one compiled from its stored config."""
        deployed = agent is not None and agent["status"] == "deployed"
        self.assertEqual(self.inst.registry_count(), others_deployed + (1 if deployed else 0),
                         "registry disagrees with stored status %r"
                         % (agent and agent["status"]))
        if agent is not None:
            status, _, text = self.inst.request("GET", self.base + "/hot/yaml", token=self.token)
            self.assertEqual(status, 200, text)
            self.assertIn(agent["wizard_config"]["step2"]["system_prompt"], text,
                          "the YAML is not the stored config's")

    def test_deploy_pause_put_storm_on_one_agent(self):
        assert_json(self, self.inst.request("POST", self.base, WC, token=self.token), 201)
        n0 = self.inst.registry_count()
        results = self.storm(["deploy", "pause", "put", "get"], threads=16, per_thread=25, seed=1)
        self.check_allowed(results)
        ok = lambda op: [r for r in results if r[0] == op and r[1] < 300]
        deploys, pauses, puts = len(ok("deploy")), len(ok("pause")), len(ok("put"))
        # each successful pause undid exactly one successful deploy
        self.assertIn(deploys - pauses, (0, 1), "deploys %d, pauses %d" % (deploys, pauses))
        agent = self.final_state()
        self.assertIsNotNone(agent)
        expected = ("draft" if deploys == 0 else
                    "deployed" if deploys == pauses + 1 else "paused")
        self.assertEqual(agent["status"], expected,
                         "deploys %d, pauses %d, puts %d" % (deploys, pauses, puts))
        # the stored prompt is the initial one or one a PUT was told it set
        acked = {r[4] for r in ok("put")}
        prompt = agent["wizard_config"]["step2"]["system_prompt"]
        self.assertTrue(prompt in acked or (not acked and prompt == "initial prompt"),
                        "stored prompt %r was never acknowledged" % prompt)
        self.assertNotIn(prompt, {r[4] for r in results if r[0] == "put" and r[1] >= 300},
                         "a refused PUT took effect")
        self.assertEqual(agent["wizard_config"]["step1"], WC["step1"])
        self.assertEqual(agent["wizard_config"]["step2"]["tone"], "technical")
        self.check_registry_agrees(agent, n0)
        # nothing went stale: the next transition works
        nxt = "pause" if agent["status"] == "deployed" else "deploy"
        assert_json(self, self.inst.request("POST", self.base + "/hot/" + nxt, token=self.token),
                    200)

    def test_full_storm_with_delete_and_create(self):
        n0 = self.inst.registry_count()
        assert_json(self, self.inst.request("POST", self.base, WC, token=self.token), 201)
        results = self.storm(["deploy", "pause", "put", "delete", "create", "get"],
                             threads=16, per_thread=30, seed=2)
        self.check_allowed(results)
        ok = lambda op: sum(1 for r in results if r[0] == op and r[1] < 300)
        agent = self.final_state()
        # one create before the storm: existence is 1 + creates - deletes
        self.assertEqual(1 + ok("create") - ok("delete"), 0 if agent is None else 1,
                         "creates %d, deletes %d, exists %s"
                         % (ok("create"), ok("delete"), agent is not None))
        self.check_registry_agrees(agent, n0)
        lst = assert_json(self, self.inst.request("GET", self.base, token=self.token), 200)
        self.assertEqual([a["name"] for a in lst["agents"]], [] if agent is None else ["hot"])
        if agent is not None:
            self.assertIn(agent["status"], ("draft", "deployed", "paused"))
            self.assertEqual(lst["agents"][0]["status"], agent["status"])
        # and it is usable afterwards
        if agent is None:
            assert_json(self, self.inst.request("POST", self.base, WC, token=self.token), 201)
        self.inst.request("POST", self.base + "/hot/pause", token=self.token)
        assert_json(self, self.inst.request("POST", self.base + "/hot/deploy", token=self.token),
                    200)
        self.assertEqual(self.inst.registry_count(), n0 + 1)
        self.assertEqual(self.inst.request("DELETE", self.base + "/hot", token=self.token)[0], 204)
        self.assertEqual(self.inst.registry_count(), n0)

    def test_same_transition_raced_has_one_winner(self):
        assert_json(self, self.inst.request("POST", self.base, WC, token=self.token), 201)
        for op, win, lose in (("deploy", 200, "already_deployed"),
                              ("pause", 200, "already_paused"),
                              ("deploy", 200, "already_deployed"),
                              ("delete", 204, "agent_not_found")):
            with self.subTest(op=op):
                results = run_concurrently([lambda: self.do(op)] * 24)
                self.check_allowed(results)
                self.assertEqual(sum(1 for r in results if r[1] == win), 1,
                                 [r[1:3] for r in results])
                self.assertTrue(all(r[2] == lose for r in results if r[1] != win),
                                [r[1:3] for r in results])
        self.assertIsNone(self.final_state())

    def test_concurrent_creates_of_one_name(self):
        results = run_concurrently([lambda: self.do("create")] * 24)
        self.check_allowed(results)
        self.assertEqual(sum(1 for r in results if r[1] == 201), 1, [r[1:3] for r in results])
        lst = assert_json(self, self.inst.request("GET", self.base, token=self.token), 200)
        self.assertEqual([a["name"] for a in lst["agents"]], ["hot"])

    def test_concurrent_creates_never_exceed_max_agents(self):
        for existing in (0, 3):
            with self.subTest(existing=existing):
                tok, slug = self.inst.user(self.unique_email("limit"))
                base = "/api/v1/orgs/%s/agents" % slug
                for i in range(existing):
                    assert_json(self, self.inst.request("POST", base, dict(WC, name="pre-%d" % i),
                                                        token=tok), 201)

                def create(i):
                    resp = self.inst.request("POST", base, dict(WC, name="c-%d" % i), token=tok)
                    if resp[0] != 201:
                        assert_error(self, resp, 409, "plan_limit_reached")
                    return "c-%d" % i, resp[0]
                results = run_concurrently([lambda i=i: create(i) for i in range(30)])
                created = sorted(n for n, s in results if s == 201)
                self.assertEqual(len(created), 5 - existing, results)
                lst = assert_json(self, self.inst.request("GET", base, token=tok), 200)
                names = sorted(a["name"] for a in lst["agents"])
                self.assertEqual(names, sorted(created + ["pre-%d" % i for i in range(existing)]))

    def test_many_agents_in_many_orgs_at_once(self):
        """No conflicts here, so every call must succeed: deadlocks inside
        the store are retried, never surfaced."""
        n0 = self.inst.registry_count()
        users = [self.inst.user(self.unique_email("org%d" % i)) for i in range(6)]

        def lifecycle(tok, slug, name):
            base = "/api/v1/orgs/%s/agents" % slug
            path = base + "/" + name
            steps = [("POST", base, dict(WC, name=name), 201), ("POST", path + "/deploy", None, 200),
                     ("POST", path + "/pause", None, 200),
                     ("PUT", path, {"step2": {"system_prompt": name}}, 200),
                     ("POST", path + "/deploy", None, 200), ("GET", path, None, 200)]
            for i in range(3):
                for method, p, body, want in steps:
                    resp = self.inst.request(method, p, body, token=tok)
                    if resp[0] != want:
                        return "%s %s: %s %r" % (method, p, resp[0], resp[2])
                if i < 2:
                    resp = self.inst.request("DELETE", path, token=tok)
                    if resp[0] != 204:
                        return "DELETE %s: %s %r" % (path, resp[0], resp[2])
            return None
        jobs = [lambda t=t, s=s, n=n: lifecycle(t, s, n)
                for t, s in users for n in ("alpha", "beta", "gamma")]
        errors = [e for e in run_concurrently(jobs) if e]
        self.assertEqual(errors, [])
        self.assertEqual(self.inst.registry_count(), n0 + len(jobs))
        for tok, slug in users:
            lst = assert_json(self, self.inst.request("GET", "/api/v1/orgs/%s/agents" % slug,
                                                      token=tok), 200)
            self.assertEqual(sorted((a["name"], a["status"]) for a in lst["agents"]),
                             [("alpha", "deployed"), ("beta", "deployed"), ("gamma", "deployed")])
        # leave the registry as we found it
        for tok, slug in users:
            for n in ("alpha", "beta", "gamma"):
                self.inst.request("DELETE", "/api/v1/orgs/%s/agents/%s" % (slug, n), token=tok)
        self.assertEqual(self.inst.registry_count(), n0)


if __name__ == "__main__":
    main()
