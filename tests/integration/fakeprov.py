"""fakeprov - start, script and stop tests/fake_provider.py for the
integration tests.

A FakeProvider owns one fake_provider.py process on a free loopback port
(the fake picks it: --port 0, and the first line it prints is the port),
and, with log_dir, a file there for its stderr (removed by stop() unless
ASTROMESH_KEEP_TMP is set). start() waits for that line and for GET
/_health by bounded polling; stop() sends SIGTERM and waits, and is safe to
call twice. The control API is the
one in the fake's module docstring: control() replaces the whole setting,
requests() returns what the fake received (auth header values replaced by
"<present>"), clear() forgets it.

Helpers to read what the fake received, whatever the protocol:
  entry_messages(entry)  [(role, text)] in the order sent, the system text
                         first (Anthropic's top-level "system" included)
  entry_text(entry)      the whole request body as one string
  prompt_words(entry)    the prompt token count the fake computed for it

Environment: PYTHON3 (the interpreter for the fake; default: this one),
ASTROMESH_SRCDIR (where tests/fake_provider.py is; the harness default).
"""

import contextlib
import http.client
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

from harness import SRCDIR, HarnessError, _die_with_parent, poll

SCRIPT = os.path.join(SRCDIR, "tests", "fake_provider.py")
PYTHON = os.environ.get("PYTHON3") or sys.executable or "python3"
START_TIMEOUT = 30.0

_fake_module = None


def fake_module():
    """tests/fake_provider.py imported as a module (for its word counting:
    the tests count tokens exactly as the fake did)."""
    global _fake_module
    if _fake_module is None:
        spec = importlib.util.spec_from_file_location("fake_provider_counting", SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _fake_module = mod
    return _fake_module


def words(text):
    return len(text.split()) if isinstance(text, str) else 0


class FakeProvider:
    """One fake provider process. expect_key: start it with --expect-key."""

    def __init__(self, expect_key=None, log_dir=None):
        self.expect_key = expect_key
        self.proc = None
        self.port = None
        self.log_dir = log_dir
        self.stderr_path = None

    # -- process -------------------------------------------------------------
    def start(self):
        args = [PYTHON, SCRIPT, "--port", "0"]
        if self.expect_key is not None:
            args += ["--expect-key", self.expect_key]
        err = subprocess.DEVNULL
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            fd, self.stderr_path = tempfile.mkstemp(prefix="fake_provider-", suffix=".stderr",
                                                    dir=self.log_dir)
            err = os.fdopen(fd, "ab")
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err, preexec_fn=_die_with_parent(signal.SIGTERM))
        finally:
            if err is not subprocess.DEVNULL:
                err.close()
        self.port = self._read_port()
        poll(self._healthy, START_TIMEOUT, what="fake provider GET /_health")
        return self

    def _read_port(self):
        """The first stdout line, read with a deadline."""
        deadline = time.monotonic() + START_TIMEOUT
        buf = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise HarnessError("fake provider printed no port within %.0fs" % START_TIMEOUT)
            r, _, _ = select.select([fd], [], [], min(left, 0.5))
            if not r:
                if self.proc.poll() is not None:
                    raise HarnessError("fake provider exited with %s" % self.proc.returncode)
                continue
            chunk = os.read(fd, 64)
            if not chunk:
                raise HarnessError("fake provider closed stdout without a port "
                                   "(exit %s)" % self.proc.poll())
            buf += chunk
        line = buf.split(b"\n", 1)[0].strip()
        if not line.isdigit():
            raise HarnessError("fake provider's first line is not a port: %r" % line)
        return int(line)

    def _healthy(self):
        if self.proc.poll() is not None:
            raise HarnessError("fake provider exited with %s" % self.proc.returncode)
        try:
            status, body = self._http("GET", "/_health", timeout=5)
        except OSError:
            return False
        return status == 200 and body == {"ok": True}

    def stop(self):
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        with contextlib.suppress(OSError):
            proc.stdout.close()
        if self.stderr_path and not os.environ.get("ASTROMESH_KEEP_TMP"):
            with contextlib.suppress(OSError):
                os.unlink(self.stderr_path)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # -- URLs ----------------------------------------------------------------
    def url(self, prefix=""):
        return "http://127.0.0.1:%d%s" % (self.port, prefix)

    # -- control API -----------------------------------------------------------
    def _http(self, method, path, body=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            hdrs = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            return resp.status, (json.loads(payload) if payload else None)
        finally:
            conn.close()

    def control(self, setting=None, **kw):
        """Replace the whole behaviour (POST /_control); keyword arguments
        are merged over setting."""
        body = dict(setting or {}, **kw)
        status, answer = self._http("POST", "/_control", body)
        if status != 200:
            raise HarnessError("fake provider refused control %r: %s %r" % (body, status, answer))
        return answer

    def reset(self):
        """Default behaviour and an empty request log."""
        self.control({})
        self.clear()

    def requests(self):
        status, body = self._http("GET", "/_requests")
        if status != 200:
            raise HarnessError("GET /_requests: %s %r" % (status, body))
        return body

    def provider_requests(self):
        """Only the requests to a provider endpoint (not 404s)."""
        return [r for r in self.requests() if r.get("protocol")]

    def clear(self):
        status, body = self._http("DELETE", "/_requests")
        if status != 200:
            raise HarnessError("DELETE /_requests: %s %r" % (status, body))


# --- reading what the fake received -------------------------------------------

def _text(content):
    return fake_module().text_of(content)


def entry_messages(entry):
    """[(role, text)] of a recorded request, system first. Tool results
    count as role "tool" whatever the protocol's own shape."""
    body = entry.get("body") or {}
    out = []
    if entry.get("protocol") == "anthropic" and body.get("system") is not None:
        out.append(("system", _text(body.get("system"))))
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result"
                                              for b in content):
            for b in content:
                if isinstance(b, dict) and b.get("type") == "tool_result":
                    out.append(("tool", _text(b.get("content"))))
            continue
        out.append((m.get("role"), _text(content)))
    return out


def entry_text(entry):
    """The whole body of a recorded request as text (JSON, non-ASCII kept)."""
    if entry.get("body") is not None:
        return json.dumps(entry["body"], ensure_ascii=False)
    return entry.get("raw") or ""


def header(entry, name):
    """A recorded header's value (case-insensitive name), or None."""
    for k, v in (entry.get("headers") or {}).items():
        if k.lower() == name.lower():
            return v
    return None


def prompt_words(entry):
    """The prompt token count the fake computed for this request."""
    return fake_module().conversation(entry["protocol"], entry.get("body") or {})[0]


def offered_tools(entry):
    """Names of the tools offered in a recorded request (any protocol)."""
    names = []
    for t in (entry.get("body") or {}).get("tools") or []:
        if not isinstance(t, dict):
            continue
        if isinstance(t.get("function"), dict):
            names.append(t["function"].get("name"))
        else:
            names.append(t.get("name"))
    return names


# --- the daemon's providers section pointed at a fake -------------------------

SERVER_KEYS = {
    "openai": "sk-fake-openai-123",
    "anthropic": "sk-fake-anthropic-123",
    "groq": "sk-fake-groq-123",
    "mistral": "sk-fake-mistral-123",
    "cohere": "sk-fake-cohere-123",
}

# The path prefix each provider's base_url gets on the fake. groq and mistral
# get prefixes of their own, so a request shows which base_url it went to.
BASE_PATHS = {
    "openai": "/v1",
    "anthropic": "/v1",
    "groq": "/groq/openai/v1",
    "mistral": "/mistral/v1",
    "cohere": "/v2",
    "ollama": "",
}


def provider_config(fake, keys=None, timeout_ms=20000, only=None):
    """The providers: section pointing every provider (or those in only)
    at fake, with the server keys of SERVER_KEYS (or keys)."""
    keys = SERVER_KEYS if keys is None else keys
    out = {}
    for name, prefix in BASE_PATHS.items():
        if only is not None and name not in only:
            continue
        entry = {"base_url": fake.url(prefix), "timeout_ms": timeout_ms}
        if name in keys:
            entry["api_key"] = keys[name]
        out[name] = entry
    return out
