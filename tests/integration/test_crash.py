"""test_crash - nothing acknowledged is lost when processes die.

A worker is killed with SIGKILL in the middle of a write-heavy load: the
supervisor starts a new one, requests keep succeeding, and every request
that was answered 2xx is in the database afterwards. Then the whole daemon
is killed with SIGKILL mid-load and started again on the same data dir:
every agent that was deployed is deployed again (stored status and
registry) and every acknowledged change is there (SPEC section 8)."""

import os
import signal
import threading
import time

from harness import InstanceTestCase, assert_json, main, pid_alive, poll

WC = {"display_name": "Crash", "step1": {"model": "echo/echo-1"},
      "step2": {"system_prompt": "v0", "tone": "empathetic"}}

# what each successful op does to the stored status
TRANSITION = {"create": {None: "draft"},
              "put": {"draft": "draft", "paused": "paused"},
              "deploy": {"draft": "deployed", "paused": "deployed"},
              "pause": {"deployed": "paused"}}
WANT = {"create": 201, "put": 200, "deploy": 200, "pause": 200}


class Load:
    """Threads that create agents and edit, deploy and pause them as fast as
    they can, recording every request: (op, slug, name, value, status,
    start, end). status is None when the connection failed."""

    def __init__(self, inst, users, threads):
        self.inst, self.users = inst, users
        self.log = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(t,), daemon=True)
                        for t in range(threads)]
        self.generation = 0           # tags agent names, so two loads never collide

    def start(self, generation):
        self.generation = generation
        for t in self.threads:
            t.start()

    def finish(self, timeout=90):
        """Stop the threads; return the number still stuck after timeout
        seconds (they are daemon threads: stopping the instance frees them)."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return sum(1 for t in self.threads if t.is_alive())

    def call(self, op, tok, slug, name, value=None):
        base = "/api/v1/orgs/%s/agents" % slug
        start = time.monotonic()
        try:
            if op == "create":
                resp = self.inst.request("POST", base, dict(WC, name=name), token=tok,
                                         timeout=30)
            elif op == "put":
                resp = self.inst.request("PUT", base + "/" + name,
                                         {"step2": {"system_prompt": value}}, token=tok,
                                         timeout=30)
            else:
                resp = self.inst.request("POST", "%s/%s/%s" % (base, name, op), token=tok,
                                         timeout=30)
            status, body = resp[0], resp[2]
        except OSError as e:
            status, body = None, str(e)
        except Exception as e:            # http.client errors on a cut connection
            status, body = None, repr(e)
        entry = (op, slug, name, value, status, start, time.monotonic(), body)
        with self.lock:
            self.log.append(entry)
        return status

    def run(self, t):
        tok, slug = self.users[t % len(self.users)]
        n = 0
        while not self.stop.is_set():
            name = "g%d-t%d-n%d" % (self.generation, t, n)
            n += 1
            if self.call("create", tok, slug, name) != 201:
                continue
            for k in range(2):
                self.call("put", tok, slug, name, "v-%s-%d" % (name, k))
            if n % 2 == 0:
                self.call("deploy", tok, slug, name)
                if n % 4 == 0:
                    self.call("pause", tok, slug, name)
                    self.call("put", tok, slug, name, "v-%s-p" % name)
                    if n % 8 == 0:
                        self.call("deploy", tok, slug, name)

    def acked_since(self, t0):
        with self.lock:
            return sum(1 for e in self.log if e[4] is not None and e[4] < 300 and e[5] >= t0)


def expected_states(log):
    """For each agent (slug, name) whose create was acknowledged: the set of
    statuses and the set of prompts it may have now. An acknowledged op
    happened; an op without an answer (or a 5xx) may or may not have."""
    per_agent = {}
    for op, slug, name, value, status, *_ in log:
        per_agent.setdefault((slug, name), []).append((op, value, status))
    out = {}
    for key, ops in per_agent.items():
        if ops[0][0] != "create" or ops[0][2] != 201:
            continue
        states, prompts = {"draft"}, {"v0"}
        for op, value, status in ops[1:]:
            acked = status == WANT[op]
            unknown = status is None or status >= 500
            if not acked and not unknown:
                continue              # refused (a 4xx): no effect
            moved = {TRANSITION[op][s] for s in states if s in TRANSITION[op]}
            if op == "put":
                prompts = {value} if acked else prompts | {value}
            states = moved if acked else states | moved
        out[key] = (states, prompts)
    return out


class CrashTest(InstanceTestCase):
    shared_instance = False           # every test here starts its own

    def crash_instance(self):
        return self.new_instance({"server": {"workers": 2, "threads": 8},
                                  "limits": {"max_agents": 100000}})

    def verify(self, inst, log, users):
        """Every acknowledged write is stored; registry == deployed agents."""
        tokens = {slug: tok for tok, slug in users}
        deployed = 0
        problems = []
        for (slug, name), (states, prompts) in sorted(expected_states(log).items()):
            status, _, body = inst.request("GET", "/api/v1/orgs/%s/agents/%s" % (slug, name),
                                           token=tokens[slug])
            if status != 200:
                problems.append("%s/%s: acknowledged create, GET %s %r" % (slug, name, status, body))
                continue
            if body["status"] not in states:
                problems.append("%s/%s: status %s, expected one of %s"
                                % (slug, name, body["status"], sorted(states)))
            prompt = body["wizard_config"]["step2"]["system_prompt"]
            if prompt not in prompts:
                problems.append("%s/%s: prompt %r, expected one of %s"
                                % (slug, name, prompt, sorted(prompts)))
            deployed += body["status"] == "deployed"
        # agents whose create was never answered may exist; count those deployed
        for tok, slug in users:
            lst = assert_json(self, inst.request("GET", "/api/v1/orgs/%s/agents" % slug,
                                                 token=tok), 200)
            known = {n for (s, n) in expected_states(log) if s == slug}
            deployed += sum(1 for a in lst["agents"]
                            if a["name"] not in known and a["status"] == "deployed")
        self.assertEqual(problems[:20], [], "%d acknowledged writes lost" % len(problems))
        self.assertEqual(inst.registry_count(), deployed,
                         "registry disagrees with the stored statuses")
        return deployed

    def test_worker_killed_mid_load(self):
        """Three rounds: SIGKILL one worker while 12 clients write, wait for
        its replacement, let the load go on. Killing a worker inside the
        Berkeley DB library makes failchk ask for recovery, and then the
        supervisor may replace every worker; that is allowed, but only
        requests in flight at that moment may fail, never later ones."""
        inst = self.crash_instance()
        nthreads = int(inst.config["server"]["threads"])
        users = [inst.user(self.unique_email("crash%d" % i)) for i in range(3)]
        load = Load(inst, users, threads=12)
        rounds = []                   # (t_kill, t_gone, t_back, full recovery?)
        t_begin = time.monotonic()
        load.start(1)
        try:
            poll(lambda: load.acked_since(t_begin) >= 300, 120, what="300 acknowledged writes")
            for _ in range(3):
                workers = inst.wait_workers()
                victim = workers[0]
                os.kill(victim, signal.SIGKILL)
                t_kill = time.monotonic()
                # kill(2) returns before the victim is gone: its threads can
                # still accept connections until it is (a zombie accepts none)
                poll(lambda: not pid_alive(victim), 30, interval=0.002, what="the victim gone")
                t_gone = time.monotonic()
                new = inst.wait_workers(exclude=[victim])
                t_back = time.monotonic()
                self.assertTrue(set(new) - set(workers), "no new worker pid: %s" % new)
                rounds.append((t_kill, t_gone, t_back, workers[1] not in new))
                poll(lambda: load.acked_since(t_back) >= 300, 120,
                     what="300 acknowledged writes after the restart")
        finally:
            stuck = load.finish()
        self.assertEqual(stuck, 0, "load threads stuck in requests")
        self.assertIsNone(inst.daemon.poll(), "the supervisor died")
        failed = [e for e in load.log if e[4] is None or e[4] >= 500]
        grace = 0.05                  # the front's connect may lag the client's start

        def excused(e):
            """In flight while a worker was being killed (from kill(2) until
            it was gone), or (when every worker had to be replaced) while
            they were being replaced."""
            start, end = e[5], e[6]
            return any((start < t_gone + grace and end > t_kill)
                       or (full and start < t_back and end > t_kill)
                       for t_kill, t_gone, t_back, full in rounds)
        late = [e[:5] + (str(e[7])[:100],) for e in failed if not excused(e)]
        self.assertEqual(late[:10], [], "requests failed that were not in flight at a kill")
        # only what was in flight: at most every thread of every worker
        bound = sum(nthreads * (2 if full else 1) for _, _, _, full in rounds)
        self.assertLessEqual(len(failed), bound, [e[:5] for e in failed])
        # The load's requests are all valid in the order each thread sends
        # them, so a 4xx is only right after an earlier request on the same
        # agent was cut (its outcome unknown: a 409 may then be the truth).
        refused, cut = [], set()
        for e in sorted(load.log, key=lambda e: e[5]):
            if e[4] is None or e[4] >= 500:
                cut.add(e[2])
            elif 300 <= e[4] < 500 and e[2] not in cut:
                refused.append(e[:5] + (e[7],))
        self.assertEqual(refused[:10], [], "valid requests refused")
        self.verify(inst, load.log, users)
        self.assertEqual(inst.health()["db"], "ok")

    def test_daemon_killed_mid_load_and_restarted(self):
        inst = self.crash_instance()
        users = [inst.user(self.unique_email("boom%d" % i)) for i in range(3)]
        load = Load(inst, users, threads=12)
        t_begin = time.monotonic()
        load.start(1)
        try:
            poll(lambda: load.acked_since(t_begin) >= 500, 120, what="500 acknowledged writes")
            inst.kill_daemon(signal.SIGKILL)          # waits for every worker to be gone
        finally:
            stuck = load.finish()
        self.assertEqual(stuck, 0, "load threads stuck in requests")
        before = sum(1 for e in load.log if e[4] is not None and e[4] < 300)
        self.assertGreater(before, 0)
        # the same data dir, the same lighttpd
        inst.restart_daemon()
        self.assertIsNone(inst.daemon.poll())
        deployed = self.verify(inst, load.log, users)
        self.assertGreater(deployed, 0, "the load deployed nothing; the test proves nothing")
        # and it takes writes again, on old and new agents alike
        tok, slug = users[0]
        base = "/api/v1/orgs/%s/agents" % slug
        assert_json(self, inst.request("POST", base, dict(WC, name="after-restart"), token=tok), 201)
        assert_json(self, inst.request("POST", base + "/after-restart/deploy", token=tok), 200)
        self.assertEqual(inst.registry_count(), deployed + 1)
        # a second crash, idle this time: the registry is rebuilt again
        inst.kill_daemon(signal.SIGKILL)
        inst.restart_daemon()
        self.assertEqual(self.verify(inst, load.log, users), deployed + 1)


if __name__ == "__main__":
    main()
