"""test_walkthrough - the user's own curl lines, run with `sh` exactly as
written, against the instance `scripts/dev-start` starts with its default
front server (issue 11).

dev-start runs as a reader runs it (ASTROMESH_NO_DEPS=1, ASTROMESH_BUILDDIR,
--data in a fresh folder, a free --port); only the host and port of the
lines and the variables a reader sets by hand (ORG, TOKEN, KEY) are
substituted, as a shell would. `curl` is a shell function that calls the
real curl with -D (the answer's head to a file) and copies what it prints,
so that each answer's status and Content-Type are checked without touching
the line itself.

  - the README walk-through's lifecycle block, top to bottom: every answer
    the expected status, JSON where JSON is promised;
  - ../shared/seed/agent-lifecycle.txt's pause, edit, redeploy (the seed's
    text is copied in SEED below: tests cannot reach outside the tree);
  - every bodiless POST anywhere in the README walk-through (no -d): none
    is refused by the front server (no 411), every answer is JSON;
  - `astromesh-cloudd -S`, which dev-start asks for its sockets: a
    flow-style `server: {socket: "..."}` with a space in the path."""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from harness import BUILDDIR, DAEMON, SRCDIR, free_port, main, poll

README = os.path.join(SRCDIR, "README.md")
DEV_START = os.path.join(SRCDIR, "scripts", "dev-start")
DEV_STOP = os.path.join(SRCDIR, "scripts", "dev-stop")
EMAIL = "dev@example.com"
ORG = "dev-example-com"

# The user's lines from /work/shared/seed/agent-lifecycle.txt, verbatim.
SEED = r'''
# 1. Pause the agent
curl -X POST "https://api.astromesh.io/api/v1/orgs/$ORG/agents/my-bot/pause" \
-H "Authorization: Bearer $TOKEN"
# 2. Update the config
curl -X PUT "https://api.astromesh.io/api/v1/orgs/$ORG/agents/my-bot" \
-H "Authorization: Bearer $TOKEN" \
-H "Content-Type: application/json" \
-d '{"step2": {"system_prompt": "Updated prompt..."}}'
# 3. Redeploy
curl -X POST "https://api.astromesh.io/api/v1/orgs/$ORG/agents/my-bot/deploy" \
-H "Authorization: Bearer $TOKEN"
'''


def readme_walkthrough():
    """The text of README's "Walk-through" section (up to the next ## )."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    start = text.index("## Walk-through")
    end = text.index("\n## ", start + 3)
    return text[start:end]


def sh_blocks(text):
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def curl_commands(block):
    """Each curl command of a shell block, continuation lines joined as
    the shell joins them (backslash-newline removed)."""
    cmds, cur = [], None
    for line in block.splitlines():
        if cur is None and re.search(r"(^|\$\(|\s)curl\s", line) and \
                not line.lstrip().startswith("#"):
            cur = ""
        if cur is not None:
            cur += line[:-1] if line.endswith("\\") else line
            if not line.endswith("\\"):
                cmds.append(cur)
                cur = None
    return cmds


def bodiless_post(cmd):
    return re.search(r"-X\s+POST\b", cmd) and not re.search(r"\s(-d|--data\S*|-F|-T)\s", cmd)


class DevStart:
    """scripts/dev-start in the background on a fresh data folder."""

    def __init__(self, args=()):
        # as root, Apache's children must reach the socket: a folder under
        # /tmp they can search, as dev-start's message says
        self.dir = tempfile.mkdtemp(prefix="walkthrough-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        env = dict(os.environ, ASTROMESH_NO_DEPS="1", ASTROMESH_BUILDDIR=BUILDDIR)
        env.pop("ASTROMESH_FRONT", None)        # the default front, as a reader has it
        self.out = open(os.path.join(self.dir, "dev-start.out"), "wb")
        self.proc = subprocess.Popen(
            [DEV_START, "--data", self.data, "--port", str(self.port)] + list(args),
            stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        poll(self.healthy, 90, interval=0.2, what="dev-start's instance to answer")

    def healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError("dev-start exited %s:\n%s" % (self.proc.returncode, self.log()))
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", "/api/v1/health")
            return conn.getresponse().status == 200
        except OSError:
            return False

    def server_header(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request("GET", "/api/v1/health")
        return conn.getresponse().getheader("Server", "")

    def pids(self):
        """Live processes whose command line names this instance's folder."""
        found = []
        for entry in os.listdir("/proc"):
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if entry.isdigit() and self.dir.encode() in cmd:
                found.append(int(entry))
        return found

    def log(self):
        with open(os.path.join(self.dir, "dev-start.out"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, keep=False):
        try:
            subprocess.run([DEV_STOP, "--data", self.data], capture_output=True, timeout=60)
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        finally:
            self.out.close()
            if not keep:
                shutil.rmtree(self.dir, ignore_errors=True)


class WalkthroughTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.failed = False
        cls.dev = DevStart()
        cls.addClassCleanup(lambda: cls.dev.stop(keep=cls.failed))
        cls.api = "http://127.0.0.1:%d/api/v1" % cls.dev.port

    def tearDown(self):
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        if result is not None and any(t is self for t, _ in result.failures + result.errors):
            type(self).failed = True
            print("\n---- dev-start output ----\n" + self.dev.log())

    def run_sh(self, script, env_vars=None):
        """Run script with sh, curl wrapped to record each answer. Return
        [(status, content type, printed text)] in call order."""
        d = tempfile.mkdtemp(prefix="answers-", dir=self.dev.dir)
        prelude = ('curl() {\n'
                   '    _n=$(( $(cat "$ANSWERS/n" 2>/dev/null || echo 0) + 1 ))\n'
                   '    echo "$_n" >"$ANSWERS/n"\n'
                   '    command curl -D "$ANSWERS/$_n.head" "$@" | tee "$ANSWERS/$_n.out"\n'
                   '}\n'
                   'set -e\n')
        env = dict(os.environ, ANSWERS=d, **(env_vars or {}))
        p = subprocess.run(["sh", "-c", prelude + script], env=env, capture_output=True,
                           timeout=300)
        self.assertEqual(p.returncode, 0, "sh failed: %s\n%s\nscript:\n%s"
                         % (p.returncode, p.stderr.decode("utf-8", "replace"), script))
        answers = []
        n = int(open(os.path.join(d, "n")).read()) if os.path.exists(os.path.join(d, "n")) else 0
        for i in range(1, n + 1):
            with open(os.path.join(d, "%d.head" % i), "rb") as f:
                head = f.read().decode("latin-1")
            with open(os.path.join(d, "%d.out" % i), "rb") as f:
                out = f.read().decode("utf-8", "replace")
            statuses = re.findall(r"(?m)^HTTP/\S+ (\d{3})", head)
            ctype = re.findall(r"(?mi)^content-type:\s*([^;\s]+)", head)
            answers.append((int(statuses[-1]) if statuses else 0,
                            ctype[-1].lower() if ctype else "", out))
        return answers

    def assert_json_out(self, answer, cmd):
        status, ctype, out = answer
        if status == 204:
            return None
        self.assertEqual(ctype, "application/json", "%s: %r" % (cmd, answer))
        body = out.split("\r\n\r\n", 1)[1] if out.startswith("HTTP/") else out
        doc = json.loads(body)
        if status >= 400:
            self.assertEqual(set(doc) - {"details"}, {"error", "message", "status"}, cmd)
            self.assertEqual(doc["status"], status, cmd)
        return doc

    def login(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.dev.port, timeout=30)
        conn.request("POST", "/api/v1/auth/dev/login",
                     body=json.dumps({"email": EMAIL, "name": "Dev"}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        return json.loads(resp.read())["access_token"]

    def call(self, method, path, token, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.dev.port, timeout=30)
        conn.request(method, "/api/v1" + path, body=json.dumps(body) if body else None,
                     headers={"Authorization": "Bearer " + token,
                              "Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()

    # -- the README's lifecycle block --------------------------------------------------
    def test_1_readme_lifecycle_block(self):
        block = sh_blocks(readme_walkthrough())[0]
        self.assertIn("/pause", block)
        self.assertIn("API=http://127.0.0.1:8080/api/v1", block)
        script = block.replace("127.0.0.1:8080", "127.0.0.1:%d" % self.dev.port)
        answers = self.run_sh(script)
        cmds = curl_commands(block)
        self.assertEqual(len(answers), len(cmds), answers)
        # the first key a line contains gives its status
        expected = {"-X DELETE": 204, "-X PUT": 200, "/pause": 200, "/deploy": 200,
                    "/yaml": 200, "auth/dev/login": 200, "orgs/me": 200, "agents -H": 201,
                    "my-bot -H": 200}
        for cmd, answer in zip(cmds, answers):
            want = [v for k, v in expected.items() if k in cmd]
            self.assertTrue(want, "a new line in the walk-through: give it a status here: "
                            + cmd)
            self.assertEqual(answer[0], want[0], "%s -> %r" % (cmd, answer))
            if "/yaml" not in cmd:
                self.assert_json_out(answer, cmd)
        states = [json.loads(a[2]).get("status") for c, a in zip(cmds, answers)
                  if re.search(r"/(deploy|pause)\b", c)]
        self.assertEqual(states, ["deployed", "paused", "deployed"])

    # -- the user's own lines ----------------------------------------------------------
    def test_2_seed_lines(self):
        token = self.login()
        self.call("DELETE", "/orgs/%s/agents/my-bot" % ORG, token)
        st, body = self.call("POST", "/orgs/%s/agents" % ORG, token, {
            "name": "my-bot", "display_name": "My Bot", "step1": {"model": "echo/echo-1"},
            "step2": {"system_prompt": "You are a helpful support agent."}})
        self.assertEqual(st, 201, body)
        st, body = self.call("POST", "/orgs/%s/agents/my-bot/deploy" % ORG, token, {})
        self.assertEqual(st, 200, body)
        script = SEED.replace("https://api.astromesh.io", "http://127.0.0.1:%d" % self.dev.port)
        answers = self.run_sh(script, {"ORG": ORG, "TOKEN": token})
        self.assertEqual([a[0] for a in answers], [200, 200, 200], answers)
        docs = [self.assert_json_out(a, "seed") for a in answers]
        self.assertEqual(docs[0]["status"], "paused")
        self.assertEqual(docs[1]["wizard_config"]["step2"]["system_prompt"], "Updated prompt...")
        self.assertEqual(docs[2]["status"], "deployed")

    # -- every bodiless POST of the walk-through ---------------------------------------
    def test_3_every_bodiless_post_reaches_the_daemon(self):
        token = self.login()
        cmds = [c for b in sh_blocks(readme_walkthrough()) for c in curl_commands(b)
                if bodiless_post(c)]
        self.assertGreaterEqual(len(cmds), 4, cmds)
        env = {"API": self.api, "ORG": ORG, "TOKEN": token,
               "AUTH": "Authorization: Bearer " + token, "KEY": "ask-not-a-real-key"}
        for cmd in cmds:
            with self.subTest(cmd=cmd):
                answers = self.run_sh(cmd.replace("…", ""), env)
                self.assertEqual(len(answers), 1)
                self.assertNotEqual(answers[0][0], 411, "the default front refuses: " + cmd)
                self.assertNotEqual(answers[0][0], 0, cmd)
                self.assert_json_out(answers[0], cmd)


class DevStartFrontsTest(unittest.TestCase):
    """--front picks the front server; dev-stop leaves no process behind."""

    def check_front(self, args, server):
        dev = DevStart(args)
        ok = False
        try:
            self.assertIn(server, dev.server_header())
            self.assertTrue(dev.pids())
            p = subprocess.run([DEV_STOP, "--data", dev.data], capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            dev.proc.wait(timeout=60)
            poll(lambda: not dev.pids(), 30, what="every process of the instance to end")
            ok = True
        finally:
            dev.stop(keep=not ok)

    def test_default_is_apache(self):
        self.check_front([], "Apache")

    def test_front_lighttpd(self):
        self.check_front(["--front", "lighttpd"], "lighttpd")


class DaemonSocketsTest(unittest.TestCase):
    """astromesh-cloudd -S: what dev-start points the front server at."""

    def test_flow_style_socket(self):
        d = tempfile.mkdtemp(prefix="sockets-")
        self.addCleanup(shutil.rmtree, d, True)
        key = os.path.join(d, "master.key")
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(key, 0o600)
        sock = os.path.join(d, "a dir", "fcgi.sock")
        conf = os.path.join(d, "c.yaml")
        with open(conf, "w") as f:
            f.write('server: {socket: "%s", workers: 2}\nstorage: {data_dir: "%s"}\n'
                    'auth: {jwt_secret: "%s", master_key_file: "%s"}\n'
                    % (sock, d, "s" * 40, key))
        os.chmod(conf, 0o600)     # it holds a secret: the daemon refuses it readable by others
        p = subprocess.run([DAEMON, "-S", "-c", conf], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode().splitlines(),
                         [sock, os.path.join(d, "a dir", "stream.sock")])
        with open(conf, "w") as f:
            f.write("server: {socket: '%s', stream_socket: \"%s/s.sock\"}\n"
                    "storage: {data_dir: %s}\nauth: {jwt_secret: %s, master_key_file: %s}\n"
                    % (sock, d, d, "s" * 40, key))
        p = subprocess.run([DAEMON, "-S", "-c", conf], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode().splitlines(), [sock, d + "/s.sock"])

    def test_bad_config_says_why(self):
        p = subprocess.run([DAEMON, "-S", "-c", "/nonexistent/c.yaml"], capture_output=True,
                           timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, b"")
        self.assertIn(b"/nonexistent/c.yaml", p.stderr)


if __name__ == "__main__":
    main()
