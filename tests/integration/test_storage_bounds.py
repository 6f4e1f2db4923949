"""test_storage_bounds - `test` is metered and conversation storage is
bounded (issue 15, finding 2: 2,000 `test` calls with 32 KiB queries and
fresh session ids grew the sessions database from 8 KB to 133 MB, usage 0).

Through the real lighttpd and daemon, with the built-in echo provider
(instant, offline):

- the daily test allowance (limits.tests_per_day): exact, a 429
  daily_test_limit_reached envelope past it, X-RateLimit-* of a test answer
  describe it, runs are not touched, usage shows it, and it survives a
  restart of the daemon;
- 10,000 hostile `test` calls, 32 KiB queries, a fresh session id each,
  from parallel connections: no 5xx, and the database files stay under the
  bound memory.max_kb_per_org allows. What is asserted and why: the stored
  sessions of one org and mode are capped at max_kb_per_org (plus the
  session being written); Berkeley DB files never shrink, but the pages of
  dropped sessions are reused, so sessions.db + sessidx.db stay within a
  small factor of the cap (page fill, overflow pages of 64 KiB records,
  pages freed by transactions still in flight). The pages reach the files
  at a checkpoint, so the test waits for the supervisor's next one (every
  30 s), which also removes the log files recovery no longer needs; then
  it asserts 4x the cap for both files together, and for the whole data
  directory that plus the log file in use and the other databases, against
  about 650 MB stored without the bound (10,000 x (32 KiB query + its
  32 KiB echo)). The log files written during the storm (over 1 GB: each
  turn logs its record and the records it drops) are transient and
  reported, not asserted.
"""

import http.client
import json
import os
import threading
import time

from harness import assert_error, main, poll
import test_execution as te

CAP_KB = 4096           # memory.max_kb_per_org of the hostile test
CALLS = 10000
THREADS = 8
QUERY = "x" * 32768
TEST_LIMIT = 5


# After a checkpoint only the log files recovery still needs are left (BDB's
# log files are 10 MiB each).
LOGS_AFTER_CHECKPOINT = 32 * 1024 * 1024


def logs_of(data_dir):
    return db_bytes(data_dir, [n for n in os.listdir(data_dir) if n.startswith("log.")])


def db_bytes(data_dir, names):
    return sum(os.path.getsize(os.path.join(data_dir, n)) for n in names
               if os.path.exists(os.path.join(data_dir, n)))


class TestAllowanceTest(te.PipelineCase):
    """limits.tests_per_day: a `test` is no longer free."""

    overrides = {"limits": {"requests_per_day": 100, "tests_per_day": TEST_LIMIT}}

    def test_tests_past_the_daily_allowance_get_429_and_it_survives_a_restart(self):
        self.agent("probe", "echo/echo-1")
        for i in range(TEST_LIMIT):
            resp = self.execute("probe", "question %d" % i, mode="test")
            self.check_answer(resp)
            self.check_rate_headers(resp[1])
            # X-RateLimit-* stay the runs' (SPEC section 6); X-TestLimit-* the tests'
            self.assertEqual(int(resp[1]["x-ratelimit-remaining"]), 100)
            self.assertEqual(int(resp[1]["x-testlimit-limit"]), TEST_LIMIT)
            self.assertEqual(int(resp[1]["x-testlimit-remaining"]), TEST_LIMIT - 1 - i)
        resp = self.execute("probe", "one more", mode="test")
        assert_error(self, resp, 429, "daily_test_limit_reached")
        self.assertEqual(int(resp[1]["x-testlimit-remaining"]), 0)
        self.assertEqual(int(resp[1]["x-testlimit-limit"]), TEST_LIMIT)
        self.assertEqual(int(resp[1]["x-ratelimit-remaining"]), 100)
        # runs draw from their own limit, untouched by the tests
        resp = self.execute("probe", "a real run")
        self.check_answer(resp)
        self.assertNotIn("x-testlimit-limit", resp[1])
        self.assertEqual(int(resp[1]["x-ratelimit-limit"]), 100)
        self.assertEqual(int(resp[1]["x-ratelimit-remaining"]), 99)
        u = self.usage()
        self.assertEqual((u["total_tests"], u["daily_test_limit"], u["remaining_tests_today"]),
                         (TEST_LIMIT, TEST_LIMIT, 0), u)
        self.assertEqual((u["total_requests"], u["remaining_today"]), (1, 99), u)
        self.assertEqual([a["agent"] for a in u["by_agent"]], ["probe"], u["by_agent"])
        # another org has its own allowance
        token, slug = self.inst.user(self.unique_email("other"))
        self.agent("probe", "echo/echo-1", token=token, slug=slug)
        self.check_answer(self.execute("probe", "hi", mode="test", token=token, slug=slug))
        # the count is durable: a restarted daemon still refuses
        self.inst.restart_daemon()
        assert_error(self, self.execute("probe", "after restart", mode="test"), 429,
                     "daily_test_limit_reached")
        self.assertEqual(self.usage()["remaining_tests_today"], 0)


class StorageBoundsTest(te.PipelineCase):
    """10,000 hostile `test` calls leave the database under the bound."""

    overrides = {"limits": {"requests_per_day": 100, "tests_per_day": 1000000},
                 "memory": {"max_kb_per_org": CAP_KB}}

    def hostile(self, path, token, first, count, statuses, lock):
        conn = None
        for i in range(first, first + count):
            body = json.dumps({"query": QUERY, "session_id": "hostile-%d" % i})
            for attempt in range(3):
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.inst.port,
                                                          timeout=60)
                    conn.request("POST", path, body=body,
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Bearer " + token})
                    resp = conn.getresponse()
                    resp.read()
                    status = resp.status
                    if resp.getheader("connection", "").lower() == "close":
                        conn.close()
                        conn = None
                    break
                except (OSError, http.client.HTTPException):
                    if conn is not None:
                        conn.close()
                    conn = None
                    status = 0
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
        if conn is not None:
            conn.close()

    def test_ten_thousand_hostile_tests_leave_the_database_under_the_bound(self):
        self.agent("victim", "echo/echo-1",
                   memory={"memory_type": "conversational", "window_size": 20})
        path = "/api/v1/orgs/%s/agents/victim/test" % self.slug
        statuses, lock = {}, threading.Lock()
        per = CALLS // THREADS
        start = time.monotonic()
        threads = [threading.Thread(target=self.hostile,
                                    args=(path, self.token, k * per, per, statuses, lock))
                   for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - start
        self.assertEqual(sum(statuses.values()), CALLS)
        self.assertEqual(statuses.get(200, 0), CALLS, statuses)
        data = self.inst.data_dir
        peak_logs = logs_of(data)
        # The pages are in the cache and the log until a checkpoint: wait
        # for the supervisor's next one (every 30 s), which writes them to
        # the .db files and removes the log files no longer needed.
        poll(lambda: logs_of(data) <= LOGS_AFTER_CHECKPOINT, 75, interval=1,
             what="a checkpoint removing the log files")
        sessions = db_bytes(data, ["sessions.db", "sessidx.db"])
        whole = db_bytes(data, os.listdir(data))
        print("\n%d hostile tests in %.1f s: %r; after the checkpoint: sessions.db + "
              "sessidx.db %d bytes, the data dir %d bytes (log files at the end of the "
              "storm: %d bytes; cap %d KiB)" % (CALLS, took, statuses, sessions, whole,
                                                peak_logs, CAP_KB))
        self.assertLessEqual(sessions, 4 * CAP_KB * 1024,
                             "the session files outgrew 4x memory.max_kb_per_org")
        # the whole environment: the cap's files, the other databases, the
        # log file in use and BDB's region files
        self.assertLessEqual(whole, 4 * CAP_KB * 1024 + LOGS_AFTER_CHECKPOINT + 16 * 1024 * 1024,
                             whole)
        # the org can still use its agent: the service held
        self.check_answer(self.execute("victim", "still here?", mode="test",
                                       session_id="after-the-storm"))


if __name__ == "__main__":
    main()
