"""test_install - what `make install` ships, and that it runs.

`make install DESTDIR=<tmp>` from the build tree, then, on the installed
files only:

- the config is mode 0640 and a reinstall never replaces it (the new default
  goes beside it as astromesh-cloud.yaml.dist); jwt.secret and master.key
  are 0600 and never replaced (unless ./configure
  --disable-install-master-key, as distcheck does: then the test makes them,
  as a packager's postinst would);
- the units pass `systemd-analyze verify` (with the installed man pages on
  MANPATH) and the service's `systemd-analyze security --offline=true`
  exposure is 2.0 or better;
- both man pages render with groff without a warning, astromesh-cloud.yaml(5)
  names every key of the installed daemon's table (-K), and its generator
  fails naming a key the YAML file does not document;
- the INSTALLED daemon is started with the INSTALLED config, the way the
  installed units say: the ExecStartPre check, then ExecStart's command on
  the socket ListenStream names (bound by the test with SocketMode and
  passed in as systemd does), answers GET /api/v1/health 200 over FastCGI,
  logs the socket it serves, and ExecReload's check refuses a broken config
  (and a secret file others can read) with one line, accepts the good one,
  and SIGHUP keeps it serving.

What differs from a real machine, and why: every absolute path the units
and the config name (/usr/local/..., /etc, /var/lib, /run) is taken under
DESTDIR, since the test must not touch the real ones; in the installed
config only storage.data_dir, server.socket (the directory of the stream
socket), auth.jwt_secret_file and auth.master_key_file are rewritten to
those DESTDIR paths, because the compiled-in defaults name the real
sysconfdir. The daemon runs as the test's user, not User=astromesh."""
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import unittest

from harness import (BUILDDIR, DAEMON, SRCDIR, FcgiConnection, Instance, main, poll)

UNIT = "astromesh-cloud"


def clean_env():
    """The environment for a nested make: without make check's jobserver."""
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DESTDIR"):
        env.pop(k, None)
    return env


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def unit_values(path, key):
    """Every value of key= in a unit file, in order."""
    out = []
    with open(path) as f:
        for line in f:
            if line.startswith(key + "="):
                out.append(line[len(key) + 1:].strip())
    return out


class InstallTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        # Short, under /tmp: the socket path inside it must fit sun_path.
        cls.dest = tempfile.mkdtemp(prefix="am-inst-")
        cls.addClassCleanup(shutil.rmtree, cls.dest, True)
        cls.make_install()
        found = {}
        for root, _, files in os.walk(cls.dest):
            for name in files:
                found.setdefault(name, os.path.join(root, name))
        cls.files = found
        cls.service = found[UNIT + ".service"]
        cls.socket_unit = found[UNIT + ".socket"]
        argv = shlex.split(unit_values(cls.service, "ExecStart")[0])
        cls.conf_real = argv[argv.index("-c") + 1]          # as the unit names it
        cls.conf = cls.dest + cls.conf_real
        cls.confdir = os.path.dirname(cls.conf)
        cls.daemon = cls.dest + argv[0]

    @classmethod
    def make_install(cls):
        p = subprocess.run(["make", "-s", "-C", BUILDDIR, "install", "DESTDIR=" + cls.dest],
                           env=clean_env(), capture_output=True, timeout=600)
        if p.returncode != 0:
            raise AssertionError("make install failed:\n%s" % (p.stdout + p.stderr).decode())
        return (p.stdout + p.stderr).decode()

    def secrets_made(self):
        """True if make install made the secrets (not --disable-install-master-key)."""
        return os.path.exists(os.path.join(self.confdir, "master.key"))

    def ensure_secrets(self):
        """What a packager's postinst does when make install did not."""
        for name, data in (("master.key", os.urandom(32)),
                           ("jwt.secret", os.urandom(33).hex().encode() + b"\n")):
            path = os.path.join(self.confdir, name)
            if not os.path.exists(path):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, data)
                os.close(fd)

    # -- the files --------------------------------------------------------------
    def test_config_mode_and_secrets(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.conf).st_mode), 0o640)
        for name in ("sbin/astromesh-cloudd", "lib/systemd/system/%s.service" % UNIT,
                     "lib/systemd/system/%s.socket" % UNIT, "lib/sysusers.d/%s.conf" % UNIT,
                     "lib/tmpfiles.d/%s.conf" % UNIT, "share/man/man8/astromesh-cloudd.8",
                     "share/man/man5/astromesh-cloud.yaml.5",
                     "share/doc/astromesh-cloud/README.md", "share/doc/astromesh-cloud/NEWS"):
            self.assertTrue(any(p.endswith("/" + name) for p in self._all_paths()), name)
        if not self.secrets_made():
            self.skipTest("--disable-install-master-key: make install makes no secrets")
        for name in ("master.key", "jwt.secret"):
            st = os.stat(os.path.join(self.confdir, name))
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, name)
        with open(os.path.join(self.confdir, "jwt.secret"), "rb") as f:
            self.assertGreaterEqual(len(f.read().strip()), 32)

    def _all_paths(self):
        for root, _, files in os.walk(self.dest):
            for name in files:
                yield os.path.join(root, name)

    def test_reinstall_keeps_config_and_secrets(self):
        with open(self.conf, "a") as f:
            f.write("# edited by the operator\n")
        before = {}
        for name in ("astromesh-cloud.yaml", "master.key", "jwt.secret"):
            path = os.path.join(self.confdir, name)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    before[name] = f.read()
        out = self.make_install()
        self.assertIn("kept", out)
        for name, data in before.items():
            with open(os.path.join(self.confdir, name), "rb") as f:
                self.assertEqual(f.read(), data, "%s replaced by a reinstall" % name)
        with open(self.conf + ".dist", "rb") as f, \
                open(os.path.join(SRCDIR, "etc", "astromesh-cloud.yaml"), "rb") as g:
            self.assertEqual(f.read(), g.read())
        self.assertEqual(stat.S_IMODE(os.stat(self.conf + ".dist").st_mode), 0o640)

    # -- the units ----------------------------------------------------------------
    def units_under_dest(self):
        """Copies of the installed units with their absolute paths under
        DESTDIR (systemd-analyze verify checks that the commands exist)."""
        out = tempfile.mkdtemp(prefix="am-units-")
        self.addCleanup(shutil.rmtree, out, True)
        prefix = os.path.dirname(os.path.dirname(os.path.dirname(self.daemon[len(self.dest):])))
        for src in (self.service, self.socket_unit):
            with open(src) as f:
                text = f.read().replace(prefix + "/", self.dest + prefix + "/")
            with open(os.path.join(out, os.path.basename(src)), "w") as f:
                f.write(text)
        return out

    def test_units_verify_and_exposure(self):
        sa = shutil.which("systemd-analyze")
        if sa is None:
            self.skipTest("no systemd-analyze")
        d = self.units_under_dest()
        env = dict(os.environ, MANPATH=os.path.dirname(os.path.dirname(
            self.files["astromesh-cloudd.8"])))
        p = subprocess.run([sa, "verify", os.path.join(d, UNIT + ".service"),
                            os.path.join(d, UNIT + ".socket")], env=env,
                           capture_output=True, timeout=120)
        out = (p.stdout + p.stderr).decode()
        self.assertEqual((p.returncode, out), (0, ""))
        p = subprocess.run([sa, "security", "--offline=true", "--threshold=20",
                            os.path.join(d, UNIT + ".service")], capture_output=True,
                           timeout=120)
        out = (p.stdout + p.stderr).decode()
        self.assertEqual(p.returncode, 0, out)
        score = re.search(r"Overall exposure level for %s.service: ([0-9.]+)" % UNIT, out)
        self.assertIsNotNone(score, out)
        self.assertLessEqual(float(score.group(1)), 2.0, out)
        print("exposure %s" % score.group(1))
        # the socket unit lets the front server's group connect
        self.assertEqual(unit_values(self.socket_unit, "SocketGroup"), ["www-data"])
        self.assertEqual(unit_values(self.socket_unit, "SocketMode"), ["0660"])

    # -- the man pages --------------------------------------------------------------
    def test_man_pages_render_and_list_every_key(self):
        groff = shutil.which("groff")
        if groff is None:
            self.skipTest("no groff")
        for name in ("astromesh-cloudd.8", "astromesh-cloud.yaml.5"):
            p = subprocess.run([groff, "-ww", "-z", "-man", self.files[name]],
                               capture_output=True, timeout=60)
            self.assertEqual((p.returncode, (p.stdout + p.stderr).decode()), (0, ""), name)
        keys = subprocess.run([self.daemon, "-K"], capture_output=True, check=True,
                              timeout=30).stdout.decode().splitlines()
        self.assertGreater(len(keys), 40)
        with open(self.files["astromesh-cloud.yaml.5"]) as f:
            page = f.read()
        for line in keys:
            path, _, default = line.split("\t")[:3]
            self.assertIn(".B %s\n" % path, page, "%s missing from the man page" % path)
        self.assertIn("auth.jwt_secret_file", page)

    def test_man_generator_fails_on_an_undocumented_key(self):
        d = tempfile.mkdtemp(prefix="am-man-")
        self.addCleanup(shutil.rmtree, d, True)
        keys = os.path.join(d, "keys")
        with open(keys, "w") as f:
            f.write(subprocess.run([DAEMON, "-K"], capture_output=True, check=True,
                                   timeout=30).stdout.decode())
            f.write("log.undocumented_key\tboolean\ttrue\ttrue, false\t-\n")
        p = subprocess.run(["sh", os.path.join(SRCDIR, "man", "yaml5.sh"), keys,
                            os.path.join(SRCDIR, "etc", "astromesh-cloud.yaml"),
                            os.path.join(SRCDIR, "man", "astromesh-cloud.yaml.5.in"), "0"],
                           capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("log.undocumented_key", p.stderr.decode())

    # -- the installed daemon, started as the units say ----------------------------
    def override_config(self):
        """Rewrite, in the installed config, only the paths that must be under
        DESTDIR; each line must be there exactly once."""
        confdir_real = os.path.dirname(self.conf_real)
        with open(self.conf) as f:
            text = f.read()
        swaps = [
            (r"(?m)^  socket: /run/astromesh-cloud/fcgi\.sock$",
             "  socket: %s/run/astromesh-cloud/fcgi.sock" % self.dest),
            (r"(?m)^  data_dir: /var/lib/astromesh-cloud$",
             "  data_dir: %s/var/lib/astromesh-cloud" % self.dest),
            (r"(?m)^  # jwt_secret_file: .*$",
             "  jwt_secret_file: %s%s/jwt.secret" % (self.dest, confdir_real)),
            (r"(?m)^  # master_key_file: .*$",
             "  master_key_file: %s%s/master.key" % (self.dest, confdir_real)),
        ]
        for pattern, repl in swaps:
            text, n = re.subn(pattern, repl, text)
            self.assertEqual(n, 1, "%s: %d lines in the installed config" % (pattern, n))
        with open(self.conf, "w") as f:
            f.write(text)
        return text

    def run_unit_command(self, line):
        argv = shlex.split(line.replace(self.conf_real, self.conf))
        argv[0] = self.dest + argv[0]
        p = subprocess.run(argv, capture_output=True, timeout=60)
        return p.returncode, (p.stdout + p.stderr).decode()

    def test_installed_daemon_starts_as_the_units_say(self):
        self.ensure_secrets()
        good = self.override_config()
        for d in unit_values(self.service, "StateDirectory"):
            os.makedirs(os.path.join(self.dest, "var/lib", d), mode=0o700, exist_ok=True)
        for d in unit_values(self.service, "RuntimeDirectory"):
            os.makedirs(os.path.join(self.dest, "run", d), mode=0o750, exist_ok=True)
        # ExecStartPre: the check
        rc, out = self.run_unit_command(unit_values(self.service, "ExecStartPre")[0])
        self.assertEqual(rc, 0, out)
        # the socket unit: bind ListenStream with SocketMode, hold it
        path = self.dest + unit_values(self.socket_unit, "ListenStream")[0]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        os.chmod(path, int(unit_values(self.socket_unit, "SocketMode")[0], 8))
        sock.listen(int(unit_values(self.socket_unit, "Backlog")[0]))
        # ExecStart, with the socket passed in
        argv = shlex.split(unit_values(self.service, "ExecStart")[0])
        argv[0] = self.dest + argv[0]
        argv[argv.index("-c") + 1] = self.conf
        log_path = os.path.join(self.dest, "daemon.log")
        with open(log_path, "ab") as log:
            proc = Instance.popen_activated(argv, sock.fileno(), stdout=log, stderr=log)
        self.addCleanup(self.stop, proc)

        def healthy():
            if proc.poll() is not None:
                raise AssertionError("installed daemon exited %s:\n%s" % (
                    proc.returncode, read(log_path)[-3000:]))
            try:
                c = FcgiConnection(path, timeout=10)
                try:
                    c.begin("GET", "/api/v1/health")
                    c.send_body(b"", last=True)
                    status, _, body = c.response()
                finally:
                    c.close()
            except OSError:
                return None
            return body if status == 200 else None
        self.assertIn(b"ok", poll(healthy, 60, what="the installed daemon's health 200").lower())
        self.assertIn("socket activation: serving FastCGI on %s" % path, read(log_path))

        # ExecReload: the check refuses a broken config and a secret file open
        # to others, each with one line, and accepts the good config again
        reload_check, reload_signal = unit_values(self.service, "ExecReload")
        self.assertIn("-t", shlex.split(reload_check))
        self.assertIn("-HUP $MAINPID", reload_signal)
        with open(self.conf, "w") as f:
            f.write(good + "server:\n  workers: 2\n")
        rc, out = self.run_unit_command(reload_check)
        self.assertEqual(rc, 1, out)
        self.assertEqual(len(out.strip().splitlines()), 1, out)
        self.assertIn("duplicate key", out)
        with open(self.conf, "w") as f:
            f.write(good)
        secret = os.path.join(self.confdir, "jwt.secret")
        os.chmod(secret, 0o644)
        rc, out = self.run_unit_command(reload_check)
        os.chmod(secret, 0o600)
        self.assertEqual(rc, 1, out)
        self.assertEqual(len(out.strip().splitlines()), 1, out)
        self.assertIn(secret, out)
        self.assertIn("chmod 600", out)        # the fix, not cut off by long paths
        rc, out = self.run_unit_command(reload_check)
        self.assertEqual(rc, 0, out)
        os.kill(proc.pid, signal.SIGHUP)
        poll(lambda: "reload" in read(log_path).lower(), 30, what="the reload logged")
        self.assertIsNotNone(poll(healthy, 60, what="health 200 after the reload"))
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(60), 0, read(log_path)[-3000:])

    @staticmethod
    def stop(proc):
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


if __name__ == "__main__":
    main()
