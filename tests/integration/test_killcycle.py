"""test_killcycle - the SIGKILL cycle, bounded: nothing acknowledged is lost
however often processes die.

Each cycle puts a mixed write load on the daemon (creates, edits, deploys,
pauses, runs and API key creations, from several orgs at once), SIGKILLs
one worker in the middle of it, lets the load go on against its
replacement, then SIGKILLs the whole daemon (supervisor and workers) and
starts it again on the same data dir behind the same lighttpd. After every
restart it checks every acknowledged write of every cycle so far:

  - each agent whose create was answered 201 exists, with a status the
    acknowledged operations allow (and, for this cycle's agents, the
    acknowledged prompt, read back one by one);
  - the registry holds exactly the deployed agents;
  - each key answered 201 is listed, and the last ones still authenticate;
  - each org's usage counts at least its acknowledged runs, and no more
    than acknowledged plus unanswered ones.

KILL_CYCLES (default 3) sets the number of cycles; a release runs 100:
    KILL_CYCLES=100 make check TESTS=tests/integration/test_killcycle.py
test_crash.py keeps the single-shot tests (worker kill with its bounds on
failed requests; daemon kill with a restart); the load and its expected
states come from there."""

import os
import signal
import time

from harness import InstanceTestCase, assert_json, main, poll
from test_crash import WANT, Load, expected_states

CYCLES = int(os.environ.get("KILL_CYCLES", "3"))
ACKED_PER_PHASE = int(os.environ.get("KILL_CYCLE_WRITES", "150"))


class MixedLoad(Load):
    """test_crash's Load (create, put, deploy, pause), plus a run of each
    agent it deploys and an API key every third agent. Runs and keys go in
    the same log: ("run", slug, name, None, status, ...) and ("key", slug,
    key id, secret, status, ...)."""

    def call(self, op, tok, slug, name, value=None):
        if op not in ("run", "key"):
            return super().call(op, tok, slug, name, value)
        base = "/api/v1/orgs/%s" % slug
        start = time.monotonic()
        try:
            if op == "run":
                resp = self.inst.request("POST", "%s/agents/%s/run" % (base, name),
                                         {"query": "hello " + name}, token=tok, timeout=30)
            else:
                resp = self.inst.request("POST", base + "/keys", {"name": name}, token=tok,
                                         timeout=30)
            status, body = resp[0], resp[2]
        except Exception as e:        # OSError, or http.client's on a cut connection
            status, body = None, repr(e)
        if op == "key" and status == 201:
            name, value = body["id"], body["secret"]
        with self.lock:
            self.log.append((op, slug, name, value, status, start, time.monotonic(), body))
        return status

    def run(self, t):
        tok, slug = self.users[t % len(self.users)]
        n = 0
        while not self.stop.is_set():
            name = "g%d-t%d-n%d" % (self.generation, t, n)
            n += 1
            if self.call("create", tok, slug, name) != 201:
                continue
            self.call("put", tok, slug, name, "v-%s-0" % name)
            if n % 2 == 0 and self.call("deploy", tok, slug, name) == 200:
                self.call("run", tok, slug, name)
                if n % 4 == 0:
                    self.call("pause", tok, slug, name)
                    self.call("put", tok, slug, name, "v-%s-p" % name)
            if n % 3 == 0:
                self.call("key", tok, slug, name)


class KillCycleTest(InstanceTestCase):
    shared_instance = False
    maxDiff = None

    def test_sigkill_cycles_lose_no_acknowledged_write(self):
        inst = self.new_instance({"server": {"workers": 2, "threads": 8},
                                  "limits": {"max_agents": 100000,
                                             "requests_per_day": 100000000}})
        users = [inst.user(self.unique_email("cycle%d" % i)) for i in range(3)]
        log = []
        totals = {"deployed": 0}
        for cycle in range(1, CYCLES + 1):
            log.extend(self.one_cycle(inst, users, cycle))
            totals["deployed"] = self.verify(inst, users, log, cycle)
        acked = {}
        for e in log:
            if e[4] is not None and e[4] < 300:
                acked[e[0]] = acked.get(e[0], 0) + 1
        print("killcycle: %d cycles, %d acknowledged writes (%s), %d deployed, none lost"
              % (CYCLES, sum(acked.values()),
                 ", ".join("%s %d" % kv for kv in sorted(acked.items())), totals["deployed"]))
        for op in ("create", "put", "deploy", "pause", "run", "key"):
            self.assertGreater(acked.get(op, 0), 0, "the load made no acknowledged %s" % op)
        self.assertEqual(inst.health()["db"], "ok")

    def one_cycle(self, inst, users, cycle):
        """Load; SIGKILL a worker; load; SIGKILL the daemon; restart.
        Returns the cycle's log."""
        load = MixedLoad(inst, users, threads=9)
        t0 = time.monotonic()
        load.start(cycle)
        try:
            poll(lambda: load.acked_since(t0) >= ACKED_PER_PHASE, 120,
                 what="cycle %d: %d acknowledged writes" % (cycle, ACKED_PER_PHASE))
            workers = inst.wait_workers()
            os.kill(workers[cycle % len(workers)], signal.SIGKILL)
            inst.wait_workers(exclude=[workers[cycle % len(workers)]])
            t1 = time.monotonic()
            poll(lambda: load.acked_since(t1) >= ACKED_PER_PHASE, 120,
                 what="cycle %d: %d acknowledged writes after the worker's death"
                 % (cycle, ACKED_PER_PHASE))
            inst.kill_daemon(signal.SIGKILL)          # waits for every worker to be gone
        finally:
            stuck = load.finish()
        self.assertEqual(stuck, 0, "cycle %d: load threads stuck in requests" % cycle)
        inst.restart_daemon()
        self.assertIsNone(inst.daemon.poll(), "cycle %d: the daemon did not come back" % cycle)
        return load.log

    def verify(self, inst, users, log, cycle):
        """Every acknowledged write of every cycle so far; returns the
        number of deployed agents."""
        tokens = {slug: tok for tok, slug in users}
        states = expected_states([e for e in log if e[0] in WANT])
        problems = []
        # this cycle's agents one by one: status and prompt
        mine = "g%d-" % cycle
        for (slug, name), (want, prompts) in sorted(states.items()):
            if not name.startswith(mine):
                continue
            status, _, body = inst.request("GET", "/api/v1/orgs/%s/agents/%s" % (slug, name),
                                           token=tokens[slug])
            if status != 200:
                problems.append("%s/%s: acknowledged create, GET %s" % (slug, name, status))
            elif body["wizard_config"]["step2"]["system_prompt"] not in prompts:
                problems.append("%s/%s: prompt %r, expected one of %s" % (
                    slug, name, body["wizard_config"]["step2"]["system_prompt"],
                    sorted(prompts)))
        # every cycle's agents through the lists; keys; usage
        deployed = 0
        for tok, slug in users:
            base = "/api/v1/orgs/%s" % slug
            listed = assert_json(self, inst.request("GET", base + "/agents", token=tok),
                                 200)["agents"]
            have = {a["name"]: a["status"] for a in listed}
            deployed += sum(1 for s in have.values() if s == "deployed")
            for (s, name), (want, _) in states.items():
                if s != slug:
                    continue
                if name not in have:
                    problems.append("%s/%s: acknowledged create, not listed" % (slug, name))
                elif have[name] not in want:
                    problems.append("%s/%s: status %s, expected one of %s"
                                    % (slug, name, have[name], sorted(want)))
            problems += self.verify_keys(inst, tok, slug, log)
            problems += self.verify_runs(inst, tok, slug, log)
        self.assertEqual(problems[:20], [], "cycle %d: %d acknowledged writes lost"
                         % (cycle, len(problems)))
        self.assertEqual(inst.registry_count(), deployed,
                         "cycle %d: registry disagrees with the stored statuses" % cycle)
        return deployed

    def verify_keys(self, inst, tok, slug, log):
        base = "/api/v1/orgs/%s" % slug
        acked = [e for e in log if e[0] == "key" and e[1] == slug and e[4] == 201]
        listed = {k["id"] for k in assert_json(self, inst.request("GET", base + "/keys",
                                                                  token=tok), 200)["keys"]}
        problems = ["%s: key %s answered 201, not listed" % (slug, e[2])
                    for e in acked if e[2] not in listed]
        for e in acked[-3:]:
            status = inst.request("GET", base + "/agents", headers={"X-API-Key": e[3]})[0]
            if status != 200:
                problems.append("%s: key %s answered 201, now %s" % (slug, e[2], status))
        return problems

    def verify_runs(self, inst, tok, slug, log):
        runs = [e for e in log if e[0] == "run" and e[1] == slug]
        acked = sum(1 for e in runs if e[4] == 200)
        unknown = sum(1 for e in runs if e[4] is None or e[4] >= 500)
        u = assert_json(self, inst.request("GET", "/api/v1/orgs/%s/usage?days=1" % slug,
                                           token=tok), 200)
        if not acked <= u["total_requests"] <= acked + unknown:
            return ["%s: usage counts %d runs; %d were answered 200, %d unanswered"
                    % (slug, u["total_requests"], acked, unknown)]
        return []


if __name__ == "__main__":
    main()
