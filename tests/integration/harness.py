"""harness - run the real astromesh-cloudd behind the real lighttpd (or the
real Apache) for the integration tests, and talk HTTP to it.

Standard library only, and python3-jsonschema for the check of every answer
against docs/openapi.json. An Instance owns, for one test (or one test class):
a fresh data directory under $ASTROMESH_BUILDDIR/tests/tmp/, a free loopback
port, a YAML config, the daemon process and the front server process:
lighttpd (etc/lighttpd/astromesh-dev.conf from the source tree, used as it
is) by default, or with front="apache" an apache2 whose generated minimal
httpd.conf includes etc/apache2/astromesh-cloud.conf unchanged. Every
wait is a bounded poll. stop() ends both processes; the TestCase helpers
register it as a cleanup so it runs whatever the test did, print the logs
when a test failed, and fail the test if a sanitizer reported anything.

Environment (set by `make check`; defaults make `python3 test_x.py` work from
an in-tree build):
  ASTROMESH_BUILDDIR  where astromesh-cloudd was built
  ASTROMESH_SRCDIR    the source tree (for etc/lighttpd/astromesh-dev.conf)
  LIGHTTPD            the lighttpd binary
  APACHE2             the apache2 binary (modules from APACHE2_MODULES,
                      default /usr/lib/apache2/modules)
  ASTROMESH_KEEP_TMP  if set, keep data directories even after a pass
  ASTROMESH_FRONT     the front server of every instance a test does not
                      pin to one: "lighttpd" (the default) or "apache";
                      `make check` runs the whole suite once with each
"""

import base64
import contextlib
import ctypes
import hashlib
import hmac
import http.client
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("ASTROMESH_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
BUILDDIR = os.environ.get("ASTROMESH_BUILDDIR") or SRCDIR
LIGHTTPD = (os.environ.get("LIGHTTPD") or shutil.which("lighttpd")
            or "/usr/sbin/lighttpd")
DAEMON = os.path.join(BUILDDIR, "astromesh-cloudd")
DEV_CONF = os.path.join(SRCDIR, "etc", "lighttpd", "astromesh-dev.conf")
APACHE2 = (os.environ.get("APACHE2") or shutil.which("apache2")
           or "/usr/sbin/apache2")
APACHE2_MODULES = os.environ.get("APACHE2_MODULES") or "/usr/lib/apache2/modules"
APACHE_CONF = os.path.join(SRCDIR, "etc", "apache2", "astromesh-cloud.conf")
# the JSON error pages lighttpd sends for its own errors (with the slash)
ERRORS_DIR = os.path.join(SRCDIR, "etc", "lighttpd", "errors") + os.sep
FRONTS = ("lighttpd", "apache")
FRONT = os.environ.get("ASTROMESH_FRONT") or "lighttpd"
if FRONT not in FRONTS:
    raise SystemExit("ASTROMESH_FRONT=%r: must be one of %s" % (FRONT, ", ".join(FRONTS)))

# Sanitizer builds are slower; every bound below is generous on purpose.
START_TIMEOUT = 60.0
HTTP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z$")
ERROR_CODE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "WARNING: ThreadSanitizer")

PR_SET_PDEATHSIG = 1


# --- every recorded answer checked against docs/openapi.json -----------------------
# Instance._record hands each answer to openapi_check(); Instance.stop() fails
# the test (openapi_raise) with every answer the document does not describe:
# a path or method it lacks, a status it does not list for that operation, a
# Content-Type it does not list, a body that fails the schema (JSON Schema
# Draft 2020-12, python3-jsonschema), or an SSE event that fails the
# operation's x-event-schema. Paths outside /api/v1/ are not the API's, nor
# text/html pages (the front server's, never the daemon's).
import jsonschema                                   # python3-jsonschema (install-deps)

OPENAPI_DOC = os.path.join(SRCDIR, "docs", "openapi.json")


class OpenApi:
    """docs/openapi.json, its path templates as regexes, and a cache of
    compiled validators."""

    def __init__(self, path=OPENAPI_DOC):
        with open(path, encoding="utf-8") as f:
            self.doc = json.load(f)
        self.templates = []
        for tpl, item in self.doc["paths"].items():
            rx = re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(tpl)) + "/?$")
            literal = sum(1 for s in tpl.split("/") if s and not s.startswith("{"))
            self.templates.append((literal, tpl, rx, item))
        self.templates.sort(key=lambda t: -t[0])   # /orgs/me before /orgs/{slug}
        self.validators = {}
        self.lock = threading.Lock()

    def resolve(self, node):
        """node with a local $ref followed (one level at a time)."""
        while isinstance(node, dict) and "$ref" in node:
            target = self.doc
            for part in node["$ref"][2:].split("/"):
                target = target[part]
            node = target
        return node

    def validator(self, key, schema):
        with self.lock:
            v = self.validators.get(key)
            if v is None:
                root = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                        "components": self.doc["components"], "allOf": [schema]}
                v = jsonschema.Draft202012Validator(root)
                self.validators[key] = v
        return v

    def operation(self, method, path):
        """(template, operation or None, methods of the path) for path (one
        trailing slash ignored, as the daemon does), or (None, None, ())."""
        matched = [(tpl, item) for _, tpl, rx, item in self.templates if rx.match(path)]
        for tpl, item in matched:
            if method.lower() in item:
                return tpl, item[method.lower()], ()
        methods = {m.upper() for _, item in matched for m in item}
        return (matched[0][0] if matched else None), None, methods

    def schema_error(self, key, schema, value):
        err = jsonschema.exceptions.best_match(self.validator(key, schema).iter_errors(value))
        if err is None:
            return None
        return "%s at %s" % (err.message[:300], "/".join(str(p) for p in err.absolute_path)
                             or "the body")

    def check(self, method, path, status, headers, payload):
        """None if the document describes this answer, else why not."""
        path = path.split("?", 1)[0]
        if not path.startswith("/api/v1/"):
            return None
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "text/html":
            return None       # the front server's own page (its 503 while we start)
        tpl, op, methods = self.operation(method, path)
        if op is None:
            # no such route (404) or no such method (405): the envelope, if ours
            if status not in ((405,) if tpl else (404,)):
                return "%s is not documented for %s (documented: %s)" % (
                    method, path, ", ".join(sorted(methods)) or "no route")
            if ctype != "application/json":
                return None                  # the front server's own page
            return self.body_error(("envelope",), {"$ref": "#/components/schemas/Error"},
                                   payload)
        resp = op["responses"].get(str(status)) or op["responses"].get("default")
        if resp is None:
            return "status %d is not listed for %s %s (listed: %s)" % (
                status, method, tpl, ", ".join(op["responses"]))
        resp = self.resolve(resp)
        for name, h in resp.get("headers", {}).items():
            h = self.resolve(h)
            if h.get("required") and name.lower() not in headers:
                return "header %s missing from %d of %s %s" % (name, status, method, tpl)
        content = resp.get("content")
        if not content:
            return None if not payload else "a body on %d, documented empty" % status
        media = content.get(ctype)
        if media is None:
            return "Content-Type %r not listed for %d of %s %s (listed: %s)" % (
                ctype, status, method, tpl, ", ".join(content))
        key = (method, tpl, status, ctype)
        if ctype == "application/json":
            return self.body_error(key, media.get("schema", {}), payload)
        if ctype == "text/event-stream" and "x-event-schema" in media:
            for line in payload.decode("utf-8", "replace").splitlines():
                if line.startswith("data:"):
                    why = self.body_error(key, media["x-event-schema"], line[5:].encode())
                    if why:
                        return "event %s: %s" % (line[:200], why)
        return None

    def body_error(self, key, schema, payload):
        try:
            value = json.loads(payload.decode("utf-8"))
        except ValueError as e:
            return "body is not JSON (%s)" % e
        return self.schema_error(key, schema, value)


_OPENAPI = []


def openapi():
    """The loaded document (loaded once per process)."""
    if not _OPENAPI:
        _OPENAPI.append(OpenApi())
    return _OPENAPI[0]


def openapi_check(inst, method, path, status, headers, payload):
    """Note on inst an answer the document does not describe (the daemon's:
    an Instance that never started one has a stand-in FastCGI peer)."""
    if inst.daemon is None:
        return
    why = openapi().check(method, path, status, headers, payload)
    if why:
        text = payload[:600].decode("utf-8", "replace")
        inst.openapi_failures.append("%s %s -> %d: %s\n    answer: %s" % (
            method, path, status, why, text))


def openapi_raise(inst):
    """Raise (once) if any recorded answer was not described by the document."""
    bad, inst.openapi_failures = inst.openapi_failures, []
    if bad:
        raise AssertionError("%d answer(s) not described by docs/openapi.json:\n%s" % (
            len(bad), "\n".join(bad[:20])))


class HarnessError(AssertionError):
    """Raised when the instance cannot be set up; fails the test."""


def poll(predicate, timeout, interval=0.05, what="condition"):
    """Call predicate until it returns a true value; return that value.
    Raise HarnessError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise HarnessError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_port():
    """A loopback TCP port nobody listens on right now (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent(sig=signal.SIGTERM):
    """preexec_fn: the child gets sig if the test process dies, so a
    crashed test run leaves no daemon or lighttpd behind."""
    def fn():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        except OSError:
            pass
    return fn


# --- YAML config -------------------------------------------------------------

def _yaml_scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))      # a JSON string is a YAML double-quoted scalar


def to_yaml(doc, indent=0):
    """Block-style YAML for a dict of dicts/lists/scalars."""
    pad = "  " * indent
    out = []
    for key, value in doc.items():
        if isinstance(value, dict):
            out.append("%s%s:\n%s" % (pad, key, to_yaml(value, indent + 1)))
        elif isinstance(value, list):
            out.append("%s%s: [%s]\n" % (pad, key, ", ".join(_yaml_scalar(x) for x in value)))
        else:
            out.append("%s%s: %s\n" % (pad, key, _yaml_scalar(value)))
    return "".join(out)


def merge_config(base, override):
    """Deep-merge override into a copy of base; a None value removes the key."""
    result = dict(base)
    for key, value in (override or {}).items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_config(result[key], value)
        else:
            result[key] = value
    return result


# --- JWT helpers (tests craft and tamper tokens) -----------------------------

def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    if isinstance(text, str):
        text = text.encode("ascii")
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


def jwt_decode(token):
    """(header dict, payload dict, signature bytes) without verifying."""
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), b64url_decode(s)


def jwt_sign(secret, header, payload):
    """An HS256 JWT of header and payload signed with secret (str or bytes)."""
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    signing_input = (b64url_encode(json.dumps(header, separators=(",", ":")).encode())
                     + "." + b64url_encode(json.dumps(payload, separators=(",", ":")).encode()))
    sig = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64url_encode(sig)


# --- processes ----------------------------------------------------------------

def live_processes():
    """(pid, name, ppid, pgid) of every process but the zombies, from
    /proc."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 3 and fields[0] != "Z":
            yield (int(entry), stat[stat.find("(") + 1:stat.rfind(")")], int(fields[1]),
                   int(fields[2]))


def proc_children(pid, comm=None):
    """Live (non-zombie) child pids of pid, from /proc; with comm, only the
    children with that process name (workers are "am-worker"; the
    supervisor's short-lived storage tasks are "am-store-task")."""
    return sorted(p for p, name, ppid, _ in live_processes()
                  if ppid == pid and (comm is None or name == comm))


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


def socket_fd_count(pid):
    """Number of socket fds pid has open (0 if it is gone)."""
    n = 0
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:"):
                    n += 1
            except OSError:
                pass
    except OSError:
        pass
    return n


def listens_on(pid, port):
    """True if process pid holds the socket listening on 127.0.0.1:port
    (and not some other process that took the port)."""
    inodes = set()
    try:
        # pid's own network namespace's table (a front server in a netns)
        with open("/proc/%d/net/tcp" % pid) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1] == "0100007F:%04X" % port and fields[3] == "0A":
                    inodes.add(fields[9])
    except OSError:
        return False
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def shm_names(pid):
    """Names of the /dev/shm segments pid has mapped."""
    names = set()
    try:
        with open("/proc/%d/maps" % pid) as f:
            for line in f:
                m = re.search(r"(/dev/shm/\S+)", line)
                if m:
                    names.add(m.group(1))
    except OSError:
        pass
    return names


# --- FastCGI client (talks to the daemon's socket directly, no lighttpd) ------

FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT, FCGI_STDERR = 1, 3, 4, 5, 6, 7


def _fcgi_record(rtype, content, request_id=1):
    pad = -len(content) % 8
    return struct.pack("!BBHHBx", 1, rtype, request_id, len(content), pad) + content + b"\0" * pad


def _fcgi_nv(name, value):
    out = b""
    for item in (name, value):
        n = len(item)
        out += struct.pack("!B", n) if n < 128 else struct.pack("!I", n | 0x80000000)
    return out + name + value


class FcgiConnection:
    """One FastCGI request over the unix socket, sent in pieces on purpose."""

    def __init__(self, path, timeout=HTTP_TIMEOUT):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

    def begin(self, method, path, headers=None, content_length=0, query="", env=None):
        """Send BEGIN_REQUEST and every PARAMS record lighttpd would send;
        env: CGI variables to set instead (e.g. {"REMOTE_ADDR": ...})."""
        params = {
            "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_SOFTWARE": "lighttpd", "REQUEST_SCHEME": "http",
            "SERVER_NAME": "127.0.0.1", "SERVER_ADDR": "127.0.0.1", "SERVER_PORT": "80",
            "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000",
            "REQUEST_METHOD": method,
            "REQUEST_URI": path + ("?" + query if query else ""),
            "QUERY_STRING": query,
            "SCRIPT_NAME": "/api/v1",
            "PATH_INFO": path[len("/api/v1"):] if path.startswith("/api/v1") else path,
            "CONTENT_LENGTH": str(content_length),
            "HTTP_HOST": "127.0.0.1",
        }
        params.update(env or {})
        for k, v in (headers or {}).items():
            if k.lower() == "content-type":
                params["CONTENT_TYPE"] = v
            else:
                params["HTTP_" + k.upper().replace("-", "_")] = v
        body = b"".join(_fcgi_nv(k.encode(), v.encode()) for k, v in params.items())
        self.sock.sendall(_fcgi_record(FCGI_BEGIN_REQUEST, struct.pack("!HB5x", 1, 0))
                          + _fcgi_record(FCGI_PARAMS, body) + _fcgi_record(FCGI_PARAMS, b""))

    def send_body(self, data, last=False):
        if data:
            self.sock.sendall(_fcgi_record(FCGI_STDIN, data))
        if last:
            self.sock.sendall(_fcgi_record(FCGI_STDIN, b""))

    def response(self):
        """Read until END_REQUEST; return (status, headers dict, body bytes)."""
        buf, out, done = b"", b"", False
        while not done:
            while len(buf) < 8 or len(buf) < 8 + struct.unpack("!H", buf[4:6])[0] + buf[6]:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise HarnessError("FastCGI connection closed before END_REQUEST "
                                       "(got %r)" % out[:200])
                buf += chunk
            _, rtype, _, clen, plen = struct.unpack("!BBHHBx", buf[:8])
            content, buf = buf[8:8 + clen], buf[8 + clen + plen:]
            if rtype == FCGI_STDOUT:
                out += content
            elif rtype == FCGI_END_REQUEST:
                done = True
        head, _, body = out.partition(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n"):
            k, _, v = line.partition(b":")
            headers[k.strip().decode().lower()] = v.strip().decode()
        status = int(headers.get("status", "200").split()[0])
        return status, headers, body

    def close(self):
        self.sock.close()


# --- the instance ----------------------------------------------------------------

class Instance:
    """One astromesh-cloudd + one front server (lighttpd, or Apache with
    front="apache") on a fresh data dir and port.

    config: dict merged over the default config (a None value removes a key).
    """

    def __init__(self, config=None, name="inst", front=None, apache_extra=()):
        front = front or FRONT
        self.apache_extra = list(apache_extra)   # httpd.conf lines after the snippet
        if front == "lighttpd":
            if not LIGHTTPD or not os.access(LIGHTTPD, os.X_OK):
                raise HarnessError("lighttpd not found (LIGHTTPD=%r): apt-get install lighttpd"
                                   % LIGHTTPD)
        elif front == "apache":
            if not APACHE2 or not os.access(APACHE2, os.X_OK):
                raise HarnessError("apache2 not found (APACHE2=%r): apt-get install apache2"
                                   % APACHE2)
        else:
            raise HarnessError("unknown front server %r" % front)
        if not os.access(DAEMON, os.X_OK):
            raise HarnessError("daemon not built: %s" % DAEMON)
        self.front = front
        tmproot = os.path.join(BUILDDIR, "tests", "tmp")
        os.makedirs(tmproot, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=name + "-", dir=tmproot)
        self.sockdir = self.dir
        # sun_path is 108 bytes. As root, Apache's children run as another
        # user (apache_config), who must be able to search every directory
        # on the way to the socket: /tmp is searchable, the build tree's
        # parents may not be.
        apache_user = front == "apache" and os.geteuid() == 0
        if len(os.path.join(self.dir, "fcgi.sock")) > 100 or apache_user:
            self.sockdir = tempfile.mkdtemp(prefix="am-")
        if apache_user:
            os.chmod(self.sockdir, 0o750)       # for the group the children run as
        self.socket = os.path.join(self.sockdir, "fcgi.sock")
        self.data_dir = os.path.join(self.dir, "db")
        os.makedirs(self.data_dir)
        self.port = free_port()
        self.jwt_secret = secrets.token_hex(24)           # 48 chars
        self.master_key_file = os.path.join(self.dir, "master.key")
        fd = os.open(self.master_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, secrets.token_bytes(32))
        os.close(fd)
        self.config_path = os.path.join(self.dir, "astromesh-cloud.yaml")
        self.config = merge_config({
            "server": {"socket": self.socket, "workers": 2, "threads": 8,
                       "shutdown_timeout_ms": 5000},
            "storage": {"data_dir": self.data_dir},
            "auth": {"jwt_secret": self.jwt_secret, "master_key_file": self.master_key_file,
                     "dev_login": True},
            "log": {"level": "info"},
        }, config)
        self.write_config()
        self.daemon = None
        self.lighttpd = None
        self.daemon_log = os.path.join(self.dir, "daemon.log")
        self.lighttpd_errorlog = os.path.join(self.dir, "lighttpd.error.log")
        self.lighttpd_stderr = os.path.join(self.dir, "lighttpd.stderr")
        self.lighttpd_accesslog = os.path.join(self.dir, "lighttpd.access.log")
        self.lighttpd_pidfile = os.path.join(self.dir, "lighttpd.pid")
        self.apache = None
        self.apache_pgid = None       # until its process group is killed
        self.apache_conf = os.path.join(self.dir, "httpd.conf")
        self.apache_errorlog = os.path.join(self.dir, "apache.error.log")
        self.apache_stderr = os.path.join(self.dir, "apache.stderr")
        self.apache_accesslog = os.path.join(self.dir, "apache.access.log")
        self.apache_pidfile = os.path.join(self.dir, "apache.pid")
        self.exit_codes = []          # of every daemon process that ended
        self.shm_seen = set()         # shared memory the daemons mapped
        self._logs_printed = False
        # Every org secret a test hands the daemon (a provider key) or gets
        # from it once (an API key's secret): stop() greps the database
        # files, the logs and every recorded answer for each (secret_leaks).
        self.secrets = set()
        # The text of every run/test query a test sends: stop() checks that
        # none is in the daemon's log (query_leaks; the request log line
        # must never carry one).
        self.queries = set()
        self.responses_log = os.path.join(self.dir, "responses.log")
        self.openapi_failures = []      # answers docs/openapi.json does not describe

    # -- config ------------------------------------------------------------------
    def write_config(self, text=None):
        """Write self.config (or the given raw text) to the config file,
        mode 0600: the daemon refuses a file holding auth.jwt_secret inline
        that others can read."""
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text if text is not None else to_yaml(self.config))

    @property
    def base_url(self):
        return "http://127.0.0.1:%d" % self.port

    # -- processes ---------------------------------------------------------------
    def start(self):
        try:
            self.start_daemon()
            if self.front == "apache":
                self.start_apache()
            else:
                self.start_lighttpd()
            self.wait_healthy()
        except BaseException:
            self.print_logs("start failed")
            raise
        return self

    def start_daemon(self, extra_args=()):
        log = open(self.daemon_log, "ab")
        argv = [DAEMON, "-c", self.config_path] + list(extra_args)
        try:
            if getattr(self, "listen_sock", None) is not None:
                self.daemon = self.popen_activated(argv, self.listen_sock.fileno(), stdout=log,
                                                   stderr=log)
            else:
                self.daemon = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    preexec_fn=_die_with_parent(signal.SIGTERM))
        finally:
            log.close()
        return self.daemon

    # -- socket activation: what astromesh-cloud.socket does ----------------------
    def hold_socket(self):
        """Bind and listen on the FastCGI socket here, as systemd's socket
        unit does, before start(): every daemon started after this gets it
        (LISTEN_FDS=1, descriptor 3), and connections wait in its backlog
        while no daemon runs. The caller closes it."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        s.bind(self.socket)
        os.chmod(self.socket, 0o660)
        s.listen(4096)
        self.listen_sock = s
        return s

    @staticmethod
    def popen_activated(argv, fd, **kw):
        """Start argv as systemd starts a socket-activated service: fd becomes
        its descriptor 3, LISTEN_FDS=1 and LISTEN_PID its own pid. A shell in
        between sets them (its $$ is the pid exec keeps), so that nothing but
        the usual death signal runs in the forked child of a threaded test."""
        move = "" if fd == 3 else "exec 3<&%d %d<&-; " % (fd, fd)
        script = move + 'LISTEN_FDS=1 LISTEN_PID=$$ exec "$0" "$@"'
        return subprocess.Popen(["/bin/sh", "-c", script] + list(argv), pass_fds=(fd,),
                                stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent(signal.SIGTERM), **kw)

    def run_daemon_check(self, config_path=None, timeout=STOP_TIMEOUT):
        """`astromesh-cloudd -t -c FILE`: (exit code, stdout+stderr text)."""
        p = subprocess.run([DAEMON, "-t", "-c", config_path or self.config_path],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")

    def lighttpd_env(self):
        env = dict(os.environ)
        env.update({
            "ASTROMESH_PORT": str(self.port),
            "ASTROMESH_SOCKET": self.socket,
            "ASTROMESH_STREAM_SOCKET": self.stream_socket,
            "ASTROMESH_RUNDIR": self.dir,
            "ASTROMESH_ERRORLOG": self.lighttpd_errorlog,
            "ASTROMESH_ACCESSLOG": self.lighttpd_accesslog,
            "ASTROMESH_PIDFILE": self.lighttpd_pidfile,
            # the Studio at /studio/ (etc/lighttpd/astromesh-cloud-studio.conf)
            "ASTROMESH_STUDIO_DIR": os.path.join(BUILDDIR, "studio-dist"),
            "ASTROMESH_ERRORS": ERRORS_DIR,
        })
        return env

    def start_front(self, name, argv, stderr_path, log_paths, started, attempts=3,
                    before=None, **popen):
        """Start the front server argv (name: for messages) and wait until it
        listens on self.port; if another process took that port since
        free_port() picked it, pick another and try again. started(proc)
        runs as soon as each process exists (so that stop() can end it
        whatever happens next); before(), if given, before each attempt
        (e.g. to write a config naming the port)."""
        for attempt in range(attempts):
            if before is not None:
                before()
            err = open(stderr_path, "ab")
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                        **popen)
                started(proc)
            finally:
                err.close()

            def listening():
                if proc.poll() is not None:
                    return "exited"
                return "up" if listens_on(proc.pid, self.port) else None
            state = poll(listening, START_TIMEOUT, what="%s to listen on %d" % (name, self.port))
            if state == "up":
                return
            logs = "".join(self.read_log(path) for path in log_paths)
            if "in use" not in logs or attempt == attempts - 1:
                raise HarnessError("%s exited with %s" % (name, proc.returncode))
            self.port = free_port()

    def start_lighttpd(self, attempts=3):
        """Start lighttpd on self.port (start_front)."""
        def started(proc):
            self.lighttpd = proc
        self.start_front(
            "lighttpd", [LIGHTTPD, "-D", "-f", DEV_CONF], self.lighttpd_stderr,
            (self.lighttpd_stderr, self.lighttpd_errorlog), started, attempts,
            env=self.lighttpd_env(), preexec_fn=_die_with_parent(signal.SIGTERM))

    def apache_config(self):
        """A minimal httpd.conf for one apache2 -DFOREGROUND on self.port:
        everything in self.dir, nothing from /etc/apache2, and the shipped
        etc/apache2/astromesh-cloud.conf included as it is, with
        ASTROMESH_SOCKET defined first (the way the snippet documents)."""
        mods = ["mpm_event", "authz_core", "proxy", "proxy_fcgi", "proxy_http",
                "alias", "dir", "mime", "headers",       # alias, dir, mime: the Studio
                "reqtimeout"]                            # the snippet's slow-client limits
        lines = ['ServerRoot "%s"' % self.dir,
                 'DefaultRuntimeDir "%s"' % self.dir,
                 'PidFile "%s"' % self.apache_pidfile,
                 'ErrorLog "%s"' % self.apache_errorlog,
                 "LogLevel info",
                 "Listen 127.0.0.1:%d" % self.port,
                 "ServerName 127.0.0.1"]
        if os.geteuid() == 0:
            # Apache will not serve as root: its children take this user
            # and the group of the socket's directory (socket_mode 0660).
            user = "www-data"
            try:
                pwd.getpwnam(user)
            except KeyError:
                user = "nobody"
            lines += ["User %s" % user, "Group #%d" % os.stat(self.sockdir).st_gid]
        lines += ['LoadModule %s_module "%s/mod_%s.so"' % (m, APACHE2_MODULES, m)
                  for m in mods]
        lines += ['LogFormat "%h %l %u %t \\"%r\\" %>s %b %D" timed',
                  'CustomLog "%s" timed' % self.apache_accesslog,
                  # everything denied but what the snippet opens
                  'DocumentRoot "%s"' % self.dir,
                  '<Location "/">', "    Require all denied", "</Location>",
                  'Define ASTROMESH_SOCKET "%s"' % self.socket,
                  'Define ASTROMESH_STREAM_SOCKET "%s"' % self.stream_socket,
                  # the Studio at /studio/ (the snippet's Studio block)
                  'Define ASTROMESH_STUDIO_DIR "%s"' % os.path.join(BUILDDIR, "studio-dist"),
                  'TypesConfig "%s"' % ("/etc/mime.types" if os.path.exists("/etc/mime.types")
                                        else os.devnull),
                  'Include "%s"' % APACHE_CONF] + self.apache_extra
        return "\n".join(lines) + "\n"

    def start_apache(self, attempts=3):
        """Start apache2 -DFOREGROUND on self.port (start_front, writing its
        config for each port tried). It leads a process group of its own,
        so that stop() can be sure no child of it is left."""
        def write_config():
            with open(self.apache_conf, "w") as f:
                f.write(self.apache_config())

        def started(proc):
            self.apache, self.apache_pgid = proc, proc.pid
        self.start_front(
            "apache2", [APACHE2, "-DFOREGROUND", "-f", self.apache_conf], self.apache_stderr,
            (self.apache_stderr, self.apache_errorlog), started, attempts, before=write_config,
            start_new_session=True, preexec_fn=_die_with_parent(signal.SIGTERM))

    def stop_apache(self):
        """SIGTERM apache2 and wait; then SIGKILL whatever is left of its
        process group (its children), so nothing outlives the test."""
        try:
            self._stop_proc(self.apache)
        finally:
            if self.apache_pgid is not None:
                with contextlib.suppress(OSError):
                    os.killpg(self.apache_pgid, signal.SIGKILL)
                self.apache_pgid = None

    def wait_healthy(self, timeout=START_TIMEOUT):
        """Poll GET /api/v1/health until it answers 200; return its body."""
        def healthy():
            if self.daemon is not None and self.daemon.poll() is not None:
                raise HarnessError("daemon exited with %s while starting" % self.daemon.returncode)
            try:
                status, _, body = self.request("GET", "/api/v1/health", timeout=5)
            except (OSError, http.client.HTTPException):
                return None
            return body if status == 200 else None
        return poll(healthy, timeout, what="GET /api/v1/health == 200")

    @property
    def daemon_pid(self):
        return self.daemon.pid if self.daemon else None

    def worker_pids(self):
        """Live worker pids (the supervisor's worker children)."""
        return proc_children(self.daemon.pid, "am-worker") if self.daemon else []

    # -- the stream process (WebSocket) -----------------------------------------
    @property
    def stream_socket(self):
        """server.stream_socket: its default, stream.sock beside the FastCGI
        socket, unless the test's config sets one."""
        return (self.config["server"].get("stream_socket")
                or os.path.join(os.path.dirname(self.socket), "stream.sock"))

    def stream_pids(self):
        """Live stream process pids (the supervisor's am-stream children)."""
        return proc_children(self.daemon.pid, "am-stream") if self.daemon else []

    def wait_stream(self, timeout=START_TIMEOUT, exclude=()):
        """Poll until one stream process runs, not in exclude; return its pid."""
        def one():
            pids = [p for p in self.stream_pids() if p not in exclude]
            return pids[0] if len(pids) == 1 else None
        return poll(one, timeout, what="one stream process")

    def ws_connect(self, slug, name, token=None, api_key=None, query="", headers=None,
                   timeout=HTTP_TIMEOUT, **kw):
        """Open WS /api/v1/orgs/{slug}/agents/{name}/stream through the front
        server (wsclient.WSClient; raises wsclient.Refused on a plain answer)."""
        import wsclient
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        if api_key:
            h["X-API-Key"] = api_key
        path = "/api/v1/orgs/%s/agents/%s/stream%s" % (slug, name, "?" + query if query else "")
        return wsclient.WSClient.connect("127.0.0.1", self.port, path, headers=h,
                                         timeout=timeout, **kw)

    def wait_workers(self, n=None, timeout=START_TIMEOUT, exclude=()):
        """Poll until the supervisor has n live workers, none in exclude."""
        n = n or int(self.config["server"]["workers"])
        return poll(lambda: (lambda w: w if len(w) == n and not set(w) & set(exclude) else None)(
            self.worker_pids()), timeout, what="%d workers (not %s)" % (n, list(exclude)))

    def wait_daemon_exit(self, timeout=STOP_TIMEOUT):
        """Wait for the daemon to exit; return its exit code (negative: signal)."""
        try:
            rc = self.daemon.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError("daemon %d did not exit within %.0fs" % (self.daemon.pid, timeout))
        self.exit_codes.append(rc)
        return rc

    def kill_daemon(self, sig=signal.SIGTERM, wait=True):
        """Signal the supervisor. For SIGKILL/SIGTERM/SIGINT with wait, also
        wait until it and every worker are gone; return its exit code."""
        pid = self.daemon.pid
        workers = self.worker_pids()
        self.shm_seen |= shm_names(pid)
        os.kill(pid, sig)
        if not wait or sig not in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            return None
        rc = self.wait_daemon_exit()
        poll(lambda: not any(pid_alive(w) for w in workers), STOP_TIMEOUT,
             what="workers %s to exit after the supervisor" % workers)
        return rc

    def restart_daemon(self, wait=True):
        """Stop the daemon if it runs (SIGTERM) and start a new one on the
        same config and data dir, behind the same lighttpd."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.kill_daemon(signal.SIGTERM)
        self.start_daemon()
        if wait:
            try:
                self.wait_healthy()
            except BaseException:
                self.print_logs("restart failed")
                raise
        return self.daemon

    def _stop_proc(self, proc, sig=signal.SIGTERM):
        if proc is None or proc.poll() is not None:
            return None
        try:
            proc.send_signal(sig)
            return proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
            return "killed"

    def stop(self, failed=False):
        """Stop the front server and the daemon (every worker too). Print
        the logs if failed; remove the data dir unless failed. Raise if a
        sanitizer reported anything in the daemon log."""
        try:
            self._stop_proc(self.lighttpd)
            self.stop_apache()
            if self.daemon is not None:
                workers = self.worker_pids()
                self.shm_seen |= shm_names(self.daemon.pid)
                if self.daemon.poll() is None:
                    rc = self._stop_proc(self.daemon)
                    self.exit_codes.append(rc)
                for w in workers:        # never leave one behind
                    with contextlib.suppress(OSError):
                        if pid_alive(w):
                            os.kill(w, signal.SIGKILL)
            # a daemon killed with SIGKILL cannot unlink its segment
            for name in self.shm_seen:
                with contextlib.suppress(OSError):
                    os.unlink(name)
        finally:
            sanitizer = self.sanitizer_report()
            leaks = self.secret_leaks()
            if leaks:
                sanitizer += "".join("secret %s... in clear in %s\n" % (s, p) for p, s in leaks)
            sanitizer += "".join("query text %r in the daemon log\n" % q[:24]
                                 for q in self.query_leaks())
            if failed or sanitizer:
                self.print_logs("test failed" if failed else "sanitizer report")
            elif not os.environ.get("ASTROMESH_KEEP_TMP"):
                shutil.rmtree(self.dir, ignore_errors=True)
                if self.sockdir != self.dir:
                    shutil.rmtree(self.sockdir, ignore_errors=True)
                # tests/tmp itself stays (make clean removes it): removing it
                # when empty raced with a parallel test's mkdtemp in it
        if sanitizer:
            raise AssertionError("sanitizer report in the daemon log, or a secret in "
                                 "clear:\n" + sanitizer)
        openapi_raise(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.stop(failed=exc_type is not None)
        return False

    # -- logs --------------------------------------------------------------------
    def front_logs(self):
        """The front server's error and access logs (of whichever runs)."""
        if self.front == "apache":
            return [self.apache_errorlog, self.apache_accesslog]
        return [self.lighttpd_errorlog, self.lighttpd_accesslog]

    def read_log(self, path, limit=200000):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace")

    def sanitizer_report(self):
        log = self.read_log(self.daemon_log, limit=10 ** 7)
        hits = [line for line in log.splitlines() if any(m in line for m in SANITIZER_MARKS)]
        if not hits:
            return ""
        first = min(log.find(h) for h in hits)
        return log[first:first + 8000]

    def print_logs(self, why):
        if self._logs_printed:
            return
        self._logs_printed = True
        out = sys.stderr
        out.write("\n==== %s: instance in %s (port %d) ====\n" % (why, self.dir, self.port))
        if self.front == "apache":
            front = (("apache error log", self.apache_errorlog),
                     ("apache stderr", self.apache_stderr),
                     ("apache access log (tail)", self.apache_accesslog),
                     ("apache config", self.apache_conf))
        else:
            front = (("lighttpd error log", self.lighttpd_errorlog),
                     ("lighttpd stderr", self.lighttpd_stderr),
                     ("lighttpd access log (tail)", self.lighttpd_accesslog))
        for title, path in (("daemon log", self.daemon_log),) + front + (
                ("config", self.config_path),):
            text = self.read_log(path, limit=20000 if "access" not in title else 4000)
            out.write("---- %s (%s) ----\n%s\n" % (title, path, text.rstrip()))
        out.write("==== end of logs ====\n")
        out.flush()

    # -- HTTP --------------------------------------------------------------------
    def connection(self, timeout=HTTP_TIMEOUT):
        """A new connection to the front server (NetnsInstance: from its
        client's network namespace)."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, token=None, raw=None,
                timeout=HTTP_TIMEOUT):
        """One HTTP request through the front server on a fresh connection.

        body: an object sent as JSON (Content-Type application/json unless
        headers say otherwise); raw: bytes sent as they are (Content-Type
        application/json unless headers say otherwise; pass
        {"Content-Type": None} to send none). Returns (status, headers with
        lower-case names, parsed JSON if the answer is JSON else text; None
        for an empty body)."""
        hdrs = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        if raw is not None:
            data = raw if isinstance(raw, bytes) else raw.encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        if token is not None:
            hdrs["Authorization"] = "Bearer " + token
        for k, v in (headers or {}).items():
            for existing in [h for h in hdrs if h.lower() == k.lower()]:
                del hdrs[existing]
            if v is not None:
                hdrs[k] = v
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            rheaders = {k.lower(): v for k, v in resp.getheaders()}
            status = resp.status
        finally:
            conn.close()
        self._record(method, path, body, status, rheaders, payload)
        return status, rheaders, parse_body(rheaders, payload)

    def _record(self, method, path, body, status, rheaders, payload):
        """Note the secrets this exchange carried and append the answer to
        responses.log. An API key's secret is in exactly one answer, its
        create answer: that one is recorded without it."""
        if method == "POST" and re.search(r"/orgs/[^/]+/providers/?$", path) and \
                isinstance(body, dict) and isinstance(body.get("api_key"), str) and \
                len(body["api_key"]) >= 8:
            self.secrets.add(body["api_key"])
        openapi_check(self, method, path, status, rheaders, payload)
        if method == "POST" and re.search(r"/orgs/[^/]+/keys/?$", path) and status == 201:
            created = parse_body(rheaders, payload)
            if isinstance(created, dict) and isinstance(created.get("secret"), str):
                self.secrets.add(created["secret"])
                payload = payload.replace(created["secret"].encode(), b"<shown once>")
        if method == "POST" and re.search(r"/agents/[^/]+/(run|test)/?$", path) and \
                isinstance(body, dict) and isinstance(body.get("query"), str) and \
                len(body["query"]) >= 12:
            self.queries.add(body["query"])
        with open(self.responses_log, "ab") as f:
            f.write(("%s %s -> %d\n" % (method, path, status)).encode())
            for k, v in rheaders.items():
                f.write(("%s: %s\n" % (k, v)).encode("utf-8", "replace"))
            f.write(payload + b"\n\n")

    def secret_leaks(self):
        """[(file, secret's first 8 chars)] for every recorded secret found in
        clear in any file of this instance: the database environment, the
        daemon's and the front server's logs, responses.log."""
        leaks = []
        if not self.secrets:
            return leaks
        needles = [(s, s.encode("utf-8")) for s in self.secrets]
        for root, _, files in os.walk(self.dir):
            for name in files:
                path = os.path.join(root, name)
                if path == self.config_path or not os.path.isfile(path):
                    continue
                with open(path, "rb") as f:
                    data = f.read()
                leaks += [(path, s[:8]) for s, b in needles if b in data]
        return leaks

    def query_leaks(self):
        """The recorded query texts found in the daemon's log."""
        log = self.read_log(self.daemon_log, limit=10 ** 8)
        return sorted(q for q in self.queries if q in log)

    def login(self, email, name=None):
        """POST /auth/dev/login; assert 200; return the answer
        (access_token, refresh_token, token_type, expires_in, org_slug)."""
        status, _, body = self.request("POST", "/api/v1/auth/dev/login",
                                       {"email": email, "name": name or email.split("@")[0]})
        if status != 200 or not isinstance(body, dict) or "access_token" not in body:
            raise AssertionError("dev login of %s: %s %r" % (email, status, body))
        return body

    def user(self, email, name=None):
        """(token, slug) of a logged-in user."""
        b = self.login(email, name)
        return b["access_token"], b["org_slug"]

    def health(self):
        status, _, body = self.request("GET", "/api/v1/health")
        if status != 200:
            raise AssertionError("GET /api/v1/health: %s %r" % (status, body))
        return body

    def registry_count(self):
        return self.health()["registry"]["agents"]


# --- network namespaces: an Instance inside one (tests/integration/cluster.py) -----
# A NetnsInstance runs its daemon and its lighttpd under `ip netns exec NS`
# (lighttpd listens on the namespace's own address as well as on its
# loopback), and its requests leave from another namespace, the client's: a
# socket belongs to the namespace its creating thread was in (setns(2) is per
# thread), whichever thread uses it afterwards. Needs root (CAP_NET_ADMIN and
# CAP_SYS_ADMIN). The rest is Instance's: data dir, config, logs, the secret
# and OpenAPI checks at stop.

CLONE_NEWNET = 0x40000000
IP = shutil.which("ip") or "/usr/sbin/ip"
_LIBC = []


def _setns_net(fd):
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    if _LIBC[0].setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns(CLONE_NEWNET): %s" % os.strerror(err))


def netns_socket(ns, family=socket.AF_INET, kind=socket.SOCK_STREAM):
    """A new socket of the network namespace ns (/run/netns/ns); the calling
    thread is back in its own namespace when this returns."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join("/run/netns", ns), os.O_RDONLY)
        try:
            _setns_net(target)
            try:
                return socket.socket(family, kind)
            finally:
                _setns_net(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


class NetnsConnection(http.client.HTTPConnection):
    """An HTTPConnection whose socket is made in the namespace netns."""

    def __init__(self, netns, host, port, timeout=HTTP_TIMEOUT):
        super().__init__(host, port, timeout=timeout)
        self.netns = netns

    def connect(self):
        sock = netns_socket(self.netns)
        try:
            sock.settimeout(self.timeout)
            sock.connect((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def netns_argv(ns, argv):
    """argv run inside the network namespace ns."""
    return [IP, "netns", "exec", ns] + list(argv)


def group_in_step(master, replicas, timeout=60.0):
    """Wait until each of replicas (anything with .request, as master) has
    applied a commit made now at master: a replica that has just joined may
    still be copying the databases, and then acknowledges nothing (a slow
    machine takes seconds). The commit is a sign-in (needs no org)."""
    def signed_in():
        status, headers, _ = master.request(
            "POST", "/api/v1/auth/dev/login",
            {"email": "in-step-%s@example.com" % secrets.token_hex(4)})
        return headers.get("x-astromesh-commit") if status == 200 else None
    token = poll(signed_in, timeout, interval=0.2, what="a sign-in at the master")
    for r in replicas:
        poll(lambda r=r: r.request("GET", "/api/v1/health",
                                   headers={"X-Astromesh-After": token})[0] == 200,
             timeout, interval=0.2, what="%r to apply the master's commit" % (r,))


def process_group(pgid):
    """Live pids whose process group is pgid (from /proc)."""
    return sorted(p for p, _, _, g in live_processes() if g == pgid)


class NetnsInstance(Instance):
    """An Instance behind lighttpd inside the network namespace netns, on
    addr:port there (8080 by default: every namespace has ports of its own),
    reached from the namespace client_netns. The daemon leads a process
    group of its own (kill_group). master_key: the bytes of the master key
    file (hosts of one group share it, and auth.jwt_secret)."""

    def __init__(self, config=None, name="inst", netns=None, addr=None, client_netns=None,
                 port=8080, master_key=None):
        if not (netns and addr and client_netns):
            raise HarnessError("NetnsInstance needs netns, addr and client_netns")
        super().__init__(config, name=name, front="lighttpd")
        self.netns, self.addr, self.client_netns, self.port = netns, addr, client_netns, port
        if master_key is not None:
            with open(self.master_key_file, "wb") as f:
                f.write(master_key)
        # astromesh-dev.conf as it is, beside links to its includes (lighttpd
        # resolves an include relative to the top config file), plus a socket
        # on addr:port
        confdir = os.path.dirname(DEV_CONF)
        self.lighttpd_dir = os.path.join(self.dir, "lighttpd")
        os.makedirs(self.lighttpd_dir)
        for conf in os.listdir(confdir):
            if conf.endswith(".conf"):
                os.symlink(os.path.join(confdir, conf), os.path.join(self.lighttpd_dir, conf))
        self.lighttpd_conf = os.path.join(self.lighttpd_dir, "netns.conf")
        with open(self.lighttpd_conf, "w") as f:
            f.write('include "%s"\n$SERVER["socket"] == "%s:%d" { }\n'
                    % (os.path.basename(DEV_CONF), addr, port))

    @property
    def base_url(self):
        return "http://%s:%d" % (self.addr, self.port)

    def connection(self, timeout=HTTP_TIMEOUT):
        return NetnsConnection(self.client_netns, self.addr, self.port, timeout=timeout)

    def start_daemon(self, extra_args=()):
        log = open(self.daemon_log, "ab")
        try:
            self.daemon = subprocess.Popen(
                netns_argv(self.netns, [DAEMON, "-c", self.config_path] + list(extra_args)),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGTERM))
        finally:
            log.close()
        return self.daemon

    def start_lighttpd(self, attempts=1):
        def started(proc):
            self.lighttpd = proc
        self.start_front(
            "lighttpd", netns_argv(self.netns, [LIGHTTPD, "-D", "-f", self.lighttpd_conf]),
            self.lighttpd_stderr, (self.lighttpd_stderr, self.lighttpd_errorlog), started, 1,
            env=self.lighttpd_env(), preexec_fn=_die_with_parent(signal.SIGTERM))

    def stop(self, failed=False):
        """Instance.stop, then SIGKILL to whatever is left of the daemon's
        process group (a storage task its supervisor was waiting for)."""
        try:
            super().stop(failed=failed)
        finally:
            if self.daemon is not None:
                with contextlib.suppress(OSError):
                    os.killpg(self.daemon.pid, signal.SIGKILL)

    def kill_group(self, sig=signal.SIGKILL):
        """Send sig to the daemon's whole process group at once (supervisor,
        workers, stream process, storage tasks); wait until every member is
        gone. Returns the supervisor's exit code."""
        pid = self.daemon.pid
        members = process_group(pid)
        self.shm_seen |= shm_names(pid)
        os.killpg(pid, sig)
        rc = self.wait_daemon_exit()
        poll(lambda: not any(pid_alive(p) for p in members), STOP_TIMEOUT,
             what="process group %d (%s) to exit" % (pid, members))
        return rc


def parse_body(headers, payload):
    if not payload:
        return None
    text = payload.decode("utf-8", "replace")
    if headers.get("content-type", "").startswith("application/json"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


# --- assertions ---------------------------------------------------------------------

def assert_error(tc, resp, status, code=None, fields=None):
    """Assert resp (status, headers, body) is exactly the SPEC error envelope:
    {"error","message","status"} (+ "details" on 422, and only there), the
    JSON status equal to the HTTP status, Content-Type application/json.
    code: the expected error code (or a tuple of allowed codes). fields: field
    names that must each appear in details. Returns the body."""
    got_status, headers, body = resp
    ctx = "answer %s %r" % (got_status, body)
    if isinstance(status, (tuple, list, set)):
        tc.assertIn(got_status, status, ctx)
    else:
        tc.assertEqual(got_status, status, ctx)
    tc.assertTrue(headers.get("content-type", "").startswith("application/json"),
                  "Content-Type %r, %s" % (headers.get("content-type"), ctx))
    tc.assertIsInstance(body, dict, ctx)
    keys = set(body)
    allowed = {"error", "message", "status"} | ({"details"} if got_status == 422 else set())
    tc.assertTrue({"error", "message", "status"} <= keys <= allowed,
                  "envelope keys %s, %s" % (sorted(keys), ctx))
    tc.assertIsInstance(body["error"], str, ctx)
    tc.assertRegex(body["error"], ERROR_CODE_RE, ctx)
    tc.assertIsInstance(body["message"], str, ctx)
    tc.assertTrue(body["message"], "empty message, " + ctx)
    tc.assertIs(type(body["status"]), int, ctx)
    tc.assertEqual(body["status"], got_status, ctx)
    if code is not None:
        if isinstance(code, (tuple, list, set)):
            tc.assertIn(body["error"], code, ctx)
        else:
            tc.assertEqual(body["error"], code, ctx)
    if body["error"] in ("validation_error", "invalid_config"):
        tc.assertIn("details", body, "no details on a validation error, " + ctx)
    if "details" in body:
        tc.assertIsInstance(body["details"], list, ctx)
        for d in body["details"]:
            tc.assertIsInstance(d, dict, ctx)
            tc.assertEqual(set(d), {"field", "problem"}, ctx)
            tc.assertIsInstance(d["field"], str, ctx)
            tc.assertIsInstance(d["problem"], str, ctx)
            tc.assertTrue(d["problem"], ctx)
    for f in fields or ():
        tc.assertIn(f, [d["field"] for d in body.get("details", [])],
                    "field %r not in details, %s" % (f, ctx))
    return body


def assert_json(tc, resp, status):
    """Assert a JSON answer with the given status; return the body."""
    got_status, headers, body = resp
    tc.assertEqual(got_status, status, "answer %s %r" % (got_status, body))
    tc.assertTrue(headers.get("content-type", "").startswith("application/json"),
                  "Content-Type %r" % headers.get("content-type"))
    return body


def outcome_failed(tc):
    """True if the running test has failed so far (usable from tearDown
    and cleanups, where unittest's own success flag is reset)."""
    outcome = getattr(tc, "_outcome", None)
    if outcome is None:
        return False
    result = getattr(outcome, "result", None)        # Python >= 3.11
    if result is not None:
        for test, _ in list(result.failures) + list(result.errors):
            if test is tc or getattr(test, "test_case", None) is tc:
                return True
    errors = getattr(outcome, "errors", None)        # Python < 3.11
    return bool(errors and any(exc for _, exc in errors))


class InstanceTestCase(unittest.TestCase):
    """A TestCase with one Instance shared by the class (cls.inst), started
    in setUpClass and stopped by a class cleanup whatever happens.
    Subclasses set `config` to override the default config, `front` to
    serve through Apache ("apache") instead of lighttpd, or
    `shared_instance = False` to have none (tests call new_instance)."""

    config = None
    front = None            # None: ASTROMESH_FRONT's (lighttpd by default)
    shared_instance = True
    _failed = False

    @classmethod
    def setUpClass(cls):
        cls._failed = False
        if not cls.shared_instance:
            return
        cls.inst = Instance(cls.config, name=cls.__name__, front=cls.front)
        cls.addClassCleanup(lambda: cls.inst.stop(failed=cls._failed))
        cls.inst.start()

    def tearDown(self):
        if outcome_failed(self):
            type(self)._failed = True

    def new_instance(self, config=None, start=True):
        """A private instance for this test, stopped by a cleanup."""
        inst = Instance(config, name=self.id().split(".")[-1], front=self.front)
        self.addCleanup(lambda: inst.stop(failed=outcome_failed(self)))
        if start:
            inst.start()
        return inst

    def unique_email(self, tag="user"):
        return "%s-%s@example.com" % (tag, secrets.token_hex(4))


def run_concurrently(fns, timeout=300.0):
    """Run each callable in its own thread, all released together; return
    their results in order. An exception in a thread is re-raised."""
    barrier = threading.Barrier(len(fns))
    results = [None] * len(fns)
    errors = []

    def runner(i, fn):
        try:
            barrier.wait(timeout=30)
            results[i] = fn()
        except BaseException as e:          # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=runner, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        raise HarnessError("concurrent calls still running after %.0fs" % timeout)
    if errors:
        raise errors[0]
    return results


def main():
    """Entry point of every test file: unittest, exit 0 or 1 (never 77)."""
    unittest.main(verbosity=2)
