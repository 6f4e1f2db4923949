"""test_cli - the astromesh command-line client (issue 13) against the real
daemon behind the real lighttpd, run as a user runs it: the built binary,
with its own HOME and XDG_CONFIG_HOME, through subprocess.

Asserted as a user sees it: login writes the credentials file 0600 in a
0700 directory and logout removes it; every command's --json output parses
and matches the server; the exit codes (1 API error naming the field, 2
usage, 3 server unreachable, 4 authentication); ASTROMESH_TOKEN,
ASTROMESH_API_KEY and --org override the saved credentials; an expired
access token is refreshed once, transparently, and the rotated pair saved;
run and test read the event stream and print the answer; apply creates
from nothing, changes nothing on a second run, pauses-edits-redeploys a
deployed agent, prunes with --prune, changes nothing with --dry-run, and
refuses an invalid file whole with file:line:column before any call."""

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time

from fakeprov import FakeProvider, provider_config
from harness import BUILDDIR, InstanceTestCase, jwt_decode, jwt_sign, main

ASTROMESH = os.path.join(BUILDDIR, "astromesh")

AGENTS_YAML = """\
# two agents: one live, one draft
- name: support-bot
  display_name: Support Bot
  deployed: true
  step1: {model: echo/echo-1}
  step2:
    system_prompt: You help.
    tone: professional
- name: draft-bot
  step1: {model: echo/echo-1}
"""


class CliTestCase(InstanceTestCase):

    def setUp(self):
        self.home = tempfile.mkdtemp(prefix="am-cli-")
        self.addCleanup(shutil.rmtree, self.home, True)
        self.cfg = os.path.join(self.home, "cfg")
        self.creds = os.path.join(self.cfg, "astromesh", "credentials")
        self.email = self.unique_email("cli")

    def cli(self, *args, stdin=None, env=None, code=0):
        """Run astromesh with args; assert its exit code; return the process."""
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.home,
             "XDG_CONFIG_HOME": self.cfg, "ASTROMESH_URL": self.inst.base_url}
        e.update(env or {})
        p = subprocess.run([ASTROMESH] + list(args), input=stdin if stdin is not None else "",
                           capture_output=True, text=True, env=e, timeout=120)
        self.assertEqual(p.returncode, code, "astromesh %s -> %d\nstdout: %s\nstderr: %s"
                         % (" ".join(args), p.returncode, p.stdout, p.stderr))
        return p

    def js(self, *args, **kw):
        return json.loads(self.cli("--json", *args, **kw).stdout)

    def login(self):
        out = self.cli("login", "--email", self.email).stdout
        self.slug = self.saved()["org"]
        self.assertIn(self.slug, out)
        return self.slug

    def saved(self):
        with open(self.creds) as f:
            return json.load(f)

    def write_file(self, name, text):
        path = os.path.join(self.home, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def agents(self):
        return {a["name"]: a for a in self.js("agents", "list")["agents"]}


class LoginTest(CliTestCase):

    def test_login_saves_credentials_0600_and_logout_forgets_them(self):
        self.login()
        self.assertEqual(stat.S_IMODE(os.stat(self.creds).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.creds)).st_mode), 0o700)
        c = self.saved()
        self.assertEqual(c["url"], self.inst.base_url)
        self.assertTrue(c["access_token"] and c["refresh_token"])
        self.assertEqual(self.js("agents", "list"), {"agents": []})
        self.cli("logout")
        self.assertFalse(os.path.exists(self.creds))
        p = self.cli("agents", "list", code=4)
        self.assertIn("not logged in", p.stderr)
        # the session ended on the server too
        status, _, _ = self.inst.request("GET", "/api/v1/orgs/me", token=c["access_token"])
        self.assertEqual(status, 401)

    def test_an_expired_access_token_is_refreshed_once_and_saved(self):
        self.login()
        c = self.saved()
        h, p, _ = jwt_decode(c["access_token"])
        p["exp"] = int(time.time()) - 30
        p["iat"] = p["exp"] - 900
        c["access_token"] = jwt_sign(self.inst.jwt_secret, h, p)
        with open(self.creds, "w") as f:
            json.dump(c, f)
        status, _, _ = self.inst.request("GET", "/api/v1/orgs/me", token=c["access_token"])
        self.assertEqual(status, 401)                     # the forged token is expired
        self.assertEqual(self.js("agents", "list"), {"agents": []})
        n = self.saved()
        self.assertNotEqual(n["access_token"], c["access_token"])
        self.assertNotEqual(n["refresh_token"], c["refresh_token"])
        self.assertEqual(stat.S_IMODE(os.stat(self.creds).st_mode), 0o600)
        self.assertEqual(jwt_decode(n["access_token"])[1]["sub"], p["sub"])
        # a dead refresh token: authentication error, exit 4
        n["access_token"] = c["access_token"]
        n["refresh_token"] = "not-a-refresh-token"
        with open(self.creds, "w") as f:
            json.dump(n, f)
        self.assertIn("(unauthorized", self.cli("agents", "list", code=4).stderr)

    def expire_saved_token(self):
        c = self.saved()
        h, p, _ = jwt_decode(c["access_token"])
        p["exp"] = int(time.time()) - 30
        c["access_token"] = jwt_sign(self.inst.jwt_secret, h, p)
        with open(self.creds, "w") as f:
            json.dump(c, f)

    def test_clients_refreshing_at_once_take_turns_and_keep_the_session(self):
        """A refresh token is single-use and reusing one revokes its family:
        eight clients that find the token expired at once must not each
        spend the same refresh token."""
        self.login()
        self.expire_saved_token()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.home,
               "XDG_CONFIG_HOME": self.cfg, "ASTROMESH_URL": self.inst.base_url}
        procs = [subprocess.Popen([ASTROMESH, "--json", "agents", "list"], env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(8)]
        results = [(p.wait(60), p.stdout.read(), p.stderr.read()) for p in procs]
        for p in procs:
            p.stdout.close()
            p.stderr.close()
        for code, out, err in results:
            self.assertEqual(code, 0, err)
            self.assertEqual(json.loads(out), {"agents": []})
        self.assertEqual(self.js("agents", "list"), {"agents": []})
        status, _, _ = self.inst.request("GET", "/api/v1/orgs/me",
                                         token=self.saved()["access_token"])
        self.assertEqual(status, 200)

    def test_environment_and_org_override_the_saved_credentials(self):
        self.login()
        token, other = self.inst.user(self.unique_email("other"))
        got = self.js("agents", "list", env={"ASTROMESH_TOKEN": token, "ASTROMESH_ORG": other})
        self.assertEqual(got, {"agents": []})
        # the saved org with someone else's token: 403, exit 4
        self.cli("agents", "list", env={"ASTROMESH_TOKEN": token}, code=4)
        self.js("agents", "list", "--org", other, env={"ASTROMESH_TOKEN": token})
        key = self.js("keys", "create", "ci", "--scope", "manage")["secret"]
        self.inst.secrets.add(key)
        self.assertEqual(self.js("agents", "list", env={"ASTROMESH_API_KEY": key}), {"agents": []})
        # login --api-key: checked, then saved in place of the tokens
        self.cli("login", "--api-key", key, code=2)       # which org?
        self.cli("login", "--api-key", "ask-wrong", "--org", self.slug, code=4)
        self.cli("login", "--api-key", key, "--org", self.slug)
        self.assertEqual(self.saved().get("api_key"), key)
        self.assertNotIn("access_token", self.saved())
        self.cli("agents", "create", "k-bot", "--model", "echo/echo-1")
        self.assertIn("k-bot", self.agents())

    def test_exit_codes(self):
        self.cli("frobnicate", code=2)
        self.cli("agents", "list", "--bogus", code=2)
        self.cli(code=2)
        self.cli("agents", "list", code=4)                 # not logged in
        self.login()
        self.cli("agents", "get", code=2)
        self.cli("rollback", "x", "one", code=2)
        p = self.cli("agents", "list", env={"ASTROMESH_URL": "http://127.0.0.1:1"}, code=3)
        self.assertIn("cannot reach", p.stderr)
        p = self.cli("agents", "list", env={"ASTROMESH_TOKEN": "garbage"}, code=4)
        p = self.cli("agents", "create", "bad-bot", "--model", "nope", code=1)
        self.assertIn("step1.model", p.stderr)
        self.assertIn("validation_error", p.stderr)
        p = self.cli("agents", "get", "ghost", code=1)
        self.assertIn("agent_not_found", p.stderr)


class AgentCommandsTest(CliTestCase):

    def test_agent_lifecycle_run_test_versions_and_rollback(self):
        self.login()
        out = self.cli("agents", "create", "bot", "--model", "echo/echo-1",
                       "--prompt", "first").stdout
        self.assertIn("created bot (draft)", out)
        table = self.cli("agents", "list").stdout.splitlines()
        self.assertEqual(table[0].split()[:3], ["NAME", "STATUS", "MODEL"])
        self.assertEqual(table[1].split()[:3], ["bot", "draft", "echo/echo-1"])
        wc_file = self.write_file("edit.json", '{"step2": {"system_prompt": "second"}}')
        self.cli("agents", "edit", "bot", "-f", wc_file)
        got = self.js("agents", "get", "bot")
        self.assertEqual(got["wizard_config"]["step2"]["system_prompt"], "second")
        self.assertIn("apiVersion", self.cli("agents", "yaml", "bot").stdout)
        # the flag reaches the server: an echo agent has no upstream
        # equivalent, and the portable export says so by the YAML path
        p = self.cli("agents", "yaml", "bot", "--portable", code=1)
        self.assertIn("spec.model.primary.provider", p.stderr)
        self.assertIn("deployed bot as %s__bot" % self.slug, self.cli("agents", "deploy", "bot").stdout)
        p = self.cli("agents", "edit", "bot", "--prompt", "x", code=1)
        self.assertIn("agent_deployed", p.stderr)
        # run: the event stream (done carries "type"), the tokens printed
        done = self.js("run", "bot", "hello", "there", "--session", "s-1")
        self.assertEqual(done["type"], "done")
        self.assertEqual(done["session_id"], "s-1")
        p = self.cli("run", "bot", "hello", "there")
        self.assertEqual(p.stdout, done["answer"] + "\n")
        self.assertIn("session: ", p.stderr)
        p = self.cli("test", "bot", "--quiet", stdin="from stdin\n")
        self.assertIn("from stdin", p.stdout)
        self.assertEqual(p.stderr, "")
        self.cli("run", "ghost", "hi", code=1)
        # a second version, then back to the first
        self.cli("agents", "pause", "bot")
        self.cli("agents", "edit", "bot", "--prompt", "third")
        self.cli("agents", "deploy", "bot")
        versions = self.js("versions", "bot")["versions"]
        self.assertEqual([v["version"] for v in versions], [2, 1])
        self.assertIn("VERSION", self.cli("versions", "bot").stdout)
        self.assertEqual(self.js("versions", "bot", "1")["wizard_config"]["step2"]["system_prompt"],
                         "second")
        self.assertIn("rolled back bot to version 1", self.cli("rollback", "bot", "1").stdout)
        self.assertEqual(self.js("agents", "get", "bot")["wizard_config"]["step2"]["system_prompt"],
                         "second")
        self.cli("rollback", "bot", "9", code=1)
        self.cli("agents", "delete", "bot")
        self.assertEqual(self.agents(), {})

    def test_usage_keys_providers_members(self):
        self.login()
        self.cli("agents", "create", "-f", self.write_file("a.yaml", "name: u-bot\nstep1: {model: echo/echo-1}\n"
                                                          "step2: {system_prompt: hi}\n"))
        self.cli("agents", "deploy", "u-bot")
        for _ in range(3):
            self.cli("run", "u-bot", "hi")
        usage = self.js("usage", "--days", "7")
        self.assertEqual(usage["total_requests"], 3)
        out = self.cli("usage").stdout
        self.assertIn("u-bot", out)
        self.assertIn("requests per day", out)
        self.assertRegex(out, r"\d{4}-\d\d-\d\d  #+ 3\n")
        self.cli("usage", "--days", "500", code=1)
        key = self.js("keys", "create", "runner")
        self.inst.secrets.add(key["secret"])
        self.assertEqual(key["scopes"], ["run"])
        listed = self.js("keys", "list")["keys"]
        self.assertEqual([k["id"] for k in listed], [key["id"]])
        self.assertNotIn(key["secret"], self.cli("keys", "list").stdout)
        quiet = self.cli("keys", "create", "quiet-one", "--quiet").stdout
        self.inst.secrets.add(quiet.strip())
        self.assertRegex(quiet, r"^ask-[A-Za-z0-9_-]+\n$")
        self.cli("keys", "revoke", [k["id"] for k in self.js("keys", "list")["keys"]
                                    if k["name"] == "quiet-one"][0], "--quiet")
        self.cli("keys", "revoke", key["id"])
        self.assertEqual(self.js("keys", "list")["keys"], [])
        provider_key = "sk-cli-test-" + "x" * 24
        self.inst.secrets.add(provider_key)
        self.cli("providers", "set", "openai", stdin=provider_key + "\n")
        provs = self.js("providers", "list")["providers"]
        self.assertEqual([p["provider"] for p in provs], ["openai"])
        self.assertNotIn(provider_key, self.cli("providers", "list").stdout)
        self.cli("providers", "delete", "openai")
        self.cli("providers", "delete", "openai", code=1)
        self.assertEqual(self.js("members", "invite", "bob@example.com", "--role", "admin")["status"],
                         "invited")
        members = {m["email"]: m for m in self.js("members", "list")["members"]}
        self.assertEqual(members["bob@example.com"]["status"], "invited")
        self.assertIn("bob@example.com", self.cli("members", "list").stdout)
        self.cli("members", "remove", "bob@example.com")
        self.assertNotIn("bob@example.com",
                         [m["email"] for m in self.js("members", "list")["members"]])
        p = self.cli("members", "invite", "carol@example.com", "--role", "owner", code=1)
        self.assertIn("role", p.stderr)


class ApplyTest(CliTestCase):

    def state(self):
        """{name: (status, wizard_config, updated_at)} of the org."""
        out = {}
        for name in self.agents():
            a = self.js("agents", "get", name)
            out[name] = (a["status"], a["wizard_config"], a.get("updated_at"))
        return out

    def test_apply_creates_then_changes_nothing_then_edits_a_deployed_agent(self):
        self.login()
        f = self.write_file("agents.yaml", AGENTS_YAML)
        dry = self.cli("apply", "-f", f, "--dry-run").stdout
        self.assertIn("would support-bot: create, deploy", dry)
        self.assertEqual(self.agents(), {})
        out = self.cli("apply", "-f", f).stdout
        self.assertIn("support-bot: create, deploy", out)
        self.assertIn("draft-bot: create\n", out)
        agents = self.agents()
        self.assertEqual(agents["support-bot"]["status"], "deployed")
        self.assertEqual(agents["draft-bot"]["status"], "draft")
        before = self.state()
        again = self.cli("apply", "-f", f)
        self.assertEqual(again.stdout, "no changes: 2 agent(s) up to date\n")
        self.assertEqual(self.js("apply", "-f", f)["changes"], 0)
        self.assertEqual(self.state(), before)
        # an edit of the deployed agent: dry run first (nothing moves), then for real
        f2 = self.write_file("agents.yaml", AGENTS_YAML.replace("You help.", "You help a lot."))
        dry = self.cli("apply", "-f", f2, "--dry-run").stdout
        self.assertIn("would support-bot: pause, edit (step2.system_prompt), redeploy", dry)
        plan = {a["name"]: a for a in self.js("apply", "-f", f2, "--dry-run")["agents"]}
        self.assertEqual(plan["support-bot"]["steps"], ["pause", "edit", "deploy"])
        self.assertEqual(plan["support-bot"]["fields"], ["step2.system_prompt"])
        self.assertEqual(plan["draft-bot"], {"name": "draft-bot", "steps": [], "fields": []})
        self.assertEqual(self.state(), before)
        out = self.cli("apply", "-f", f2).stdout
        self.assertIn("support-bot: pause, edit (step2.system_prompt), redeploy\n", out)
        self.assertIn("applied: 1 agent(s) changed, 1 up to date", out)
        got = self.js("agents", "get", "support-bot")
        self.assertEqual(got["status"], "deployed")
        self.assertEqual(got["wizard_config"]["step2"]["system_prompt"], "You help a lot.")
        self.assertEqual(got["version"], 2)
        self.assertEqual(self.js("run", "support-bot", "hi")["type"], "done")
        # deployed: false pauses
        f3 = self.write_file("agents.yaml", AGENTS_YAML.replace("deployed: true", "deployed: false")
                             .replace("You help.", "You help a lot."))
        self.assertIn("support-bot: pause\n", self.cli("apply", "-f", f3).stdout)
        self.assertEqual(self.agents()["support-bot"]["status"], "paused")

    def test_prune_deletes_only_with_the_flag_and_not_in_a_dry_run(self):
        self.login()
        self.cli("agents", "create", "stray", "--model", "echo/echo-1")
        d = os.path.join(self.home, "agents.d")
        os.mkdir(d)
        with open(os.path.join(d, "10-support.yaml"), "w") as fh:
            fh.write(AGENTS_YAML.split("- name: draft-bot")[0])
        with open(os.path.join(d, "20-draft.yml"), "w") as fh:
            fh.write("name: draft-bot\n---\nname: third-bot\n")
        with open(os.path.join(d, "README.txt"), "w") as fh:
            fh.write("not: [yaml\n")
        self.cli("apply", "-f", d)
        self.assertEqual(set(self.agents()), {"stray", "support-bot", "draft-bot", "third-bot"})
        self.assertIn("would stray: delete", self.cli("apply", "-f", d, "--prune", "--dry-run").stdout)
        self.assertIn("stray", self.agents())
        plan = self.js("apply", "-f", d, "--prune")
        self.assertEqual([(a["name"], a["steps"]) for a in plan["agents"] if a["steps"]],
                         [("stray", ["delete"])])
        self.assertEqual(set(self.agents()), {"support-bot", "draft-bot", "third-bot"})

    def test_apply_stops_at_the_first_refused_call_and_says_what_it_did(self):
        self.login()
        six = "".join("- name: bot-%d\n" % i for i in range(6))    # max_agents is 5
        p = self.cli("apply", "-f", self.write_file("six.yaml", six), code=1)
        self.assertEqual(p.stdout, "".join("bot-%d: create\n" % i for i in range(5)))
        self.assertIn("plan_limit_reached", p.stderr)
        self.assertIn("apply stopped at agent 'bot-5' after 5 change(s)", p.stderr)
        self.assertEqual(len(self.agents()), 5)
        # at the limit, --prune deletes first, so one agent can replace another
        swap = six.replace("- name: bot-4\n", "")
        out = self.cli("apply", "-f", self.write_file("swap.yaml", swap), "--prune").stdout
        self.assertEqual(out.splitlines()[:2], ["bot-4: delete", "bot-5: create"])
        self.assertEqual(sorted(self.agents()), ["bot-0", "bot-1", "bot-2", "bot-3", "bot-5"])

    def test_an_invalid_file_is_refused_whole_before_any_call(self):
        self.login()
        bad = AGENTS_YAML + "- name: third\n  step5:\n    max_tokens: 0\n  deployed: yes\n"
        f = self.write_file("bad.yaml", bad)
        p = self.cli("apply", "-f", f, code=2)
        self.assertIn("%s:13:5: step5.max_tokens: must be between 1 and 32768" % f, p.stderr)
        self.assertIn("%s:14:3: deployed: must be true or false" % f, p.stderr)
        self.assertIn("nothing was applied", p.stderr)
        self.assertEqual(self.agents(), {})
        p = self.cli("apply", "-f", self.write_file("broken.yaml", "- name: a\n  step1: [\n"), code=2)
        self.assertRegex(p.stderr, r"broken\.yaml:\d+:\d+: ")
        self.cli("apply", "-f", os.path.join(self.home, "missing.yaml"), code=2)
        self.cli("apply", code=2)
        self.assertEqual(self.agents(), {})


class StreamCliTest(CliTestCase):
    """run against a provider that streams slowly: the tokens are on the
    client's standard output while the answer is still coming."""

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeProvider(log_dir=os.path.join(BUILDDIR, "tests", "tmp"))
        cls.fake.start()
        cls.addClassCleanup(cls.fake.stop)
        cls.config = {"providers": provider_config(cls.fake)}
        super().setUpClass()

    def test_run_prints_each_token_as_it_arrives(self):
        self.login()
        self.cli("agents", "create", "slow", "--model", "openai/gpt-4o-mini", "--prompt", "p")
        self.cli("agents", "deploy", "slow")
        portable = self.cli("agents", "yaml", "slow", "--portable").stdout
        self.assertIn("api_key_env: OPENAI_API_KEY", portable)
        self.assertNotIn("api_key_ref", portable)
        self.fake.control(reply=" ".join("word%d" % i for i in range(8)), chunk_delay_ms=300)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.home,
               "XDG_CONFIG_HOME": self.cfg, "ASTROMESH_URL": self.inst.base_url}
        proc = subprocess.Popen([ASTROMESH, "run", "slow", "hi"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        try:
            first = os.read(proc.stdout.fileno(), 4096)
            at_first = time.monotonic()
            rest = proc.stdout.read()
            proc.wait(60)
            at_end = time.monotonic()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        self.assertEqual(proc.returncode, 0)
        self.assertIn(b"word0", first)
        self.assertNotIn(b"word7", first)
        self.assertGreater(at_end - at_first, 1.0)         # seven more chunks, 300 ms apart
        self.assertEqual((first + rest).decode().split(), ["word%d" % i for i in range(8)])
        # a provider that fails before the first token: the envelope, exit 1
        self.fake.control(mode="fail", status=500)
        p = self.cli("run", "slow", "hi", code=1)
        self.assertEqual(p.stdout, "")
        self.assertIn("provider_error, HTTP 502", p.stderr)


class ApacheCliTest(CliTestCase):
    """The same client through Apache: login, the event stream of run, apply."""
    front = "apache"

    def test_run_streams_and_apply_converges_through_apache(self):
        self.login()
        f = self.write_file("agents.yaml", AGENTS_YAML)
        self.assertIn("support-bot: create, deploy", self.cli("apply", "-f", f).stdout)
        done = self.js("run", "support-bot", "hello")
        self.assertEqual(done["type"], "done")
        self.assertEqual(self.cli("run", "support-bot", "hello").stdout, done["answer"] + "\n")
        self.assertIn("no changes", self.cli("apply", "-f", f).stdout)


if __name__ == "__main__":
    main()
