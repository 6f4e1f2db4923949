"""test_accounting - what run and test count (SPEC sections 6 and 7, issue
3): run counts one request and its tokens for the org's UTC day and the
agent, test counts nothing; the daily limit holds under concurrency; the
X-RateLimit headers; GET /orgs/{slug}/usage and its validation; and how many
runs the default configuration keeps in flight against a slow provider.

The agents run against the fake provider (tests/fake_provider.py) or the
offline echo provider; the instance and the helpers are test_execution's.
"""

import datetime
import os
import signal
import sys
import threading
import time

from harness import assert_error, main, merge_config, poll, run_concurrently
from fakeprov import prompt_words, words
import test_execution as te

LIMIT = 50
USAGE_KEYS = {"period_days", "total_requests", "total_tokens", "daily_limit", "remaining_today",
              "by_agent", "by_day", "total_tests", "daily_test_limit", "remaining_tests_today"}


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
        # tests are counted apart, against their own allowance (issue 15)
        self.assertEqual((u["total_tests"], u["remaining_tests_today"]),
                         (4, u["daily_test_limit"] - 4), u)
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
            "server": {"threads": None},
            # one org's runs here: the per-org cap on runs in flight (test_fairness)
            # is lifted so that the threads' capacity is what is measured
            "limits": {"requests_per_day": 1000000, "max_in_flight": 1000}}))
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


class RunLoad:
    """Threads that each run one agent on a session of their own, one turn
    after another, recording (thread, turn, query, status, tokens, start,
    end); status None: the connection was cut."""

    def __init__(self, case, inst, name, threads, turns):
        self.case, self.inst, self.name, self.turns = case, inst, name, turns
        self.log = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(t,), daemon=True)
                        for t in range(threads)]
        self.sessions = [te.uniq("crash-s%d" % t) for t in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self, timeout=90):
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return sum(1 for t in self.threads if t.is_alive())

    def run(self, t):
        for n in range(self.turns):
            if self.stop.is_set():
                return
            query = "session %d turn %d" % (t, n)
            start = time.monotonic()
            try:
                resp = self.case.execute(self.name, query, session_id=self.sessions[t],
                                         inst=self.inst, timeout=30)
                status = resp[0]
                tokens = resp[2]["tokens_used"] if status == 200 else None
            except Exception:             # a cut connection: OSError or http.client's
                status, tokens = None, None
            with self.lock:
                self.log.append((t, n, query, status, tokens, start, time.monotonic()))

    def acked(self):
        with self.lock:
            return [e for e in self.log if e[3] == 200]


class RunCrashTest(te.PipelineCase):
    """Nothing a run was answered for is lost when processes die: with the
    default storage.run_flush_ms (run records are written to the log file
    before the answer and fsynced within 100 ms), SIGKILL a worker, and
    then the whole daemon, while runs go on; every answered run is counted
    in usage and its turn is in its session's memory. A run cut by a kill
    may or may not be there; nothing else may. The day's quota left is
    exactly the limit less the runs counted (a killed worker's unsettled
    runs are given back)."""

    overrides = {"limits": {"requests_per_day": 100000}}
    THREADS, TURNS = 8, 45             # 45 turns: within one window of 100
    MEMORY = {"memory_type": "conversational", "memory_strategy": "sliding_window",
              "window_size": 100}

    def crash_instance(self):
        inst = self.new_instance(merge_config(self.config, {
            "server": {"workers": 2, "threads": 8}}))
        self.agent("crashy", "openai/gpt-4o-mini", memory=self.MEMORY, inst=inst)
        # answers after 20 ms, so that a kill finds runs waiting on it
        self.fake.control(mode="slow", delay_ms=20)
        return inst

    def verify(self, inst, load):
        acked = load.acked()
        cut = [e for e in load.log if e[3] is None or e[3] >= 500]
        self.assertGreater(len(acked), 0)
        sys.stderr.write("\n%d runs answered, %d cut by the kill\n" % (len(acked), len(cut)))
        u = self.usage(inst=inst)
        self.assertGreaterEqual(u["total_requests"], len(acked), "answered runs lost from usage")
        self.assertLessEqual(u["total_requests"], len(acked) + len(cut), u)
        self.assertGreaterEqual(u["total_tokens"], sum(e[4] for e in acked))
        # what a killed worker had accepted and not settled was given back
        self.assertEqual(u["remaining_today"], 100000 - u["total_requests"])
        # each session's memory: every answered turn, in order; a cut one maybe
        for t, sid in enumerate(load.sessions):
            mine = sorted((e for e in load.log if e[0] == t), key=lambda e: e[1])
            if not mine:
                continue
            self.fake.clear()
            self.execute("crashy", "and now?", session_id=sid, inst=inst)
            hist = self.history(self.one_request())[:-1]
            users = [text for role, text in hist if role == "user"]
            self.assertEqual([text for role, text in hist if role == "assistant"],
                             ["fake answer to: " + q for q in users], "session %d" % t)
            must = [e[2] for e in mine if e[3] == 200]
            may = set(e[2] for e in mine if e[3] is None or e[3] >= 500)
            self.assertEqual([q for q in users if q not in may], must,
                             "session %d: answered turns lost from memory" % t)
            order = [e[2] for e in mine]
            self.assertEqual(users, sorted(users, key=order.index), "session %d order" % t)

    def test_answered_runs_survive_a_killed_worker(self):
        inst = self.crash_instance()
        load = RunLoad(self, inst, "crashy", self.THREADS, self.TURNS)
        load.start()
        try:
            for k in (1, 2):
                poll(lambda: len(load.acked()) >= 100 * k, 120,
                     what="%d answered runs" % (100 * k))
                workers = inst.wait_workers()
                os.kill(workers[0], signal.SIGKILL)
                inst.wait_workers(exclude=[workers[0]])
        finally:
            stuck = load.finish()
        self.assertEqual(stuck, 0, "load threads stuck in requests")
        self.assertIsNone(inst.daemon.poll(), "the supervisor died")
        self.verify(inst, load)

    def test_answered_runs_survive_the_whole_daemon_killed(self):
        inst = self.crash_instance()
        load = RunLoad(self, inst, "crashy", self.THREADS, self.TURNS)
        load.start()
        try:
            poll(lambda: len(load.acked()) >= 150, 120, what="150 answered runs")
            inst.kill_daemon(signal.SIGKILL)      # waits for every worker to be gone
        finally:
            stuck = load.finish()
        self.assertEqual(stuck, 0, "load threads stuck in requests")
        inst.restart_daemon()
        self.verify(inst, load)


if __name__ == "__main__":
    main()
