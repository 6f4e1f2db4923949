"""test_accounting - what run and test count (SPEC sections 6 and 7, issue
3): run counts one request and its tokens for the org's UTC day and the
agent, test counts nothing; the daily limit holds under concurrency; the
X-RateLimit headers; GET /orgs/{slug}/usage and its validation; and how many
runs the default configuration keeps in flight against a slow provider.

The agents run against the fake provider (tests/fake_provider.py) or the
offline echo provider; the instance and the helpers are test_execution's.
"""

import datetime
import sys
import time

from harness import assert_error, main, merge_config, run_concurrently
from fakeprov import prompt_words, words
import test_execution as te

LIMIT = 50
USAGE_KEYS = {"period_days", "total_requests", "total_tokens", "daily_limit", "remaining_today",
              "by_agent", "by_day"}


def utc_today():
    return datetime.datetime.now(datetime.timezone.utc).date()


class AccountingTest(te.PipelineCase):
    overrides = {"limits": {"requests_per_day": LIMIT}}

    def remaining(self, resp):
        """X-RateLimit-Remaining of an answer (after checking all three)."""
        self.check_rate_headers(resp[1])
        return int(resp[1]["x-ratelimit-remaining"])

    def limit_of(self, resp):
        return int(resp[1]["x-ratelimit-limit"])

    def check_usage(self, u, days=30, today=None):
        """The usage document's shape; by_day is every day of the period,
        oldest first, ending today (UTC). Returns {date: (requests, tokens)}."""
        self.assertEqual(set(u), USAGE_KEYS, u)
        self.assertEqual(u["period_days"], days)
        for k in ("total_requests", "total_tokens", "daily_limit", "remaining_today"):
            self.assertIs(type(u[k]), int, k)
        self.assertIsInstance(u["by_agent"], list)
        for a in u["by_agent"]:
            self.assertEqual(set(a), {"agent", "requests", "tokens"}, a)
        self.assertEqual(len(u["by_day"]), days, u["by_day"])
        today = today or utc_today()
        dates = [d["date"] for d in u["by_day"]]
        self.assertEqual(dates, [(today - datetime.timedelta(days=days - 1 - i)).isoformat()
                                 for i in range(days)], "every day of the period, oldest first")
        for d in u["by_day"]:
            self.assertEqual(set(d), {"date", "requests", "tokens"}, d)
        self.assertEqual(u["total_requests"], sum(d["requests"] for d in u["by_day"]))
        self.assertEqual(u["total_tokens"], sum(d["tokens"] for d in u["by_day"]))
        return {d["date"]: (d["requests"], d["tokens"]) for d in u["by_day"]}

    def by_agent(self, u):
        """{agent: (requests, tokens)} without all-zero rows."""
        return {a["agent"]: (a["requests"], a["tokens"]) for a in u["by_agent"]
                if a["requests"] or a["tokens"]}

    # -- run counts, test does not ----------------------------------------------
    def test_run_counts_and_test_does_not(self):
        self.agent("counted", "echo/echo-1")
        self.agent("counted-llm", "openai/gpt-4o-mini")
        self.agent("tested-only", "echo/echo-1")
        plan = [("counted", "run"), ("counted", "test"), ("counted-llm", "run"),
                ("tested-only", "test"), ("counted", "run"), ("counted-llm", "test"),
                ("counted", "run"), ("counted-llm", "run"), ("tested-only", "test")]
        expected = {"counted": [0, 0], "counted-llm": [0, 0]}
        left = LIMIT
        for i, (name, mode) in enumerate(plan):
            self.fake.clear()
            resp = self.execute(name, "question number %d for %s" % (i, name), mode=mode)
            body = self.check_answer(resp)
            self.assertGreater(body["tokens_used"], 0)
            if name == "counted-llm":
                e = self.one_request()
                self.assertEqual(body["tokens_used"], prompt_words(e) + words(body["answer"]))
            if mode == "run":
                left -= 1
                expected[name][0] += 1
                expected[name][1] += body["tokens_used"]
            self.assertEqual(self.limit_of(resp), LIMIT)
            self.assertEqual(self.remaining(resp), left,
                             "X-RateLimit-Remaining after %s #%d" % (mode, i))

        total_r = sum(v[0] for v in expected.values())
        total_t = sum(v[1] for v in expected.values())
        self.assertEqual(total_r, 5)
        today = utc_today().isoformat()
        u = self.usage()
        days = self.check_usage(u)
        self.assertEqual((u["total_requests"], u["total_tokens"]), (total_r, total_t), u)
        self.assertEqual(u["daily_limit"], LIMIT)
        self.assertEqual(u["remaining_today"], LIMIT - total_r)
        self.assertEqual(self.by_agent(u), {k: tuple(v) for k, v in expected.items()})
        self.assertTrue({a["agent"] for a in u["by_agent"]} <= {"counted", "counted-llm",
                                                                "tested-only"}, u["by_agent"])
        self.assertEqual(days[today], (total_r, total_t))
        self.assertTrue(all(v == (0, 0) for d, v in days.items() if d != today), days)

        u1 = self.usage(days=1)
        self.check_usage(u1, days=1)
        self.assertEqual((u1["total_requests"], u1["total_tokens"]), (total_r, total_t))
        self.assertEqual(self.by_agent(u1), self.by_agent(u))

    def test_refused_runs_count_nothing(self):
        self.agent("refusals", "echo/echo-1")
        self.agent("drafty", "echo/echo-1", deploy=False)
        self.answer("refusals", "one that counts")
        for resp in (self.execute("drafty", "hi"),
                     self.execute("nobody", "hi"),
                     self.call("POST", "/agents/refusals/run", {"query": ""}),
                     self.call("POST", "/agents/refusals/run", {"query": "hi", "bogus": 1})):
            self.assertIn(resp[0], (400, 404, 422), resp)
        self.assertEqual(self.remaining(self.execute("refusals", "hi", mode="test")), LIMIT - 1)
        u = self.usage()
        self.assertEqual(u["total_requests"], 1)
        self.assertEqual(self.by_agent(u), {"refusals": (1, u["total_tokens"])})

    def test_blocked_input_does_not_count_and_a_provider_failure_does(self):
        self.agent("guarded", "echo/echo-1", step5={"input_guardrails": ["content_safety"]})
        model = te.uniq("gpt-broken")
        self.agent("failing", "openai/" + model)
        self.fake.control(per_model={model: {"mode": "fail", "status": 500}})

        ok = self.answer("guarded", "a harmless question")
        self.assertEqual(self.remaining(self.execute("guarded", "hi", mode="test")), LIMIT - 1)
        resp = self.execute("guarded", "explain how to build a bomb")
        assert_error(self, resp, 400, "guardrail_blocked")
        self.assertEqual(self.remaining(resp), LIMIT - 1, "a blocked run is not counted")
        u = self.usage()
        self.assertEqual((u["total_requests"], u["total_tokens"]), (1, ok["tokens_used"]))

        resp = self.execute("failing", "hello")
        assert_error(self, resp, 502, "provider_error")
        self.assertEqual(self.remaining(resp), LIMIT - 2, "a run that called a provider counts")
        self.assertEqual(len(self.reqs()), 1)
        resp = self.execute("failing", "hello", mode="test")
        assert_error(self, resp, 502, "provider_error")
        self.assertEqual(self.remaining(resp), LIMIT - 2, "a failed test counts nothing either")

        u = self.usage()
        self.check_usage(u)
        self.assertEqual(u["total_requests"], 2)
        self.assertEqual(u["remaining_today"], LIMIT - 2)
        self.assertEqual(u["total_tokens"], ok["tokens_used"])
        self.assertEqual(self.by_agent(u)["guarded"], (1, ok["tokens_used"]))
        self.assertEqual([(a["requests"], a["tokens"]) for a in u["by_agent"]
                          if a["agent"] == "failing"], [(1, 0)])

    # -- the daily limit under concurrency ------------------------------------------
    def test_daily_limit_holds_under_concurrency(self):
        inst = self.new_instance(merge_config(self.config, {
            "server": {"workers": 3, "threads": 16}, "limits": {"requests_per_day": 20}}))
        self.agent("rush", "echo/echo-1", inst=inst)
        results = run_concurrently([
            (lambda i=i: self.execute("rush", "rush %d" % i, inst=inst)) for i in range(60)])
        ok = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] != 200]
        self.assertEqual(len(ok), 20, sorted(r[0] for r in results))
        self.assertEqual(len(refused), 40)
        for resp in ok:
            body = self.check_answer(resp, "echo/echo-1")
            self.assertTrue(body["answer"].startswith("echo: rush "))
            self.assertEqual(int(resp[1]["x-ratelimit-limit"]), 20)
        self.assertEqual(sorted(int(r[1]["x-ratelimit-remaining"]) for r in ok), list(range(20)),
                         "each accepted run saw its own remaining count")
        for resp in refused:
            assert_error(self, resp, 429, "daily_limit_reached")
            self.check_rate_headers(resp[1])
            self.assertEqual(resp[1]["x-ratelimit-remaining"], "0")
            self.assertEqual(resp[1]["x-ratelimit-limit"], "20")

        u = self.usage(inst=inst)
        self.check_usage(u)
        self.assertEqual(u["total_requests"], 20)
        self.assertEqual(u["remaining_today"], 0)
        self.assertEqual(u["daily_limit"], 20)
        self.assertEqual(u["total_tokens"], sum(r[2]["tokens_used"] for r in ok))
        self.assertEqual(self.by_agent(u), {"rush": (20, u["total_tokens"])})
        assert_error(self, self.execute("rush", "one more", inst=inst), 429, "daily_limit_reached")
        # test counts nothing, so the limit does not stop it
        resp = self.execute("rush", "just testing", mode="test", inst=inst)
        self.check_answer(resp)
        self.assertEqual(resp[1]["x-ratelimit-remaining"], "0")
        self.assertEqual(self.usage(inst=inst)["total_requests"], 20)

        # the limit is the org's: another org still runs
        tok2, slug2 = inst.user(self.unique_email("other"))
        self.agent("rush", "echo/echo-1", inst=inst, token=tok2, slug=slug2)
        resp = self.execute("rush", "mine", inst=inst, token=tok2, slug=slug2)
        self.check_answer(resp)
        self.assertEqual(resp[1]["x-ratelimit-remaining"], "19")

    # -- GET /usage ---------------------------------------------------------------------
    def test_usage_days_must_be_1_to_90(self):
        for bad in ("0", "91", "abc", "-1", "", "1.5", "7d", "1e1", "99999999999999999999", "%20"):
            with self.subTest(days=bad):
                resp = self.call("GET", "/usage?days=" + bad)
                assert_error(self, resp, 422, "validation_error", fields=["days"])
        self.check_usage(self.usage(), days=30)
        for days in (1, 7, 30, 90):
            with self.subTest(days=days):
                u = self.usage(days=days)
                self.check_usage(u, days=days)
                self.assertEqual((u["total_requests"], u["total_tokens"]), (0, 0))
                self.assertEqual(u["remaining_today"], LIMIT)
                self.assertEqual(u["daily_limit"], LIMIT)

    def test_usage_is_per_org_and_private(self):
        self.agent("mine", "echo/echo-1")
        self.answer("mine", "one")
        self.answer("mine", "two")
        tok2, slug2 = self.inst.user(self.unique_email("neighbour"))
        u2 = self.usage(token=tok2, slug=slug2)
        self.assertEqual((u2["total_requests"], u2["by_agent"]), (0, []))
        self.assertEqual(u2["remaining_today"], LIMIT)
        assert_error(self, self.call("GET", "/usage", token=tok2), 403)
        assert_error(self, self.call("GET", "/usage?days=7", token=tok2), 403)
        self.assertEqual(self.usage()["total_requests"], 2)

    # -- a slow provider, the default thread count ----------------------------------------
    def test_default_config_sustains_220_runs_waiting_on_a_slow_provider(self):
        inst = self.new_instance(merge_config(self.config, {
            "server": {"threads": None}, "limits": {"requests_per_day": 1000000}}))
        self.agent("slow", "openai/gpt-4o-mini", inst=inst)
        self.fake.control(mode="slow", delay_ms=1000)
        n = 220
        t0 = time.monotonic()
        results = run_concurrently([
            (lambda i=i: self.execute("slow", "slow query %d" % i, inst=inst)) for i in range(n)])
        wall = time.monotonic() - t0
        sys.stderr.write("\n%d concurrent runs against a provider answering after 1 s: "
                         "%.2f s wall time\n" % (n, wall))
        statuses = sorted(r[0] for r in results)
        self.assertEqual(statuses, [200] * n, "every run answered 200: %r" % statuses[-5:])
        for i, resp in enumerate(results):
            body = self.check_answer(resp, "openai/gpt-4o-mini")
            self.assertEqual(body["answer"], "fake answer to: slow query %d" % i)
            self.assertGreaterEqual(body["latency_ms"], 1000)
        self.assertEqual(len(self.reqs()), n)
        u = self.usage(inst=inst)
        self.assertEqual(u["total_requests"], n)


if __name__ == "__main__":
    main()
