"""test_ops - operating the daemon (SPEC section 8): health, SIGHUP reload,
SIGTERM/SIGINT shutdown with in-flight requests finishing, strict config
checking with -t, one daemon per data dir, and the lighttpd configs."""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from harness import (BUILDDIR, DAEMON, DEV_CONF, LIGHTTPD, SRCDIR, FcgiConnection, Instance,
                     InstanceTestCase, assert_error, assert_json, main, poll,
                     shm_names, socket_fd_count, pid_alive)

WC = {"name": "ops-bot", "step1": {"model": "echo/echo-1"},
      "step2": {"system_prompt": "Ops.", "tone": "casual"}}


class HealthTest(InstanceTestCase):

    def test_health_shape(self):
        resp = self.inst.request("GET", "/api/v1/health")
        body = assert_json(self, resp, 200)
        self.assertEqual(set(body), {"status", "version", "registry", "db"}, body)
        self.assertEqual(body["status"], "ok")
        self.assertEqual(body["db"], "ok")
        self.assertIsInstance(body["version"], str)
        self.assertRegex(body["version"], r"^\d+\.\d+\.\d+")
        self.assertEqual(set(body["registry"]), {"agents"})
        self.assertIs(type(body["registry"]["agents"]), int)
        self.assertGreaterEqual(body["registry"]["agents"], 0)

    def test_health_needs_no_token_and_ignores_a_bad_one(self):
        assert_json(self, self.inst.request("GET", "/api/v1/health", token="garbage"), 200)

    def test_health_counts_deployed_agents(self):
        tok, slug = self.inst.user(self.unique_email("health"))
        n0 = self.inst.registry_count()
        base = "/api/v1/orgs/%s/agents" % slug
        assert_json(self, self.inst.request("POST", base, WC, token=tok), 201)
        self.assertEqual(self.inst.registry_count(), n0)
        assert_json(self, self.inst.request("POST", base + "/ops-bot/deploy", token=tok), 200)
        self.assertEqual(self.inst.registry_count(), n0 + 1)


class SignalTest(InstanceTestCase):
    shared_instance = False

    def deploy_one(self, inst, email="ops@example.com"):
        tok, slug = inst.user(email)
        base = "/api/v1/orgs/%s/agents" % slug
        assert_json(self, inst.request("POST", base, WC, token=tok), 201)
        assert_json(self, inst.request("POST", base + "/ops-bot/deploy", token=tok), 200)
        return tok, slug, base

    def test_sighup_reload_keeps_serving(self):
        inst = self.new_instance()
        tok, slug, base = self.deploy_one(inst)
        pid = inst.daemon_pid
        inst.wait_workers()
        answers, stop = [], threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    answers.append(inst.request("GET", base + "/ops-bot", token=tok,
                                                timeout=30)[0])
                except OSError as e:
                    answers.append(repr(e))
        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            poll(lambda: len(answers) >= 50, 60, what="requests before the reload")
            for _ in range(3):
                os.kill(pid, signal.SIGHUP)
                n = len(answers)
                poll(lambda: len(answers) >= n + 100, 60, what="requests after SIGHUP")
            poll(lambda: len(inst.worker_pids()) == 2, 60, what="2 workers after reloads")
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        self.assertEqual([a for a in answers if a != 200][:10], [],
                         "requests failed during the reload")
        self.assertIsNone(inst.daemon.poll(), "SIGHUP stopped the daemon")
        self.assertEqual(inst.daemon_pid, pid)
        self.assertEqual(inst.registry_count(), 1, "the registry survives a reload")
        got = assert_json(self, inst.request("GET", base + "/ops-bot", token=tok), 200)
        self.assertEqual(got["status"], "deployed")

    def test_sighup_applies_new_limits(self):
        inst = self.new_instance()
        tok, slug = inst.user("limits@example.com")
        base = "/api/v1/orgs/%s/agents" % slug
        assert_json(self, inst.request("POST", base, dict(WC, name="one"), token=tok), 201)
        inst.config["limits"] = {"max_agents": 1}
        inst.write_config()
        os.kill(inst.daemon_pid, signal.SIGHUP)

        def limited():
            resp = inst.request("POST", base, dict(WC, name="two"), token=tok)
            if resp[0] == 201:         # not reloaded yet: undo and try again
                inst.request("DELETE", base + "/two", token=tok)
                return None
            return resp
        resp = poll(limited, 30, interval=0.2, what="max_agents 1 after SIGHUP")
        assert_error(self, resp, 409, "plan_limit_reached")
        # a reload is gradual: a retiring worker may still answer one request
        # while it drains, so the new limit is awaited, not assumed, here too
        me = poll(lambda: (lambda r: r[2] if r[0] == 200 and r[2]["limits"]["max_agents"] == 1
                           else None)(inst.request("GET", "/api/v1/orgs/me", token=tok)),
                  30, interval=0.2, what="/orgs/me showing max_agents 1")
        self.assertEqual(me["limits"]["max_agents"], 1)

    def test_sighup_with_a_broken_config_keeps_the_old_one(self):
        inst = self.new_instance()
        tok, slug, base = self.deploy_one(inst)
        pid = inst.daemon_pid
        with open(inst.config_path) as f:
            good = f.read()
        inst.write_config(good + "bogus_section: {x: 1}\n")
        os.kill(pid, signal.SIGHUP)
        # the refusal is logged; then it must still serve, on the same pid
        poll(lambda: "bogus_section" in inst.read_log(inst.daemon_log), 30,
             what="the daemon to log the rejected reload")
        self.assertIsNone(inst.daemon.poll(), "a bad reload stopped the daemon")
        self.assertEqual(inst.daemon_pid, pid)
        assert_json(self, inst.request("GET", base + "/ops-bot", token=tok), 200)
        self.assertEqual(inst.registry_count(), 1)
        inst.write_config(good)

    def stop_cleanly(self, sig):
        inst = self.new_instance()
        self.deploy_one(inst)
        workers = inst.wait_workers()
        shm = shm_names(inst.daemon_pid)
        self.assertTrue(os.path.exists(inst.socket))
        rc = inst.kill_daemon(sig)
        self.assertEqual(rc, 0, "exit status after %s" % sig.name)
        self.assertFalse(os.path.exists(inst.socket), "the socket was left behind")
        self.assertFalse([w for w in workers if pid_alive(w)], "workers left behind")
        self.assertEqual([n for n in shm if os.path.exists(n)], [],
                         "shared memory left behind")
        self.assertIn(inst.request("GET", "/api/v1/health")[0], (502, 503))
        log = inst.read_log(inst.daemon_log)
        self.assertNotRegex(log, r"(?i)\b(assert|segfault|core dumped)\b")
        # and it starts again on the same data, with the same registry
        inst.restart_daemon()
        self.assertEqual(inst.registry_count(), 1)

    def test_sigterm_stops_cleanly(self):
        self.stop_cleanly(signal.SIGTERM)

    def test_sigint_stops_cleanly(self):
        self.stop_cleanly(signal.SIGINT)

    def test_sigterm_lets_in_flight_requests_finish(self):
        """A request whose body is still arriving when SIGTERM comes is
        answered in full, and what it wrote is there after a restart."""
        inst = self.new_instance({"server": {"workers": 1, "threads": 2}})
        tok, slug = inst.user("inflight@example.com")
        (worker,) = inst.wait_workers()
        idle = socket_fd_count(worker)
        body = ('{"name":"in-flight",%s"step1":{"model":"echo/echo-1"}}'
                % (" " * 2000)).encode()
        conn = FcgiConnection(inst.socket)
        try:
            conn.begin("POST", "/api/v1/orgs/%s/agents" % slug,
                       headers={"Content-Type": "application/json",
                                "Authorization": "Bearer " + tok},
                       content_length=len(body))
            conn.send_body(body[:1000])
            poll(lambda: socket_fd_count(worker) > idle, 10,
                 what="the worker to accept the FastCGI connection")
            os.kill(inst.daemon_pid, signal.SIGTERM)
            # give the supervisor time to start draining; the request is
            # still in flight (its body is incomplete) all along
            time.sleep(0.3)
            self.assertIsNone(inst.daemon.poll(), "exited with a request in flight")
            conn.send_body(body[1000:], last=True)
            status, headers, payload = conn.response()
        finally:
            conn.close()
        self.assertEqual(status, 201, payload)
        self.assertEqual(inst.wait_daemon_exit(), 0)
        inst.start_daemon()
        inst.wait_healthy()
        got = assert_json(self, inst.request("GET", "/api/v1/orgs/%s/agents/in-flight" % slug,
                                             token=tok), 200)
        self.assertEqual(got["status"], "draft")

    def test_sigterm_under_load_loses_nothing_acknowledged(self):
        inst = self.new_instance({"limits": {"max_agents": 100000}})
        tok, slug = inst.user("drain@example.com")
        base = "/api/v1/orgs/%s/agents" % slug
        results, stop = [], threading.Event()

        def creator(t):
            n = 0
            while not stop.is_set():
                name = "d%d-%d" % (t, n)
                n += 1
                try:
                    status, _, body = inst.request("POST", base, dict(WC, name=name), token=tok,
                                                   timeout=30)
                except Exception as e:        # connection cut: unknown outcome
                    status, body = None, repr(e)
                results.append((name, status, body))
        threads = [threading.Thread(target=creator, args=(t,), daemon=True) for t in range(8)]
        for t in threads:
            t.start()
        try:
            poll(lambda: len(results) >= 100, 60, what="100 creates")
            rc = inst.kill_daemon(signal.SIGTERM)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        self.assertEqual(rc, 0)
        # a request either completed or never reached the daemon: lighttpd's
        # 503 (no backend) is fine, a cut answer (502, reset) is not
        bad = [(n, s, b) for n, s, b in results if s not in (201, 503)]
        self.assertEqual(bad[:10], [], "requests cut by the shutdown")
        inst.restart_daemon()
        lst = assert_json(self, inst.request("GET", base, token=tok), 200)
        stored = {a["name"] for a in lst["agents"]}
        acked = {n for n, s, _ in results if s == 201}
        self.assertEqual(sorted(acked - stored)[:10], [], "acknowledged creates lost")


class ConfigCheckTest(InstanceTestCase):
    shared_instance = False

    def setUp(self):
        tmproot = os.path.join(BUILDDIR, "tests", "tmp")
        os.makedirs(tmproot, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="cfg-", dir=tmproot)
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.key = os.path.join(self.dir, "master.key")
        self.write_key(os.urandom(32))

    def write_key(self, data, mode=0o600):
        if os.path.exists(self.key):
            os.unlink(self.key)
        fd = os.open(self.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.write(fd, data)
        os.close(fd)
        os.chmod(self.key, mode)        # whatever the umask

    def write(self, text):
        path = os.path.join(self.dir, "astromesh-cloud.yaml")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)           # it holds jwt_secret inline
        return path

    def check(self, text):
        """`astromesh-cloudd -t -c FILE`: (exit status, stderr)."""
        p = subprocess.run([DAEMON, "-t", "-c", self.write(text)], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=30)
        return p.returncode, p.stderr.decode("utf-8", "replace")

    def good(self, extra_server="", extra=""):
        return ("server:\n"
                "  socket: %s/fcgi.sock\n"
                "  workers: 2\n"
                "%s"
                "storage:\n"
                "  data_dir: %s/db\n"
                "auth:\n"
                "  jwt_secret: %s\n"
                "  master_key_file: %s\n"
                "  dev_login: true\n"
                "log:\n"
                "  level: info\n%s" % (self.dir, extra_server, self.dir, "k" * 40,
                                       self.key, extra))

    def assert_rejected(self, text, key, line):
        rc, out = self.check(text)
        self.assertEqual(rc, 1, out)
        self.assertIn(key, out)
        self.assertRegex(out, r"(:%d:|line %d\b)" % (line, line),
                         "line %d not named in %r" % (line, out))
        return out

    def test_good_config_passes(self):
        rc, out = self.check(self.good())
        self.assertEqual(rc, 0, out)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "fcgi.sock")),
                         "-t must not bind the socket")

    def test_unknown_key_names_key_and_line(self):
        self.assert_rejected(self.good(extra_server="  bogus_key: 1\n"), "bogus_key", 4)

    def test_unknown_section_names_key_and_line(self):
        self.assert_rejected(self.good(extra="colour: blue\n"), "colour", 12)

    def test_unknown_nested_key(self):
        self.assert_rejected(self.good(extra="providers:\n  openai:\n    api_kee: x\n"),
                             "api_kee", 14)

    def test_bad_values_are_rejected(self):
        for value in ("0", "abc", "-1", "100000"):
            with self.subTest(workers=value):
                text = self.good().replace("workers: 2", "workers: " + value)
                self.assert_rejected(text, "workers", 3)

    def test_master_key_missing_short_long_or_readable_by_others_is_refused(self):
        """The master key that seals org secrets must be exactly 32 bytes
        and mode 0600: anything else is one clear line and exit status 1,
        from -t and from a real start alike."""
        cases = [
            ("missing", None, 0o600, "No such file"),
            ("short", os.urandom(31), 0o600, "31 bytes, must be exactly 32"),
            ("long", os.urandom(33), 0o600, "33 bytes, must be exactly 32"),
            ("group-readable", os.urandom(32), 0o640, "chmod 600"),
            ("world-readable", os.urandom(32), 0o604, "chmod 600"),
        ]
        for what, data, mode, says in cases:
            with self.subTest(what=what):
                if data is None:
                    os.unlink(self.key)
                else:
                    self.write_key(data, mode)
                rc, out = self.check(self.good())
                self.assertEqual(rc, 1, out)
                self.assertIn("master key %s" % self.key, out)
                self.assertIn(says, out)
                self.assertEqual(len(out.strip().splitlines()), 1, out)
                p = subprocess.run([DAEMON, "-c", self.write(self.good())],
                                   stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
                err = p.stderr.decode("utf-8", "replace")
                self.assertNotEqual(p.returncode, 0, err)
                self.assertIn(says, err)
                self.assertFalse(os.path.exists(os.path.join(self.dir, "fcgi.sock")))

    def test_short_or_missing_jwt_secret(self):
        rc, out = self.check(self.good().replace("k" * 40, "short"))
        self.assertEqual(rc, 1, out)
        self.assertIn("jwt_secret", out)
        rc, out = self.check(self.good().replace("  jwt_secret: %s\n" % ("k" * 40), ""))
        self.assertEqual(rc, 1, out)
        self.assertIn("jwt_secret", out)

    def test_start_with_unknown_key_exits_1_without_serving(self):
        path = self.write(self.good(extra_server="  bogus_key: 1\n"))
        p = subprocess.run([DAEMON, "-c", path], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=30)
        out = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 1, out)
        self.assertIn("bogus_key", out)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "fcgi.sock")))


class SecondDaemonTest(InstanceTestCase):

    def second(self, config_path):
        p = subprocess.Popen([DAEMON, "-c", config_path], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out, _ = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            self.fail("a second daemon on the same data dir kept running:\n%s"
                      % out.decode("utf-8", "replace"))
        return p.returncode, out.decode("utf-8", "replace")

    def assert_first_unharmed(self, workers):
        self.assertIsNone(self.inst.daemon.poll())
        self.assertEqual(self.inst.health()["status"], "ok")
        self.assertEqual(self.inst.worker_pids(), workers)
        self.assertTrue(os.path.exists(self.inst.socket))

    def test_second_daemon_on_same_data_dir_refuses(self):
        tok, slug = self.inst.user("first@example.com")
        workers = self.inst.wait_workers()
        # the very same config: same data dir and same socket
        rc, out = self.second(self.inst.config_path)
        self.assertNotEqual(rc, 0, out)
        self.assertTrue(out.strip(), "refused without saying why")
        self.assert_first_unharmed(workers)
        # same data dir, another socket
        other = os.path.join(self.inst.dir, "other.yaml")
        with open(self.inst.config_path) as f:
            text = f.read()
        with open(other, "w") as f:
            f.write(text.replace(self.inst.socket, self.inst.socket + "2"))
        os.chmod(other, 0o600)
        rc, out = self.second(other)
        self.assertNotEqual(rc, 0, out)
        self.assertFalse(os.path.exists(self.inst.socket + "2"))
        self.assert_first_unharmed(workers)
        assert_json(self, self.inst.request("GET", "/api/v1/orgs/me", token=tok), 200)


class LighttpdConfigTest(InstanceTestCase):
    """The shipped lighttpd files parse (`lighttpd -tt`) as they are."""
    shared_instance = False

    def tt(self, conf, env=None):
        p = subprocess.run([LIGHTTPD, "-tt", "-f", conf], env=env, capture_output=True,
                           timeout=30)
        return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")

    def test_dev_conf(self):
        inst = Instance(name="lighttpd-tt")
        self.addCleanup(inst.stop)
        rc, out = self.tt(DEV_CONF, inst.lighttpd_env())
        self.assertEqual(rc, 0, out)

    def test_packaged_snippet_in_a_debian_layout(self):
        """50-astromesh-cloud.conf included from a lighttpd.conf the way
        Debian's conf-enabled/ does, next to the shared file."""
        d = tempfile.mkdtemp(prefix="lighttpd-etc-")
        self.addCleanup(shutil.rmtree, d, True)
        os.makedirs(os.path.join(d, "conf-available"))
        os.makedirs(os.path.join(d, "conf-enabled"))
        src = os.path.join(SRCDIR, "etc", "lighttpd")
        for name in ("50-astromesh-cloud.conf", "astromesh-cloud-fastcgi.conf",
                     "astromesh-cloud-stream.conf", "astromesh-cloud-studio.conf"):
            shutil.copy(os.path.join(src, name), os.path.join(d, "conf-available", name))
        # what `lighty-enable-mod astromesh-cloud` does
        os.symlink("../conf-available/50-astromesh-cloud.conf",
                   os.path.join(d, "conf-enabled", "50-astromesh-cloud.conf"))
        main_conf = os.path.join(d, "lighttpd.conf")
        with open(main_conf, "w") as f:
            f.write('server.document-root = "%s"\nserver.port = 8080\n'
                    'server.modules = ( "mod_access" )\n'
                    'include "conf-enabled/*.conf"\n' % d)
        rc, out = self.tt(main_conf)
        self.assertEqual(rc, 0, out)
        p = subprocess.run([LIGHTTPD, "-p", "-f", main_conf], capture_output=True, timeout=30)
        printed = p.stdout.decode("utf-8", "replace")
        self.assertIn("/run/astromesh-cloud/fcgi.sock", printed)
        self.assertIn("mod_fastcgi", printed)
        self.assertNotIn("bin-path", printed)


if __name__ == "__main__":
    main()
