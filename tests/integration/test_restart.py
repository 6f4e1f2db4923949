"""test_restart - a restart or a reload under load loses no request.

What systemd's astromesh-cloud.socket does, done by the test: it binds and
listens on the FastCGI socket itself and holds it; every daemon is started
with it inherited (LISTEN_FDS=1, LISTEN_PID, descriptor 3). lighttpd is in
front, and load threads send GETs and POST runs (through a fake OpenAI
provider) all the time. Then:

- `systemctl restart`: SIGTERM the daemon, wait until it is gone, start a
  new one on the same held socket, several times: while no daemon runs,
  lighttpd's connections wait in the socket's backlog. Every request must
  be answered 200: zero errors.
- `systemctl reload`: SIGHUP several times (the workers are replaced by a
  new generation): zero errors.

The daemon's log must say which socket it serves (socket activation).
Without the held socket (the daemon binding its own, as before), the same
restarts answer 503s: test_restart_without_held_socket_fails_requests shows
the test can see errors."""
import os
import signal
import threading
import time

from fakeprov import FakeProvider, provider_config
from harness import BUILDDIR, InstanceTestCase, assert_json, main, poll

WC = {"display_name": "Restart", "step1": {"model": "openai/gpt-4o-mini"},
      "step2": {"system_prompt": "You answer briefly.", "tone": "empathetic"}}


class Load:
    """Threads sending GET an agent and POST a run as fast as they can;
    every answer's status is counted (None: the connection failed)."""

    def __init__(self, inst, tok, slug, threads=6):
        self.inst, self.tok, self.slug = inst, tok, slug
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses = {}
        self.bad = []                 # (op, status, body) of every non-200
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(threads)]

    def run(self, i):
        base = "/api/v1/orgs/%s/agents/bot" % self.slug
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                if (i + n) % 2:
                    op, resp = "GET", self.inst.request("GET", base, token=self.tok,
                                                        timeout=60)
                else:
                    op, resp = "run", self.inst.request(
                        "POST", base + "/run", {"query": "hello %d" % n, "session_id": "s%d" % i},
                        token=self.tok, timeout=60)
                status, body = resp[0], resp[2]
            except Exception as e:     # a cut connection: an error like any other
                op, status, body = "?", None, repr(e)
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status != 200:
                    self.bad.append((op, status, str(body)[:200]))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(90)

    def total(self):
        with self.lock:
            return sum(self.statuses.values())

    def wait_for_more(self, n, timeout=60):
        """Wait until n more requests were answered (the load is flowing)."""
        start = self.total()
        poll(lambda: self.total() >= start + n, timeout, what="%d more requests" % n)


class RestartUnderLoadTest(InstanceTestCase):
    shared_instance = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = FakeProvider(log_dir=os.path.join(BUILDDIR, "tests", "tmp"))
        cls.fake.start()
        cls.addClassCleanup(cls.fake.stop)

    def instance(self, hold):
        inst = self.new_instance({"providers": provider_config(self.fake),
                                  "limits": {"requests_per_day": 10000000},
                                  "server": {"threads": 16}}, start=False)
        if hold:
            sock = inst.hold_socket()
            self.addCleanup(sock.close)     # after inst.stop (cleanups run last first)
        inst.start()
        tok, slug = inst.user(self.unique_email("restart"))
        assert_json(self, inst.request("POST", "/api/v1/orgs/%s/agents" % slug,
                                       dict(WC, name="bot"), token=tok), 201)
        assert_json(self, inst.request("POST", "/api/v1/orgs/%s/agents/bot/deploy" % slug,
                                       token=tok), 200)
        return inst, tok, slug

    def restarts(self, inst, load, times):
        for _ in range(times):
            load.wait_for_more(20)
            inst.kill_daemon(signal.SIGTERM)          # waits for every worker to go
            time.sleep(0.3)                           # nobody serves: requests queue
            inst.start_daemon()
            inst.wait_workers()
        load.wait_for_more(20)

    def test_restart_with_held_socket_loses_nothing(self):
        inst, tok, slug = self.instance(hold=True)
        with Load(inst, tok, slug) as load:
            self.restarts(inst, load, 4)
        self.assertEqual(load.bad[:5], [], "errors during restarts: %r" % load.statuses)
        self.assertGreater(load.statuses.get(200, 0), 100)
        log = inst.read_log(inst.daemon_log)
        self.assertEqual(log.count("socket activation: serving FastCGI on %s" % inst.socket), 5,
                         log[-2000:])
        self.assertTrue(os.path.exists(inst.socket), "the held socket lost its name")

    def test_reload_under_load_loses_nothing(self):
        inst, tok, slug = self.instance(hold=True)
        with Load(inst, tok, slug) as load:
            for _ in range(4):
                load.wait_for_more(20)
                old = set(inst.worker_pids())
                os.kill(inst.daemon_pid, signal.SIGHUP)
                inst.wait_workers(exclude=old)
            load.wait_for_more(20)
        self.assertEqual(load.bad[:5], [], "errors during reloads: %r" % load.statuses)
        self.assertGreater(load.statuses.get(200, 0), 100)

    def test_restart_without_held_socket_fails_requests(self):
        """The same restarts with the daemon binding its own socket: while
        it is down the socket does not exist, and lighttpd answers 503. The
        count above is zero only because the socket is held."""
        inst, tok, slug = self.instance(hold=False)
        with Load(inst, tok, slug) as load:
            self.restarts(inst, load, 2)
        self.assertNotEqual(load.bad, [], "no error without a held socket: %r" % load.statuses)
        self.assertNotIn("socket activation", inst.read_log(inst.daemon_log))


if __name__ == "__main__":
    main()
