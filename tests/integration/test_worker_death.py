"""test_worker_death - a worker SIGKILLed while its provider calls are
being answered (issue 15, finding 6: 79 calls reached the provider for 50
counted runs, and the clients got the front server's HTML 500).

Through the real front server (lighttpd, then Apache), with the fake
provider answering slowly: runs and tests are started, and once the fake
has received every call, every worker is SIGKILLed. Then:

- every call the fake provider received is counted: the org's usage has
  as many runs as the provider saw runs, and as many tests as it saw tests
  (each run's log line was committed as in_flight before its provider call;
  the supervisor's reclaim after the death counts it, outcome worker_died);
- the same when the whole daemon is SIGKILLed: the recovery at the next
  start counts the runs still marked in flight;
- the client's answer: the front server's, since the worker that held the
  FastCGI connection is gone and nothing else can answer on it: lighttpd's
  500 or Apache's 503 (README, "Storage bounds", says why), as the JSON
  envelope of the shipped snippets' error pages; never a success and never
  a hang.
"""

import os
import signal
import threading

from harness import main, poll
import test_execution as te

RUNS = 3
TESTS = 2
# What each front server answers when its FastCGI backend closes the
# connection without a response (lighttpd 1.4: 500; Apache's
# mod_proxy_fcgi: 503), or 502 if its snippet maps that to a JSON page.
FRONT_STATUS = {"lighttpd": (500, 502), "apache": (502, 503)}
FRONT_ERROR = {500: "internal_error", 502: "bad_gateway", 503: "service_unavailable"}


class WorkerDeathMixin:
    overrides = {"limits": {"requests_per_day": 100, "tests_per_day": 100},
                 "server": {"workers": 2, "threads": 8}}

    def test_a_worker_killed_while_its_provider_answers_leaves_every_call_counted(self):
        self.agent("slow", "openai/gpt-4o-mini")
        self.fake.control(delay_ms=4000, reply="too late")
        answers, lock = [], threading.Lock()

        def call(mode, i):
            resp = self.execute("slow", "question %d" % i, mode=mode)
            with lock:
                answers.append((mode, resp[0], resp[1].get("content-type", ""), resp[2]))

        threads = [threading.Thread(target=call, args=("run", i)) for i in range(RUNS)] + \
                  [threading.Thread(target=call, args=("test", i)) for i in range(TESTS)]
        for t in threads:
            t.start()
        poll(lambda: len(self.fake.provider_requests()) == RUNS + TESTS, 30,
             what="every call at the provider")
        workers = self.inst.worker_pids()
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        for t in threads:
            t.join(60)
            self.assertFalse(t.is_alive(), "a client still waits after its worker died")
        self.assertEqual(len(answers), RUNS + TESTS)
        for mode, status, ctype, body in answers:
            # The worker that held the FastCGI connection is gone: the front
            # answers with its own error (lighttpd 500, Apache 503, HTML
            # unless the snippet sets a JSON error document). A JSON one
            # must name what happened.
            self.assertIn(status, FRONT_STATUS[self.inst.front], (mode, status, body))
            # the shipped snippets make it the JSON envelope (etc/lighttpd/errors/,
            # Apache's ErrorDocument): the front's own code for that status
            self.assertTrue(ctype.startswith("application/json"), (mode, status, ctype, body))
            self.assertIsInstance(body, dict, body)
            self.assertEqual(body.get("status"), status, body)
            self.assertEqual(body.get("error"), FRONT_ERROR[status], body)
        self.inst.wait_workers(exclude=workers)
        self.fake.control(reply="fine")
        # every provider call is counted, after the supervisor's reclaim
        poll(lambda: (lambda u: (u["total_requests"], u["total_tests"]) == (RUNS, TESTS))(
            self.usage()), 30, what="%d runs and %d tests counted" % (RUNS, TESTS))
        u = self.usage()
        self.assertEqual(u["remaining_today"], 100 - RUNS, u)
        self.assertEqual(u["remaining_tests_today"], 100 - TESTS, u)
        self.assertEqual(len(self.fake.provider_requests()), RUNS + TESTS)
        # and the service goes on: the next run answers and counts
        self.check_answer(self.execute("slow", "after"))
        self.assertEqual(self.usage()["total_requests"], RUNS + 1)


    def test_a_daemon_killed_while_its_provider_answers_counts_the_calls_at_restart(self):
        """The whole daemon SIGKILLed: no hold survives its shared memory;
        the recovery at the next start finds the runs marked in flight."""
        token, slug = self.inst.user(self.unique_email("whole"))
        self.agent("slow", "openai/gpt-4o-mini", token=token, slug=slug)
        self.fake.control(delay_ms=4000, reply="too late")
        statuses = []
        threads = [threading.Thread(target=lambda i=i: statuses.append(self.execute(
            "slow", "q %d" % i, token=token, slug=slug)[0])) for i in range(RUNS)]
        for t in threads:
            t.start()
        poll(lambda: len(self.fake.provider_requests()) == RUNS, 30,
             what="every run at the provider")
        self.inst.kill_daemon(signal.SIGKILL)
        for t in threads:
            t.join(60)
        self.assertTrue(all(500 <= s < 600 for s in statuses), statuses)
        self.fake.control(reply="fine")
        self.inst.restart_daemon()
        u = self.usage(token=token, slug=slug)
        self.assertEqual((u["total_requests"], u["remaining_today"]), (RUNS, 100 - RUNS), u)


class LighttpdWorkerDeathTest(WorkerDeathMixin, te.PipelineCase):
    pass


class ApacheWorkerDeathTest(WorkerDeathMixin, te.PipelineCase):
    front = "apache"


if __name__ == "__main__":
    main()
