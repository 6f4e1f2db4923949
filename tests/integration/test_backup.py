"""test_backup - hot backup and restore (issue 11; the procedure is the
README's "Backup and restore"): db5.3_hotbackup copies the live environment
while runs, deploys and pauses go on; the copy is recovered
catastrophically (db5.3_recover -c) in a fresh data directory, verified
(db5.3_verify: nothing corrupt), and a second daemon started on it with the
same secrets finds every agent, lifecycle state and usage figure that was
acknowledged before the backup started, and serves them."""

import os
import shutil
import subprocess
import threading
import time

from harness import Instance, InstanceTestCase, assert_json, main, outcome_failed, poll

HOTBACKUP = shutil.which("db5.3_hotbackup")
RECOVER = shutil.which("db5.3_recover")
VERIFY = shutil.which("db5.3_verify")
CONFIG = {"limits": {"max_agents": 10000, "requests_per_day": 10000000}}


def wc(name):
    return {"name": name, "step1": {"model": "echo/echo-1"},
            "step2": {"system_prompt": "Backed up."}}


class Load:
    """Runs, create+deploy and pause/deploy cycles against inst until
    stopped, noting when each was acknowledged (time.monotonic())."""

    def __init__(self, inst, tok, base):
        self.inst, self.tok, self.base = inst, tok, base
        self.stop = threading.Event()
        self.runs = []              # ack times of runs answered 200
        self.run_attempts = 0
        self.deployed = []          # (ack time, name) of create+deploy done
        self.errors = []
        self.threads = [threading.Thread(target=f) for f in
                        (self.runner, self.runner, self.deployer, self.toggler)]

    def req(self, method, path, body=None):
        return self.inst.request(method, self.base + path, body, token=self.tok)

    def runner(self):
        while not self.stop.is_set():
            self.run_attempts += 1
            status, _, body = self.req("POST", "/runner/run", {"query": "count me"})
            if status == 200:
                self.runs.append(time.monotonic())
            else:
                self.errors.append(("run", status, body))

    def deployer(self):
        n = 0
        while not self.stop.is_set():
            name = "d-%d" % n
            n += 1
            s1 = self.req("POST", "", wc(name))[0]
            s2 = self.req("POST", "/%s/deploy" % name)[0]
            if (s1, s2) == (201, 200):
                self.deployed.append((time.monotonic(), name))
            else:
                self.errors.append(("deploy", name, s1, s2))

    def toggler(self):
        while not self.stop.is_set():
            for action in ("pause", "deploy"):
                status = self.req("POST", "/toggler/" + action)[0]
                if status != 200:
                    self.errors.append(("toggle", action, status))

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)


class BackupTest(InstanceTestCase):
    shared_instance = False

    def setUp(self):
        for tool in (HOTBACKUP, RECOVER, VERIFY):
            if tool is None:
                self.fail("db5.3-util is not installed (scripts/install-deps)")

    def fixed_agents(self, inst, tok, base):
        """Agents in each state that the load leaves alone: {name: status}."""
        states = {"a-draft": "draft", "a-deployed": "deployed", "a-paused": "paused"}
        for name, state in states.items():
            assert_json(self, inst.request("POST", base, wc(name), token=tok), 201)
            if state != "draft":
                assert_json(self, inst.request("POST", base + "/%s/deploy" % name,
                                               token=tok), 200)
            if state == "paused":
                assert_json(self, inst.request("POST", base + "/%s/pause" % name,
                                               token=tok), 200)
        for name in ("runner", "toggler"):
            assert_json(self, inst.request("POST", base, wc(name), token=tok), 201)
            assert_json(self, inst.request("POST", base + "/%s/deploy" % name, token=tok), 200)
        return states

    def restore(self, src, backup):
        """A second instance on a copy of backup, with src's secrets."""
        dst = Instance(CONFIG, name="restored")
        self.addCleanup(lambda: dst.stop(failed=outcome_failed(self)))
        for name in os.listdir(backup):
            shutil.copy2(os.path.join(backup, name), os.path.join(dst.data_dir, name))
        out = subprocess.run([RECOVER, "-c", "-h", dst.data_dir], capture_output=True,
                             text=True, timeout=300)
        self.assertEqual(out.returncode, 0, out.stderr)
        for name in sorted(os.listdir(dst.data_dir)):
            if name.endswith(".db"):
                out = subprocess.run([VERIFY, "-h", dst.data_dir, name], capture_output=True,
                                     text=True, timeout=300, cwd=dst.data_dir)
                self.assertEqual(out.returncode, 0, "%s: %s" % (name, out.stderr))
        dst.jwt_secret = src.jwt_secret
        dst.config["auth"]["jwt_secret"] = src.jwt_secret
        shutil.copy2(src.master_key_file, dst.master_key_file)
        dst.write_config()
        dst.secrets |= src.secrets
        return dst.start()

    def test_hot_backup_under_load_restores_everything_acknowledged(self):
        src = self.new_instance(CONFIG)
        tok, slug = src.user(self.unique_email("backup"))
        base = "/api/v1/orgs/%s/agents" % slug
        states = self.fixed_agents(src, tok, base)
        load = Load(src, tok, base)
        load.start()
        try:
            poll(lambda: len(load.runs) >= 20 and len(load.deployed) >= 3, 60,
                 what="load under way")
            t_start = time.monotonic()
            runs_before = len([t for t in load.runs if t < t_start])
            deployed_before = [n for t, n in load.deployed if t < t_start]
            backup = os.path.join(src.dir, "backup")
            out = subprocess.run([HOTBACKUP, "-h", src.data_dir, "-b", backup],
                                 capture_output=True, text=True, timeout=300)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            # the load went on during the backup
            poll(lambda: any(t > t_start for t in load.runs), 30, what="runs after the start")
        finally:
            load.finish()
        self.assertEqual(load.errors, [])
        self.assertGreater(len(load.runs), runs_before)

        dst = self.restore(src, backup)
        for name, state in states.items():
            body = assert_json(self, dst.request("GET", base + "/" + name, token=tok), 200)
            self.assertEqual(body["status"], state, name)
        for name in deployed_before:
            body = assert_json(self, dst.request("GET", base + "/" + name, token=tok), 200)
            self.assertEqual(body["status"], "deployed", name)
        body = assert_json(self, dst.request("GET", base + "/toggler", token=tok), 200)
        self.assertIn(body["status"], ("deployed", "paused"))
        usage = assert_json(self, dst.request("GET", "/api/v1/orgs/%s/usage?days=1" % slug,
                                              token=tok), 200)
        # every run acknowledged before the backup started, and none that was never tried
        self.assertGreaterEqual(usage["total_requests"], runs_before)
        self.assertLessEqual(usage["total_requests"], load.run_attempts)
        runner = [a for a in usage["by_agent"] if a["agent"] == "runner"]
        self.assertGreaterEqual(runner[0]["requests"] if runner else 0, runs_before)
        # the registry was rebuilt from the copy: every deployed agent runs
        deployed = [a for a in assert_json(self, dst.request("GET", base, token=tok),
                                           200)["agents"] if a["status"] == "deployed"]
        self.assertEqual(dst.registry_count(), len(deployed))
        for name in ("a-deployed", "runner") + tuple(deployed_before[:3]):
            status, _, body = dst.request("POST", base + "/%s/run" % name,
                                          {"query": "still here?"}, token=tok)
            self.assertEqual(status, 200, (name, body))
        # the original is untouched by the backup and still serves
        self.assertEqual(src.request("GET", base + "/a-paused", token=tok)[0], 200)


if __name__ == "__main__":
    main()
