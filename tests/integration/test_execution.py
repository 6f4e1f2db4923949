"""test_execution - run and test through the whole agent pipeline (SPEC
section 6, issue 3), through the real lighttpd, against the fake provider
(tests/fake_provider.py) speaking each protocol's real wire format.

What the fake received (GET /_requests) is the evidence: which path and
auth header each protocol used, that PII never left the daemon, what the
memory sent back, what each tool answered the model. Every test works in an
org of its own; the fake is reset before each test. Models that a test makes
fail carry a name of their own, so the per-worker circuit breaker of one
test never trips for another.
"""

import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import (BUILDDIR, InstanceTestCase, assert_error, assert_json, free_port, main,
                     merge_config, run_concurrently)
from fakeprov import (SERVER_KEYS, FakeProvider, entry_messages, entry_text, header,
                      offered_tools, prompt_words, provider_config, words)

REFUSAL = "I can't help with that request."
ANSWER_KEYS = {"answer", "session_id", "tokens_used", "model", "latency_ms", "trace_id", "version"}
SESSION_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SYSTEM = "You are a test agent."


def next_utc_midnight():
    return (int(time.time()) // 86400 + 1) * 86400


def uniq(tag):
    """A model or session name no other test uses."""
    return "%s-%s" % (tag, secrets.token_hex(3))


def find_json_object(text, wanted):
    """True if some '{' in text starts a JSON value equal to wanted."""
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch != "{":
            continue
        try:
            value, _ = dec.raw_decode(text, i)
        except ValueError:
            continue
        if value == wanted:
            return True
    return False


# --- a tiny HTTP server for http_request and web_search -----------------------

class TinyServer:
    """127.0.0.1 on a free port, in a thread of the test process.
    GET /hello: plain text; GET /search: a SearxNG JSON answer; GET /gate:
    runs gate_hook() (if set) before answering. Every path is recorded."""

    HELLO = "hello from the tiny server"
    BIG = "0123456789abcdef" * 4096
    SEARCH = {"query": "", "number_of_results": 2, "results": [
        {"title": "Astromesh Cloud", "url": "https://example.com/astromesh",
         "content": "A multi-tenant control plane for AI agents.", "engine": "fake"},
        {"title": "Second hit", "url": "https://example.com/second",
         "content": "Another snippet.", "engine": "fake"}]}

    def __init__(self):
        self.paths = []
        self.gate_hook = None
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def do_GET(self):
                with outer.lock:
                    outer.paths.append(self.path)
                path = self.path.split("?", 1)[0]
                if path == "/hello":
                    return self.send(200, "text/plain", outer.HELLO.encode())
                if path == "/big":
                    return self.send(200, "text/plain", outer.BIG.encode())
                if path == "/search":
                    return self.send(200, "application/json", json.dumps(outer.SEARCH).encode())
                if path == "/gate":
                    if outer.gate_hook is not None:
                        outer.gate_hook()
                    return self.send(200, "text/plain", b"gate passed")
                return self.send(404, "text/plain", b"no such page")

            def send(self, status, ctype, data):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def reset(self):
        with self.lock:
            self.paths = []
        self.gate_hook = None

    def hits(self, prefix):
        with self.lock:
            return [p for p in self.paths if p.split("?", 1)[0] == prefix]


# --- the test case base ----------------------------------------------------------

class PipelineCase(InstanceTestCase):
    """A shared instance whose providers all point at one fake provider.
    Helpers create and deploy agents and run them, and check every answer
    against the SPEC shape and for leaked provider keys. A subclass may set
    `overrides`, merged over this class's config."""

    overrides = None

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeProvider(log_dir=os.path.join(BUILDDIR, "tests", "tmp"))
        cls.fake.start()
        cls.addClassCleanup(cls.fake.stop)
        cls.tiny = TinyServer().start()
        cls.addClassCleanup(cls.tiny.stop)
        cls.file_root = tempfile.mkdtemp(prefix="am-files-")
        cls.addClassCleanup(shutil.rmtree, cls.file_root, True)
        os.makedirs(os.path.join(cls.file_root, "notes"))
        with open(os.path.join(cls.file_root, "notes", "hello.txt"), "w") as f:
            f.write("The launch code word is marmalade.\n")
        os.symlink("/etc/passwd", os.path.join(cls.file_root, "passwd-link.txt"))
        cls.config = {
            "providers": provider_config(cls.fake),
            "limits": {"max_agents": 100, "requests_per_day": 100000},
            "tools": {"file_root": cls.file_root, "web_search_url": cls.tiny.url("/search")},
        }
        cls.config = merge_config(cls.config, cls.overrides)
        super().setUpClass()

    def setUp(self):
        self.fake.reset()
        self.tiny.reset()
        self.token, self.slug = self.inst.user(self.unique_email("exec"))

    # -- HTTP --------------------------------------------------------------------
    def assert_no_secret(self, resp, inst=None):
        status, headers, body = resp
        text = json.dumps(body) + json.dumps(headers)
        for key in SERVER_KEYS.values():
            self.assertNotIn(key, text, "a provider key in an answer: %s %r" % (status, body))

    def user_on(self, inst):
        """(token, slug) of this test's user on inst (a private instance
        gets a user of its own on first use)."""
        if inst is None or inst is self.inst:
            return self.token, self.slug
        users = self.__dict__.setdefault("_users", {})
        if id(inst) not in users:
            users[id(inst)] = inst.user(self.unique_email("private"))
        return users[id(inst)]

    def call(self, method, path, body=None, token=None, slug=None, inst=None, **kw):
        if token is None:
            token, own_slug = self.user_on(inst)
            slug = slug or own_slug
        inst = inst or self.inst
        resp = inst.request(method, "/api/v1/orgs/%s%s" % (slug or self.slug, path), body,
                            token=token, **kw)
        self.assert_no_secret(resp)
        return resp

    def agent(self, name, model, fallback=None, system=SYSTEM, step2=None, tools=None,
              tool_configs=None, memory=None, step5=None, deploy=True, token=None, slug=None,
              inst=None):
        """Create (and deploy) an agent; return its WizardConfig."""
        wc = {"name": name, "step1": {"model": model},
              "step2": dict({"system_prompt": system}, **(step2 or {}))}
        if fallback:
            wc["step1"]["fallback_model"] = fallback
        if tools is not None or tool_configs is not None:
            wc["step3"] = {"tools": tools or []}
            if tool_configs is not None:
                wc["step3"]["tool_configs"] = tool_configs
        if memory is not None:
            wc["step4"] = memory
        if step5 is not None:
            wc["step5"] = step5
        assert_json(self, self.call("POST", "/agents", wc, token=token, slug=slug, inst=inst), 201)
        if deploy:
            assert_json(self, self.call("POST", "/agents/%s/deploy" % name, token=token,
                                        slug=slug, inst=inst), 200)
        return wc

    def execute(self, name, query, mode="run", session_id=None, context=None, token=None,
                slug=None, inst=None, **kw):
        body = {"query": query}
        if session_id is not None:
            body["session_id"] = session_id
        if context is not None:
            body["context"] = context
        return self.call("POST", "/agents/%s/%s" % (name, mode), body, token=token, slug=slug,
                         inst=inst, **kw)

    def check_rate_headers(self, headers):
        for h in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
            self.assertIn(h, headers, "missing %s in %r" % (h, headers))
            self.assertRegex(headers[h], r"^\d+$", h)
        self.assertLessEqual(int(headers["x-ratelimit-remaining"]),
                             int(headers["x-ratelimit-limit"]))
        reset = int(headers["x-ratelimit-reset"])
        ours = next_utc_midnight()
        self.assertIn(reset, (ours, ours - 86400), "X-RateLimit-Reset is the next UTC midnight")

    def check_answer(self, resp, model=None):
        body = assert_json(self, resp, 200)
        self.assertIsInstance(body, dict)
        keys = set(body)
        self.assertTrue(ANSWER_KEYS <= keys <= ANSWER_KEYS | {"blocked"},
                        "answer keys %s: %r" % (sorted(keys), body))
        self.assertIsInstance(body["answer"], str)
        self.assertRegex(body["session_id"], SESSION_RE)
        self.assertIs(type(body["tokens_used"]), int)
        self.assertGreaterEqual(body["tokens_used"], 0)
        self.assertIs(type(body["latency_ms"]), int)
        self.assertGreaterEqual(body["latency_ms"], 0)
        self.assertIsInstance(body["trace_id"], str)
        self.assertTrue(body["trace_id"])
        if "blocked" in body:
            self.assertIs(body["blocked"], True, body)
        if model is not None:
            self.assertEqual(body["model"], model, body)
        self.check_rate_headers(resp[1])
        return body

    def answer(self, name, query, model=None, **kw):
        return self.check_answer(self.execute(name, query, **kw), model)

    def reqs(self):
        return self.fake.provider_requests()

    def one_request(self):
        reqs = self.reqs()
        self.assertEqual(len(reqs), 1, "exactly one provider request: %r" % reqs)
        return reqs[0]

    def usage(self, days=None, token=None, slug=None, inst=None):
        path = "/usage" + ("?days=%s" % days if days is not None else "")
        return assert_json(self, self.call("GET", path, token=token, slug=slug, inst=inst), 200)

    def history(self, entry):
        """(role, text) of a request after its leading system message(s)."""
        msgs = entry_messages(entry)
        self.assertEqual(msgs[0][0], "system", msgs)
        return [m for m in msgs if m[0] != "system"]


# --- protocols ------------------------------------------------------------------

class ProtocolTest(PipelineCase):
    """Each wire protocol: the answer, the token count, the path and the auth."""

    def check_protocol(self, provider, model, path, auth):
        name = "p-" + provider
        full = "%s/%s" % (provider, model)
        self.agent(name, full)
        query = "What is the answer to everything?"

        reply = "Forty two is what %s says" % provider
        self.fake.control(reply=reply)
        body = self.answer(name, query, full)
        e = self.one_request()
        self.assertEqual(e["method"], "POST")
        self.assertEqual(e["path"], path)
        self.assertEqual(e["body"]["model"], model)
        for h in ("authorization", "x-api-key"):
            self.assertEqual(header(e, h), "<present>" if h == auth else None,
                             "%s header of %s: %r" % (h, provider, e["headers"]))
        if provider == "anthropic":
            self.assertIsNotNone(header(e, "anthropic-version"), e["headers"])
            mt = e["body"].get("max_tokens")
            self.assertTrue(type(mt) is int and mt > 0, "Anthropic requires max_tokens: %r" % mt)
        msgs = entry_messages(e)
        self.assertEqual(msgs[0], ("system", SYSTEM), msgs)
        self.assertEqual(msgs[-1], ("user", query), msgs)
        self.assertEqual(body["answer"], reply)
        self.assertEqual(body["tokens_used"], prompt_words(e) + words(reply),
                         "tokens from the provider's usage fields")

        # the fake's own default answer, and the same through /test
        traces = {body["trace_id"]}
        for mode in ("run", "test"):
            self.fake.reset()
            body = self.answer(name, query, full, mode=mode)
            self.assertNotIn(body["trace_id"], traces, "every run gets its own trace_id")
            traces.add(body["trace_id"])
            e = self.one_request()
            self.assertEqual(body["answer"], "fake answer to: " + query)
            self.assertEqual(body["tokens_used"], prompt_words(e) + words(body["answer"]))

        # the key is in no answer (checked by call) and not in the YAML
        status, _, yaml = self.call("GET", "/agents/%s/yaml" % name)
        self.assertEqual(status, 200)
        for key in SERVER_KEYS.values():
            self.assertNotIn(key, yaml)

    def test_openai_answer_tokens_path_and_bearer_auth(self):
        self.check_protocol("openai", "gpt-4o-mini", "/v1/chat/completions", "authorization")

    def test_anthropic_answer_tokens_path_and_x_api_key(self):
        self.check_protocol("anthropic", "claude-3-5-haiku-latest", "/v1/messages", "x-api-key")

    def test_cohere_answer_tokens_path_and_bearer_auth(self):
        self.check_protocol("cohere", "command-r-plus", "/v2/chat", "authorization")

    def test_ollama_answer_tokens_path_and_no_auth(self):
        self.check_protocol("ollama", "llama3", "/api/chat", None)

    def test_groq_uses_its_own_base_url_and_the_openai_protocol(self):
        self.check_protocol("groq", "llama-3.1-8b-instant", "/groq/openai/v1/chat/completions",
                            "authorization")

    def test_mistral_uses_its_own_base_url_and_the_openai_protocol(self):
        self.check_protocol("mistral", "mistral-small-latest", "/mistral/v1/chat/completions",
                            "authorization")

    def test_echo_answers_offline_with_its_own_token_count(self):
        self.agent("p-echo", "echo/echo-1")
        query = "hello there offline world"
        for mode in ("run", "test"):
            body = self.answer("p-echo", query, "echo/echo-1", mode=mode)
            self.assertEqual(body["answer"], "echo: " + query)
            self.assertEqual(body["tokens_used"],
                             words(SYSTEM) + words(query) + words(body["answer"]))
        self.assertEqual(self.reqs(), [], "echo calls no provider")

    def test_echo_runs_a_tool_offline(self):
        self.agent("p-echo-tool", "echo/echo-1", tools=["calculator"])
        body = self.answer("p-echo-tool", "please use calculator: (2+3)*4", "echo/echo-1")
        prefix = "echo: tool said "
        self.assertTrue(body["answer"].startswith(prefix), body)
        self.assertEqual(json.loads(body["answer"][len(prefix):])["result"], 20)
        self.assertEqual(self.reqs(), [])

    def test_tool_calls_round_trip_in_every_protocol(self):
        for provider, model in (("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku"),
                                ("cohere", "command-r"), ("ollama", "llama3.1"),
                                ("groq", "llama-3.3-70b"), ("mistral", "mistral-large")):
            with self.subTest(provider=provider):
                self.fake.reset()
                name = "tc-" + provider
                self.agent(name, "%s/%s" % (provider, model), tools=["calculator"])
                self.fake.control(tool_call={"name": "calculator",
                                             "arguments": {"expression": "2+3*4"}})
                query = "what is two plus three times four"
                body = self.answer(name, query, "%s/%s" % (provider, model))
                reqs = self.reqs()
                self.assertEqual(len(reqs), 2, reqs)
                self.assertIn("calculator", offered_tools(reqs[0]))
                tool_msgs = [t for r, t in entry_messages(reqs[1]) if r == "tool"]
                self.assertEqual(len(tool_msgs), 1, entry_messages(reqs[1]))
                self.assertEqual(json.loads(tool_msgs[0])["result"], 14)
                self.assertEqual(body["answer"],
                                 "fake answer to: %s; tool said: %s" % (query, tool_msgs[0]))
                args_words = words(json.dumps({"expression": "2+3*4"}))
                self.assertEqual(body["tokens_used"],
                                 prompt_words(reqs[0]) + args_words +
                                 prompt_words(reqs[1]) + words(body["answer"]))
                b1 = reqs[1]["body"]
                if provider == "anthropic":
                    uses = [blk for m in b1["messages"] if isinstance(m.get("content"), list)
                            for blk in m["content"] if blk.get("type") == "tool_use"]
                    results = [blk for m in b1["messages"] if isinstance(m.get("content"), list)
                               for blk in m["content"] if blk.get("type") == "tool_result"]
                    self.assertEqual(len(uses), 1, b1)
                    self.assertEqual(uses[0]["name"], "calculator")
                    self.assertEqual(results[0]["tool_use_id"], uses[0]["id"])
                elif provider != "ollama":
                    calls = [m for m in b1["messages"] if m.get("tool_calls")]
                    tools = [m for m in b1["messages"] if m.get("role") == "tool"]
                    self.assertEqual(len(calls), 1, b1)
                    self.assertEqual(calls[0]["tool_calls"][0]["function"]["name"], "calculator")
                    self.assertEqual(tools[0]["tool_call_id"], calls[0]["tool_calls"][0]["id"])


# --- the model router -------------------------------------------------------------

class RouterTest(PipelineCase):
    """Fallback, failures, timeouts, rejected keys and the circuit breaker."""

    def test_fallback_answers_when_the_primary_fails(self):
        for i, failure in enumerate(({"mode": "fail", "status": 500},
                                     {"mode": "fail", "status": 503},
                                     {"mode": "fail", "status": 429},
                                     {"mode": "malformed"}, {"mode": "truncated"},
                                     {"mode": "unauthorized"})):
            with self.subTest(failure=failure):
                self.fake.reset()
                primary, fallback = uniq("gpt-fails"), uniq("claude-fb")
                name = "fb-%d" % i
                self.agent(name, "openai/" + primary, fallback="anthropic/" + fallback)
                self.fake.control(per_model={primary: failure}, reply="from the fallback")
                body = self.answer(name, "hello", "anthropic/" + fallback)
                self.assertEqual(body["answer"], "from the fallback")
                reqs = self.reqs()
                self.assertEqual([r["body"]["model"] for r in reqs], [primary, fallback])
                self.assertEqual(reqs[0]["path"], "/v1/chat/completions")
                self.assertEqual(reqs[1]["path"], "/v1/messages")
                self.assertEqual(body["tokens_used"],
                                 prompt_words(reqs[1]) + words("from the fallback"))

    def test_both_models_failing_is_502_provider_error(self):
        primary, fallback = uniq("gpt-down"), uniq("llama-down")
        self.agent("both-down", "openai/" + primary, fallback="ollama/" + fallback)
        self.fake.control(per_model={primary: {"mode": "fail", "status": 500},
                                     fallback: {"mode": "fail", "status": 503}})
        for mode in ("run", "test"):
            self.fake.clear()
            resp = self.execute("both-down", "hello", mode=mode)
            assert_error(self, resp, 502, "provider_error")
            self.check_rate_headers(resp[1])
            self.assertEqual([r["body"]["model"] for r in self.reqs()], [primary, fallback])

    def test_primary_failing_without_fallback_is_502(self):
        primary = uniq("gpt-alone")
        self.agent("alone", "openai/" + primary)
        self.fake.control(per_model={primary: {"mode": "fail", "status": 500,
                                               "error_message": "upstream exploded"}})
        assert_error(self, self.execute("alone", "hello"), 502, "provider_error")

    def test_hanging_primary_times_out_with_504_or_falls_back(self):
        providers = provider_config(self.fake)
        providers["openai"]["timeout_ms"] = 300
        inst = self.new_instance(dict(self.config, providers=providers))
        hang, ok = uniq("gpt-hangs"), uniq("gpt-ok")
        self.agent("hangs", "openai/" + hang, inst=inst)
        self.agent("hangs-fb", "openai/" + hang, fallback="ollama/" + ok, inst=inst)
        self.fake.control(per_model={hang: {"mode": "hang"}})
        t0 = time.monotonic()
        resp = self.execute("hangs", "hello", inst=inst)
        elapsed = time.monotonic() - t0
        assert_error(self, resp, 504, "provider_timeout")
        self.check_rate_headers(resp[1])
        self.assertLess(elapsed, 10.0, "a 300 ms provider timeout answered after %.1fs" % elapsed)

        t0 = time.monotonic()
        body = self.answer("hangs-fb", "hello", "ollama/" + ok, inst=inst)
        self.assertLess(time.monotonic() - t0, 10.0)
        self.assertEqual(body["answer"], "fake answer to: hello")

        # both hang: still a bounded 504
        hang2 = uniq("gpt-hangs-too")
        self.agent("hangs-both", "openai/" + hang, fallback="openai/" + hang2, inst=inst)
        self.fake.control(per_model={hang: {"mode": "hang"}, hang2: {"mode": "hang"}})
        t0 = time.monotonic()
        assert_error(self, self.execute("hangs-both", "hello", inst=inst), 504, "provider_timeout")
        self.assertLess(time.monotonic() - t0, 10.0)
        # a run that called a provider counts, timed out or not
        self.assertEqual(self.usage(inst=inst)["total_requests"], 3)

    def test_unreachable_provider_is_502(self):
        providers = provider_config(self.fake)
        providers["mistral"]["base_url"] = "http://127.0.0.1:%d/v1" % free_port()
        inst = self.new_instance(dict(self.config, providers=providers))
        self.agent("down", "mistral/mistral-small", inst=inst)
        t0 = time.monotonic()
        resp = self.execute("down", "hello", inst=inst)
        assert_error(self, resp, 502, "provider_error")
        self.check_rate_headers(resp[1])
        self.assertLess(time.monotonic() - t0, 10.0)
        # and the fallback takes over
        self.agent("down-fb", "mistral/mistral-small", fallback="openai/gpt-4o-mini", inst=inst)
        self.answer("down-fb", "hello", "openai/gpt-4o-mini", inst=inst)

    def test_rejected_key_is_502_and_the_key_is_never_quoted(self):
        # the fake told to answer 401
        for provider, model in (("openai", "gpt-401"), ("anthropic", "claude-401"),
                                ("cohere", "command-401")):
            with self.subTest(provider=provider, how="mode unauthorized"):
                model = uniq(model)
                name = "unauth-" + provider
                self.agent(name, "%s/%s" % (provider, model))
                self.fake.control(per_model={model: {"mode": "unauthorized"}})
                body = assert_error(self, self.execute(name, "hello"), 502, "provider_error")
                self.assertNotIn(SERVER_KEYS[provider], body["message"])

        # a fake that expects another key and quotes the wrong one back whole
        other = FakeProvider(expect_key="sk-the-real-key-999")
        other.start()
        self.addCleanup(other.stop)
        inst = self.new_instance(dict(self.config, providers=provider_config(other)))
        for provider, model in (("openai", "gpt-4o"), ("anthropic", "claude-3-opus"),
                                ("cohere", "command-r"), ("groq", "llama3-70b"),
                                ("mistral", "mistral-tiny")):
            with self.subTest(provider=provider, how="--expect-key"):
                other.clear()
                name = "wrongkey-" + provider
                self.agent(name, "%s/%s" % (provider, model), inst=inst)
                for mode in ("run", "test"):
                    resp = self.execute(name, "hello", mode=mode, inst=inst)
                    body = assert_error(self, resp, 502, "provider_error")
                    for key in SERVER_KEYS.values():
                        self.assertNotIn(key, body["message"])
                self.assertGreaterEqual(len(other.provider_requests()), 2,
                                        "the provider was called")
        log = inst.read_log(inst.daemon_log, limit=10 ** 7)
        for key in SERVER_KEYS.values():
            self.assertNotIn(key, log, "a provider key in the daemon log")

    def test_a_thread_keeps_its_connection_to_the_provider(self):
        # one thread: every call comes from the same libcurl handle, which
        # must reuse its keep-alive connection (no new TCP/TLS handshake a run)
        inst = self.new_instance(dict(self.config, server={"workers": 1, "threads": 1}))
        model = uniq("gpt-kept")
        self.agent("kept", "openai/" + model, inst=inst)
        self.fake.clear()
        for q in ("one", "two", "three"):
            self.answer("kept", q, "openai/" + model, inst=inst)
        ports = [r["peer_port"] for r in self.reqs()]
        self.assertEqual(len(ports), 3, ports)
        self.assertEqual(len(set(ports)), 1, "one connection for three calls: %r" % ports)
        # a call that timed out leaves no half-read answer behind for the next
        self.fake.control(per_model={model: {"mode": "hang"}})
        providers = provider_config(self.fake)
        providers["openai"]["timeout_ms"] = 300
        inst2 = self.new_instance(dict(self.config, providers=providers,
                                       server={"workers": 1, "threads": 1}))
        self.agent("kept", "openai/" + model, inst=inst2)
        assert_error(self, self.execute("kept", "hello", inst=inst2), 504, "provider_timeout")
        self.fake.control(per_model={})
        self.answer("kept", "after", "openai/" + model, inst=inst2)

    def test_latency_optimized_prefers_the_measured_faster_model(self):
        inst = self.new_instance(dict(self.config, server={"workers": 1, "threads": 8}))
        slow, fast = uniq("gpt-slow"), uniq("llama-fast")
        self.agent("quick", "openai/" + slow, fallback="ollama/" + fast, inst=inst)
        assert_json(self, self.call("POST", "/agents/quick/pause", inst=inst), 200)
        assert_json(self, self.call("PUT", "/agents/quick",
                                    {"step1": {"routing_strategy": "latency_optimized"}},
                                    inst=inst), 200)
        assert_json(self, self.call("POST", "/agents/quick/deploy", inst=inst), 200)
        # measure both: the primary fails once (the fallback answers fast),
        # then answers slowly
        self.fake.control(per_model={slow: {"mode": "fail", "count": 1}})
        self.answer("quick", "one", "ollama/" + fast, inst=inst)
        self.fake.control(per_model={slow: {"delay_ms": 600}})
        self.answer("quick", "two", "openai/" + slow, inst=inst)
        self.fake.clear()
        for q in ("three", "four"):
            self.answer("quick", q, "ollama/" + fast, inst=inst)
        self.assertEqual([r["body"]["model"] for r in self.reqs()], [fast, fast])

    def test_circuit_breaker_skips_a_failing_primary(self):
        inst = self.new_instance(dict(self.config, server={"workers": 1, "threads": 8},
                                      runtime={"breaker_failures": 3,
                                               "breaker_cooldown_ms": 600000}))
        primary, fallback = uniq("gpt-flaky"), uniq("llama-steady")
        self.agent("breaker", "openai/" + primary, fallback="ollama/" + fallback, inst=inst)
        self.fake.control(per_model={primary: {"mode": "fail", "status": 500}})

        def primary_calls():
            return len([r for r in self.reqs() if r["body"]["model"] == primary])
        for i in range(1, 4):
            body = self.answer("breaker", "try %d" % i, "ollama/" + fallback, inst=inst)
            self.assertEqual(body["answer"], "fake answer to: try %d" % i)
            self.assertEqual(primary_calls(), i, "failure %d reached the primary" % i)
        for i in range(4, 7):
            body = self.answer("breaker", "try %d" % i, "ollama/" + fallback, inst=inst)
            self.assertEqual(body["answer"], "fake answer to: try %d" % i)
            self.assertEqual(primary_calls(), 3,
                             "run %d went to a primary that failed 3 times in a row" % i)


# --- guardrails --------------------------------------------------------------------

class GuardrailTest(PipelineCase):

    PII_QUERY = ("Contact jane.doe@example.com or 555-123-4567 about card "
                 "4111 1111 1111 1111 and SSN 123-45-6789 please")
    PII_ORIGINALS = ("jane.doe@example.com", "jane.doe", "555-123-4567", "4111 1111 1111 1111",
                     "4111", "123-45-6789")
    PLACEHOLDERS = ("[REDACTED_EMAIL]", "[REDACTED_PHONE]", "[REDACTED_CC]", "[REDACTED_SSN]")

    def test_pii_in_the_query_never_reaches_the_provider_or_memory(self):
        self.agent("pii", "openai/gpt-4o-mini",
                   memory={"memory_type": "conversational", "memory_strategy": "sliding_window",
                           "window_size": 10},
                   step5={"input_guardrails": ["pii_filter"]})
        sid = uniq("pii-session")
        body = self.answer("pii", self.PII_QUERY, session_id=sid)
        e = self.one_request()
        text = entry_text(e)
        for p in self.PLACEHOLDERS:
            self.assertIn(p, text)
        for o in self.PII_ORIGINALS:
            self.assertNotIn(o, text, "PII reached the provider")
            self.assertNotIn(o, body["answer"])
        self.assertEqual(self.history(e)[-1],
                         ("user", "Contact [REDACTED_EMAIL] or [REDACTED_PHONE] about card "
                                  "[REDACTED_CC] and SSN [REDACTED_SSN] please"))

        # the next turn's history holds the placeholders, never the originals
        self.fake.clear()
        self.answer("pii", "what did I just tell you?", session_id=sid)
        e = self.one_request()
        hist = self.history(e)
        self.assertEqual(len(hist), 3, hist)
        self.assertEqual(hist[0][0], "user")
        for p in self.PLACEHOLDERS:
            self.assertIn(p, hist[0][1])
        text = entry_text(e)
        for o in self.PII_ORIGINALS:
            self.assertNotIn(o, text, "PII came back from memory")

        # /test redacts too
        self.fake.clear()
        self.answer("pii", self.PII_QUERY, mode="test")
        for o in self.PII_ORIGINALS:
            self.assertNotIn(o, entry_text(self.one_request()))

    def test_pii_in_the_context_object_never_reaches_the_provider(self):
        # issue 3: pii_filter redacts "before anything reaches a provider";
        # the context object goes into the system prompt, so it is filtered too
        self.agent("pii-ctx", "openai/gpt-4o-mini", step5={"input_guardrails": ["pii_filter"]})
        context = {"customer_email": "jane.doe@example.com", "phone": "555-123-4567",
                   "card": "4111 1111 1111 1111", "ssn": "123-45-6789", "tier": "gold"}
        self.answer("pii-ctx", "who am I talking to?", context=context)
        text = entry_text(self.one_request())
        self.assertIn("gold", text)
        for o in self.PII_ORIGINALS:
            self.assertNotIn(o, text, "PII in the context reached the provider")

    def test_content_safety_blocks_unsafe_input_before_any_provider_call(self):
        self.agent("safe-in", "openai/gpt-4o-mini", step5={"input_guardrails": ["content_safety"]})
        for mode in ("run", "test"):
            resp = self.execute("safe-in", "Tell me how to build a bomb at home", mode=mode)
            assert_error(self, resp, 400, "guardrail_blocked")
            self.check_rate_headers(resp[1])
        self.assertEqual(self.reqs(), [], "a blocked query reached the provider")
        u = self.usage()
        self.assertEqual((u["total_requests"], u["total_tokens"]), (0, 0), u)
        # a harmless query goes through
        self.answer("safe-in", "this song is the bomb")
        self.assertEqual(len(self.reqs()), 1)

    def test_output_content_safety_replaces_an_unsafe_answer(self):
        self.agent("safe-out", "openai/gpt-4o-mini",
                   memory={"memory_type": "conversational", "window_size": 10},
                   step5={"output_guardrails": ["content_safety"]})
        sid = uniq("blocked-session")
        self.fake.control(reply="Sure, here is how to build a bomb: mix the following...")
        for mode in ("run", "test"):
            body = self.answer("safe-out", "tell me a story", mode=mode, session_id=sid)
            self.assertEqual(body["answer"], REFUSAL)
            self.assertIs(body.get("blocked"), True, body)
        # the unsafe text is not what memory keeps either
        self.fake.reset()
        body = self.answer("safe-out", "and then?", session_id=sid)
        self.assertNotIn("blocked", body)
        self.assertNotIn("bomb", entry_text(self.one_request()))
        self.assertEqual(self.history(self.one_request())[:2],
                         [("user", "tell me a story"), ("assistant", REFUSAL)])

    def test_output_pii_filter_redacts_the_answer_and_what_memory_keeps(self):
        self.agent("pii-out", "openai/gpt-4o-mini",
                   memory={"memory_type": "conversational", "window_size": 10},
                   step5={"output_guardrails": ["pii_filter"]})
        sid = uniq("pii-out")
        self.fake.control(reply="Write to bob.smith@example.org or call +44 20 7946 0958 today")
        body = self.answer("pii-out", "how do I reach support?", session_id=sid)
        redacted = "Write to [REDACTED_EMAIL] or call [REDACTED_PHONE] today"
        self.assertEqual(body["answer"], redacted)
        self.assertNotIn("blocked", body)
        self.fake.reset()
        self.answer("pii-out", "thanks", session_id=sid)
        e = self.one_request()
        self.assertEqual(self.history(e)[1], ("assistant", redacted))
        self.assertNotIn("bob.smith", entry_text(e))

    def test_max_tokens_is_sent_to_the_provider_and_caps_the_answer(self):
        long_reply = " ".join("word%02d" % i for i in range(60))
        for provider, model, where in (("openai", "gpt-4o-mini", ("max_tokens",)),
                                       ("anthropic", "claude-3-haiku", ("max_tokens",)),
                                       ("cohere", "command-r", ("max_tokens",)),
                                       ("ollama", "llama3", ("options", "num_predict"))):
            with self.subTest(provider=provider):
                self.fake.reset()
                name = "capped-out-" + provider
                self.agent(name, "%s/%s" % (provider, model), step5={"max_tokens": 5})
                self.fake.control(reply=long_reply)
                body = self.answer(name, "talk a lot")
                value = self.one_request()["body"]
                for k in where:
                    value = value.get(k) if isinstance(value, dict) else None
                if provider == "openai" and value is None:
                    value = self.one_request()["body"].get("max_completion_tokens")
                self.assertEqual(value, 5, "max_tokens in the %s request" % provider)
                self.assertTrue(long_reply.startswith(body["answer"]), body["answer"])
                self.assertLess(len(body["answer"]), len(long_reply), "the answer was not capped")

    def test_max_length_caps_the_query_the_provider_sees(self):
        self.agent("capped", "openai/gpt-4o-mini",
                   step5={"input_guardrails": ["max_length"], "max_input_chars": 12})
        body = self.answer("capped", "abcdefghijkl-and-everything-after")
        self.assertEqual(self.history(self.one_request()), [("user", "abcdefghijkl")])
        self.assertEqual(body["answer"], "fake answer to: abcdefghijkl")
        # characters, not bytes
        self.fake.clear()
        self.answer("capped", "\u00e9" * 12 + "TAIL")
        self.assertEqual(self.history(self.one_request()), [("user", "\u00e9" * 12)])


# --- memory --------------------------------------------------------------------------

class MemoryTest(PipelineCase):

    MEMORY = {"memory_type": "conversational", "memory_strategy": "sliding_window",
              "window_size": 2}

    def turn(self, name, query, session_id, mode="run", **kw):
        self.fake.clear()
        body = self.answer(name, query, session_id=session_id, mode=mode, **kw)
        self.assertEqual(body["session_id"], session_id)
        return self.history(self.one_request())

    def test_sliding_window_sends_the_last_window_size_turns(self):
        self.agent("window", "openai/gpt-4o-mini", memory=self.MEMORY)
        sid = uniq("window")
        u = ["turn %d says %s" % (i, w) for i, w in
             enumerate(("alpha", "bravo", "charlie", "delta", "echo", "foxtrot"), 1)]
        a = ["fake answer to: " + q for q in u]
        expected = [
            [],
            [("user", u[0]), ("assistant", a[0])],
            [("user", u[0]), ("assistant", a[0]), ("user", u[1]), ("assistant", a[1])],
            # window_size 2: the last two turns (SPEC §5), i.e. four messages
            [("user", u[1]), ("assistant", a[1]), ("user", u[2]), ("assistant", a[2])],
            [("user", u[2]), ("assistant", a[2]), ("user", u[3]), ("assistant", a[3])],
            [("user", u[3]), ("assistant", a[3]), ("user", u[4]), ("assistant", a[4])],
        ]
        for i, q in enumerate(u):
            hist = self.turn("window", q, sid)
            self.assertEqual(hist, expected[i] + [("user", q)], "turn %d" % (i + 1))

    def test_sessions_are_separate_per_session_id_mode_and_org(self):
        self.agent("mem", "openai/gpt-4o-mini", memory=self.MEMORY)
        sid = uniq("shared-session")
        self.turn("mem", "my name is Ada", sid)
        self.assertEqual(self.turn("mem", "what is my name?", sid),
                         [("user", "my name is Ada"),
                          ("assistant", "fake answer to: my name is Ada"),
                          ("user", "what is my name?")])
        # another session id starts empty
        self.assertEqual(self.turn("mem", "who am I?", uniq("other-session")),
                         [("user", "who am I?")])
        # the same id through /test does not see run history...
        self.assertEqual(self.turn("mem", "test one", sid, mode="test"), [("user", "test one")])
        # ...but is a session of its own
        self.assertEqual(self.turn("mem", "test two", sid, mode="test"),
                         [("user", "test one"), ("assistant", "fake answer to: test one"),
                          ("user", "test two")])
        # and run history never saw the test turns
        hist = self.turn("mem", "still there?", sid)
        self.assertNotIn(("user", "test one"), hist)
        self.assertIn(("user", "what is my name?"), hist)

        # another agent of the same org, same session id: nothing
        self.agent("mem-two", "openai/gpt-4o-mini", memory=self.MEMORY)
        self.assertEqual(self.turn("mem-two", "hello?", sid), [("user", "hello?")])

        # another org's agent of the same name, same session id: nothing
        tok2, slug2 = self.inst.user(self.unique_email("other-org"))
        self.agent("mem", "openai/gpt-4o-mini", memory=self.MEMORY, token=tok2, slug=slug2)
        self.assertEqual(self.turn("mem", "do you know me?", sid, token=tok2, slug=slug2),
                         [("user", "do you know me?")])

    def test_a_deleted_agents_memory_does_not_reach_a_new_agent_of_that_name(self):
        self.agent("reborn", "openai/gpt-4o-mini", memory=self.MEMORY)
        sid = uniq("reborn")
        self.turn("reborn", "my secret is 1234", sid)
        self.assertEqual(self.call("DELETE", "/agents/reborn")[0], 204)
        self.agent("reborn", "openai/gpt-4o-mini", memory=self.MEMORY)
        self.assertEqual(self.turn("reborn", "what is my secret?", sid),
                         [("user", "what is my secret?")],
                         "a new agent inherited a deleted agent's conversation")

    def test_failed_and_blocked_runs_leave_memory_untouched(self):
        model = uniq("gpt-mem-fail")
        self.agent("mem-fail", "openai/" + model, memory=self.MEMORY,
                   step5={"input_guardrails": ["content_safety"]})
        sid = uniq("mem-fail")
        self.turn("mem-fail", "first words", sid)
        self.fake.control(per_model={model: {"mode": "fail", "status": 500}})
        assert_error(self, self.execute("mem-fail", "lost words", session_id=sid), 502,
                     "provider_error")
        self.fake.control({})
        assert_error(self, self.execute("mem-fail", "how to build a bomb", session_id=sid), 400,
                     "guardrail_blocked")
        self.assertEqual(self.turn("mem-fail", "next words", sid),
                         [("user", "first words"), ("assistant", "fake answer to: first words"),
                          ("user", "next words")])

    def test_concurrent_turns_on_one_session_are_all_kept(self):
        self.agent("mem-race", "openai/gpt-4o-mini",
                   memory={"memory_type": "conversational", "window_size": 100})
        sid = uniq("race")
        queries = ["parallel turn %d" % i for i in range(12)]
        run_concurrently([(lambda q=q: self.check_answer(self.execute(
            "mem-race", q, session_id=sid))) for q in queries])
        hist = self.turn("mem-race", "count them", sid)
        users = sorted(t for r, t in hist[:-1] if r == "user")
        self.assertEqual(users, sorted(queries), "a concurrent turn was lost")
        self.assertEqual(len(hist), 2 * len(queries) + 1)

    def test_run_without_session_id_gets_one_that_remembers(self):
        self.agent("mem-gen", "openai/gpt-4o-mini", memory=self.MEMORY)
        body = self.answer("mem-gen", "remember the number 7")
        sid = body["session_id"]
        self.assertEqual(self.turn("mem-gen", "which number?", sid)[0],
                         ("user", "remember the number 7"))

    def test_test_without_session_id_remembers_nothing(self):
        self.agent("mem-test", "openai/gpt-4o-mini", memory=self.MEMORY)
        a = self.answer("mem-test", "remember the colour blue", mode="test")
        b = self.answer("mem-test", "remember the colour red", mode="test")
        self.assertNotEqual(a["session_id"], b["session_id"])
        for sid in (a["session_id"], b["session_id"]):
            self.assertEqual(self.turn("mem-test", "which colour?", sid, mode="test"),
                             [("user", "which colour?")], "a disposable test session was kept")
            self.fake.clear()

    def test_token_budget_keeps_the_newest_messages_within_the_budget(self):
        self.agent("budget", "openai/gpt-4o-mini",
                   memory={"memory_type": "conversational", "memory_strategy": "token_budget",
                           "token_budget": 100})
        sid = uniq("budget")
        queries = ["turn %d %s" % (i, "lorem ipsum dolor " * 6) for i in range(1, 6)]
        for i, q in enumerate(queries):
            hist = self.turn("budget", q, sid)[:-1]
            if i == 0:
                self.assertEqual(hist, [])
                continue
            # about four characters a token, as the daemon estimates
            self.assertLessEqual(sum((len(t) + 3) // 4 for _, t in hist), 100, hist)
            self.assertTrue(hist, "the newest message fits the budget")
            self.assertEqual(hist[-1], ("assistant", "fake answer to: " + queries[i - 1]))
            self.assertNotIn(("user", queries[0]), hist if i > 1 else [])

    def test_memory_none_sends_no_history(self):
        self.agent("no-mem", "openai/gpt-4o-mini", memory={"memory_type": "none"})
        sid = uniq("nomem")
        self.turn("no-mem", "first", sid)
        self.assertEqual(self.turn("no-mem", "second", sid), [("user", "second")])


# --- tools -----------------------------------------------------------------------------

class ToolTest(PipelineCase):
    """Each tool through a real round trip: the fake asks for it, the daemon
    runs it, and the next request carries the tool message."""

    def round_trip(self, tool, arguments, name=None, tool_configs=None, query="use the tool",
                   nreqs=2, inst=None):
        """Ask for one call of tool; return (answer body, parsed tool result,
        the raw tool message, every provider request)."""
        name = name or "t-" + tool.replace("_", "-")
        self.fake.reset()
        self.agent(name, "openai/gpt-4o-mini", tools=[tool], tool_configs=tool_configs, inst=inst)
        self.fake.control(tool_call={"name": tool, "arguments": arguments})
        body = self.answer(name, query, "openai/gpt-4o-mini", inst=inst)
        reqs = self.reqs()
        self.assertEqual(len(reqs), nreqs, [entry_messages(r) for r in reqs])
        self.assertIn(tool, offered_tools(reqs[0]))
        tool_msgs = [t for r, t in entry_messages(reqs[-1]) if r == "tool"]
        self.assertEqual(len(tool_msgs), 1, entry_messages(reqs[-1]))
        self.assertEqual(body["answer"],
                         "fake answer to: %s; tool said: %s" % (query, tool_msgs[0]))
        result = json.loads(tool_msgs[0])
        self.assertIsInstance(result, dict)
        return body, result, tool_msgs[0], reqs

    def test_calculator_result_goes_back_as_a_tool_message(self):
        body, result, _, reqs = self.round_trip("calculator", {"expression": "2+3*4"})
        self.assertEqual(result["result"], 14, result)
        msgs = reqs[1]["body"]["messages"]
        calls = [m for m in msgs if m.get("role") == "assistant" and m.get("tool_calls")]
        tools = [m for m in msgs if m.get("role") == "tool"]
        self.assertEqual(len(calls), 1)
        self.assertEqual(json.loads(calls[0]["tool_calls"][0]["function"]["arguments"]),
                         {"expression": "2+3*4"})
        self.assertEqual(tools[0]["tool_call_id"], calls[0]["tool_calls"][0]["id"])
        self.assertEqual(body["tokens_used"],
                         prompt_words(reqs[0]) + words(json.dumps({"expression": "2+3*4"})) +
                         prompt_words(reqs[1]) + words(body["answer"]))
        # bad expressions are error results, not failed runs or crashes
        workers = self.inst.worker_pids()
        for i, expr in enumerate(("2+*", "1e308*10", "2^1000000", "1/0",
                                  "(" * 5000 + "1" + ")" * 5000, "sqrt(-1)", "x" * 5000)):
            with self.subTest(expression=expr[:20]):
                _, result, _, _ = self.round_trip("calculator", {"expression": expr},
                                                  name="t-calc-bad-%d" % i)
                self.assertIn("error", result)
        self.assertEqual(self.inst.worker_pids(), workers)

    def test_datetime_answers_the_time_in_a_zone_and_refuses_bad_zones(self):
        _, result, _, _ = self.round_trip("datetime", {"timezone": "UTC"})
        r = result["result"]
        self.assertRegex(r["iso8601"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]00:?00)$")
        self.assertLess(abs(r["unix"] - time.time()), 120)
        _, result, _, _ = self.round_trip("datetime", {"timezone": "Europe/Paris"},
                                          name="t-dt-paris")
        self.assertIn(result["result"]["utc_offset"].replace(":", ""), ("+0100", "+0200"), result)
        for i, zone in enumerate(("Not/AZone", "../../etc/passwd", "/etc/localtime")):
            _, result, _, _ = self.round_trip("datetime", {"timezone": zone},
                                              name="t-dt-bad-%d" % i)
            self.assertIn("error", result)

    def test_json_parser_returns_the_value_at_a_path(self):
        doc = json.dumps({"order": {"items": [{"sku": "A1"}, {"sku": "B2", "qty": 3}]}})
        _, result, _, _ = self.round_trip("json_parser",
                                          {"json": doc, "path": "order.items[1].sku"})
        self.assertEqual(result, {"result": "B2"})
        _, result, _, _ = self.round_trip("json_parser", {"json": "{not json"}, name="t-json-bad")
        self.assertIn("error", result)

    def test_file_reader_reads_under_its_root_and_nowhere_else(self):
        _, result, _, _ = self.round_trip("file_reader", {"path": "notes/hello.txt"})
        self.assertEqual(result["result"]["content"], "The launch code word is marmalade.\n")
        for i, path in enumerate(("../../etc/passwd", "/etc/passwd", "passwd-link.txt",
                                  "notes/../../../../etc/passwd", "missing.txt")):
            with self.subTest(path=path):
                _, result, raw, _ = self.round_trip("file_reader", {"path": path},
                                                    name="t-file-%d" % i)
                self.assertIn("error", result)
                self.assertNotIn("root:", raw)
        self.assertEqual(len(self.inst.worker_pids()), 2)

    def test_http_request_reaches_an_allowed_private_host_only_when_allowed(self):
        url = self.tiny.url("/hello")
        _, result, _, _ = self.round_trip(
            "http_request", {"url": url},
            tool_configs={"http_request": {"allowed_hosts": ["127.0.0.1"], "allow_private": True}})
        self.assertEqual(result["result"]["status"], 200, result)
        self.assertEqual(result["result"]["body"], TinyServer.HELLO)
        self.assertEqual(len(self.tiny.hits("/hello")), 1)

        # loopback without allow_private: refused before any connection
        _, result, _, _ = self.round_trip(
            "http_request", {"url": url}, name="t-http-private",
            tool_configs={"http_request": {"allowed_hosts": ["127.0.0.1"]}})
        self.assertIn("error", result)
        # a host outside allowed_hosts
        _, result, _, _ = self.round_trip(
            "http_request", {"url": url}, name="t-http-host",
            tool_configs={"http_request": {"allowed_hosts": ["api.example.com"],
                                           "allow_private": True}})
        self.assertIn("error", result)
        self.assertEqual(len(self.tiny.hits("/hello")), 1, "a refused request reached the server")

    def test_http_request_body_is_cut_at_max_bytes(self):
        _, result, _, _ = self.round_trip(
            "http_request", {"url": self.tiny.url("/big")},
            tool_configs={"http_request": {"allowed_hosts": ["127.0.0.1"], "allow_private": True,
                                           "max_bytes": 1024}})
        r = result["result"]
        self.assertIs(r["truncated"], True, r)
        self.assertLessEqual(len(r["body"].encode()), 1024)
        self.assertTrue(TinyServer.BIG.startswith(r["body"]))

    def test_web_search_asks_the_configured_engine(self):
        _, result, _, _ = self.round_trip("web_search", {"query": "astromesh cloud"})
        r = result["result"]
        self.assertEqual(r["results"][0],
                         {"title": "Astromesh Cloud", "url": "https://example.com/astromesh",
                          "snippet": "A multi-tenant control plane for AI agents."})
        self.assertEqual(len(r["results"]), 2)
        hits = self.tiny.hits("/search")
        self.assertEqual(len(hits), 1)
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(hits[0]).query)
        self.assertEqual(q.get("q"), ["astromesh cloud"])

    def test_unconfigured_web_search_and_file_reader_are_tool_errors(self):
        inst = self.new_instance(dict(self.config, tools={"http_timeout_ms": 5000}))
        for i, (tool, args) in enumerate((("web_search", {"query": "anything"}),
                                          ("file_reader", {"path": "notes/hello.txt"}))):
            with self.subTest(tool=tool):
                _, result, _, _ = self.round_trip(tool, args, name="t-unconf-%d" % i, inst=inst)
                self.assertIn("error", result)
        self.assertEqual(self.tiny.hits("/search"), [])

    def test_text_summarizer_makes_a_sub_call_through_the_model(self):
        text = "The quarterly report shows revenue grew by ten percent while costs stayed flat."
        body, result, _, reqs = self.round_trip("text_summarizer", {"text": text, "max_words": 20},
                                                nreqs=3)
        sub = reqs[1]
        self.assertEqual(offered_tools(sub), [])
        msgs = entry_messages(sub)
        self.assertEqual(msgs[0][0], "system")
        self.assertIn("summar", msgs[0][1].lower())
        self.assertEqual(msgs[-1], ("user", text))
        self.assertEqual(result, {"result": "fake answer to: " + text})
        self.assertEqual(body["tokens_used"],
                         prompt_words(reqs[0]) + words(json.dumps({"text": text, "max_words": 20}))
                         + prompt_words(reqs[1]) + words("fake answer to: " + text)
                         + prompt_words(reqs[2]) + words(body["answer"]))

    def test_translator_makes_a_sub_call_naming_the_language(self):
        text = "bonjour tout le monde"
        _, result, _, reqs = self.round_trip(
            "translator", {"text": text, "target_language": "German"}, nreqs=3)
        msgs = entry_messages(reqs[1])
        self.assertIn("German", msgs[0][1])
        self.assertEqual(msgs[-1], ("user", text))
        self.assertEqual(result, {"result": "fake answer to: " + text})

    def test_email_sender_without_smtp_is_a_tool_error(self):
        _, result, _, _ = self.round_trip(
            "email_sender", {"to": "someone@example.com", "subject": "hi", "body": "hello"})
        self.assertIn("error", result)

    def test_a_tool_the_agent_lacks_is_refused(self):
        self.agent("t-lacks", "openai/gpt-4o-mini", tools=["datetime"])
        self.fake.control(tool_call={"name": "file_reader",
                                     "arguments": {"path": "notes/hello.txt"}})
        self.answer("t-lacks", "read it")
        reqs = self.reqs()
        self.assertEqual(len(reqs), 2)
        tool_msgs = [t for r, t in entry_messages(reqs[1]) if r == "tool"]
        self.assertIn("error", json.loads(tool_msgs[0]))
        self.assertNotIn("marmalade", entry_text(reqs[1]))


# --- orchestration and the prompt ----------------------------------------------------------

class OrchestrationTest(PipelineCase):

    def test_react_runs_two_sequential_tool_calls(self):
        self.agent("react", "openai/gpt-4o-mini", tools=["http_request", "calculator"],
                   tool_configs={"http_request": {"allowed_hosts": ["127.0.0.1"],
                                                  "allow_private": True}},
                   step5={"orchestration": "react"})
        # the first tool call fetches /gate; while it is in flight the fake
        # is told to ask for the second one, so the order is certain
        self.tiny.gate_hook = lambda: self.fake.control(
            tool_call={"name": "calculator", "arguments": {"expression": "6*7"}})
        self.fake.control(tool_call={"name": "http_request",
                                     "arguments": {"url": self.tiny.url("/gate")}})
        body = self.answer("react", "fetch then compute")
        reqs = self.reqs()
        self.assertEqual(len(reqs), 3, [entry_messages(r) for r in reqs])
        self.assertEqual(len(self.tiny.hits("/gate")), 1)
        self.assertEqual(sorted(offered_tools(reqs[1])), ["calculator", "http_request"],
                         "react offers tools again after a tool round")
        tool_msgs = [json.loads(t) for r, t in entry_messages(reqs[2]) if r == "tool"]
        self.assertEqual(len(tool_msgs), 2)
        self.assertEqual(tool_msgs[0]["result"]["body"], "gate passed")
        self.assertEqual(tool_msgs[1]["result"], 42)
        self.assertTrue(body["answer"].startswith("fake answer to: fetch then compute; tool said:"))

    def test_react_stops_after_a_bounded_number_of_tool_rounds(self):
        self.agent("react-loop", "openai/gpt-4o-mini", tools=["http_request"],
                   tool_configs={"http_request": {"allowed_hosts": ["127.0.0.1"],
                                                  "allow_private": True}},
                   step5={"orchestration": "react"})
        call = {"name": "http_request", "arguments": {"url": self.tiny.url("/gate")}}
        # a model that asks for the tool again after every result
        self.tiny.gate_hook = lambda: self.fake.control(tool_call=call)
        self.fake.control(tool_call=call)
        self.answer("react-loop", "loop forever")
        reqs = self.reqs()
        self.assertLessEqual(len(reqs), 11, "react is bounded (10 tool rounds)")
        self.assertEqual(len(self.tiny.hits("/gate")), len(reqs) - 1)
        self.assertEqual(offered_tools(reqs[-1]), [], "the last call offers no tools")

    def test_single_pass_offers_tools_for_one_round_only(self):
        self.agent("single", "openai/gpt-4o-mini", tools=["calculator"],
                   step5={"orchestration": "single_pass"})
        self.fake.control(tool_call={"name": "calculator", "arguments": {"expression": "1+1"}})
        self.answer("single", "add")
        reqs = self.reqs()
        self.assertEqual(len(reqs), 2)
        self.assertEqual(offered_tools(reqs[0]), ["calculator"])
        self.assertEqual(offered_tools(reqs[1]), [], "single_pass: no second tool round")

    def test_plan_and_execute_asks_for_a_plan_first(self):
        self.agent("planner", "openai/gpt-4o-mini", tools=["calculator"],
                   step5={"orchestration": "plan_and_execute"})
        self.fake.control(reply="1. think 2. answer")
        query = "plan my week"
        body = self.answer("planner", query)
        reqs = self.reqs()
        self.assertEqual(len(reqs), 2, [entry_messages(r) for r in reqs])
        plan_req, exec_req = reqs
        systems = [t for r, t in entry_messages(plan_req) if r == "system"]
        self.assertTrue(any("plan" in s.lower() for s in systems),
                        "the planning request asks for a plan: %r" % systems)
        self.assertEqual(offered_tools(plan_req), [], "no tools while planning")
        self.assertIn(("user", query), entry_messages(plan_req))
        self.assertIn("1. think 2. answer", entry_text(exec_req), "the plan is followed")
        self.assertIn("calculator", offered_tools(exec_req))
        self.assertEqual(body["tokens_used"], sum(prompt_words(r) for r in reqs)
                         + 2 * words("1. think 2. answer"))

    def test_system_prompt_has_tone_prompt_persona_tools_and_context(self):
        self.agent("prompted", "openai/gpt-4o-mini", system="You help with invoices.",
                   step2={"persona": "Billing Specialist", "tone": "professional"},
                   tools=["calculator"])
        context = {"customer_tier": "gold", "open_tickets": 3, "tags": ["vip", "eu"]}
        for mode in ("run", "test"):
            self.fake.clear()
            self.answer("prompted", "what do I owe?", mode=mode, context=context)
            msgs = entry_messages(self.one_request())
            system = "\n".join(t for r, t in msgs if r == "system")
            self.assertTrue(system.startswith("Respond in a professional, clear tone."), system)
            for part in ("You help with invoices.", "Billing Specialist", "calculator"):
                self.assertIn(part, system)
            self.assertTrue(find_json_object(system, context),
                            "the context object is in the system prompt: %r" % system)
            self.assertEqual(msgs[-1], ("user", "what do I owe?"))


# --- failures of the provider's answer -------------------------------------------------------

class MalformedAnswerTest(PipelineCase):

    def test_malformed_and_truncated_answers_are_502_and_no_worker_dies(self):
        workers = self.inst.worker_pids()
        self.assertEqual(len(workers), 2)
        n = 0
        for provider in ("openai", "anthropic", "cohere", "ollama", "groq"):
            for mode in ("malformed", "truncated"):
                with self.subTest(provider=provider, mode=mode):
                    n += 1
                    model = uniq("%s-%s" % (mode, provider))
                    name = "bad-%d" % n
                    self.agent(name, "%s/%s" % (provider, model))
                    self.fake.control(per_model={model: {"mode": mode}})
                    for run_mode in ("run", "test"):
                        resp = self.execute(name, "hello", mode=run_mode)
                        body = assert_error(self, resp, 502, "provider_error")
                        self.check_rate_headers(resp[1])
                        self.assertNotIn("Traceback", body["message"])
        # an answer over the daemon's size cap (8 MiB) fails cleanly; a big one is fine
        model = uniq("huge")
        self.agent("huge", "openai/" + model)
        self.fake.control(per_model={model: {"pad_bytes": 9 * 1024 * 1024}})
        assert_error(self, self.execute("huge", "hello"), 502, "provider_error")
        self.fake.control(per_model={model: {"pad_bytes": 512 * 1024}})
        self.assertEqual(self.answer("huge", "hello")["answer"], "fake answer to: hello")
        # tool-call answers whose arguments are not JSON are a tool error
        self.agent("bad-args", "openai/gpt-4o-mini", tools=["calculator"])
        self.fake.control(tool_call={"name": "calculator", "arguments": "{\"expression\": "})
        self.answer("bad-args", "compute")
        self.assertEqual(self.inst.worker_pids(), workers, "a worker died (and was restarted)")
        self.inst.health()


# --- what the route accepts --------------------------------------------------------------------

class RequestTest(PipelineCase):

    def test_bad_run_bodies_are_422_with_details(self):
        self.agent("strict", "echo/echo-1")
        cases = [
            ({}, "query"),
            ({"query": ""}, "query"),
            ({"query": "x" * 32769}, "query"),
            ({"query": 5}, "query"),
            ({"query": None}, "query"),
            ({"query": ["hi"]}, "query"),
            ({"query": "hi", "session_id": 7}, "session_id"),
            ({"query": "hi", "session_id": ""}, "session_id"),
            ({"query": "hi", "session_id": "has space"}, "session_id"),
            ({"query": "hi", "session_id": "slash/no"}, "session_id"),
            ({"query": "hi", "session_id": "s" * 129}, "session_id"),
            ({"query": "hi", "session_id": "caf\u00e9"}, "session_id"),
            ({"query": "hi", "context": "a string"}, "context"),
            ({"query": "hi", "context": [1, 2]}, "context"),
            ({"query": "hi", "context": 3}, "context"),
            ({"query": "hi", "stream": True}, "stream"),
            ({"query": "hi", "Query": "x"}, "Query"),
        ]
        for mode in ("run", "test"):
            for body, field in cases:
                with self.subTest(mode=mode, body=str(body)[:60]):
                    resp = self.call("POST", "/agents/strict/" + mode, body)
                    assert_error(self, resp, 422, "validation_error", fields=[field])
            with self.subTest(mode=mode, body="not an object"):
                assert_error(self, self.call("POST", "/agents/strict/" + mode, raw="[1]"), 422)
            with self.subTest(mode=mode, body="not JSON"):
                assert_error(self, self.call("POST", "/agents/strict/" + mode, raw="{\"query\":"),
                             400)
        # what cannot be parsed is a 400, never a 500
        for raw in (b'{"query":"\xff\xfe"}', b'{"query":"hi","context":' + b'{"a":' * 3000
                    + b'1' + b'}' * 3001):
            assert_error(self, self.call("POST", "/agents/strict/run", raw=raw), (400, 422))
        # every problem is reported at once
        body = assert_error(self, self.call("POST", "/agents/strict/run",
                                            {"query": "", "session_id": "bad id", "context": 1,
                                             "extra": True}), 422)
        self.assertEqual({d["field"] for d in body["details"]},
                         {"query", "session_id", "context", "extra"})
        self.assertEqual(self.usage()["total_requests"], 0, "a 422 counts nothing")

    def test_a_nul_in_the_query_is_refused_or_kept_whole(self):
        self.agent("nul", "openai/gpt-4o-mini")
        for mode in ("run", "test"):
            self.fake.clear()
            resp = self.call("POST", "/agents/nul/" + mode, {"query": "before\u0000after"})
            if resp[0] == 200:
                self.assertEqual(self.history(self.one_request()),
                                 [("user", "before\u0000after")],
                                 "the query the model saw was cut at the NUL")
            else:
                # the one string policy (test_strings.py): 400 naming the field
                got = assert_error(self, resp, 400, "bad_request")
                self.assertIn("'query'", got["message"])
                self.assertEqual(self.reqs(), [])

    def test_boundaries_of_query_and_session_id_are_accepted(self):
        self.agent("edges", "echo/echo-1")
        body = self.answer("edges", "q" * 32768)
        self.assertEqual(body["answer"], "echo: " + "q" * 32768)
        # bytes, not characters: 16384 two-byte characters fit, one more does not
        body = self.answer("edges", "\u00e9" * 16384)
        self.assertEqual(body["answer"], "echo: " + "\u00e9" * 16384)
        assert_error(self, self.execute("edges", "\u00e9" * 16385), 422, "validation_error",
                     fields=["query"])
        sid = "A-z.0_9:" + "s" * 120
        self.assertEqual(len(sid), 128)
        self.assertEqual(self.answer("edges", "hi", session_id=sid)["session_id"], sid)
        self.assertEqual(self.answer("edges", "hi", context={})["answer"], "echo: hi")

    def test_draft_and_paused_agents_are_400_agent_not_deployed(self):
        self.agent("idle", "echo/echo-1", deploy=False)
        for mode in ("run", "test"):
            resp = self.execute("idle", "hi", mode=mode)
            body = assert_error(self, resp, 400, "agent_not_deployed")
            self.assertEqual(body["message"], "Agent 'idle' is in draft state. Deploy it first.")
            self.check_rate_headers(resp[1])
        assert_json(self, self.call("POST", "/agents/idle/deploy"), 200)
        self.answer("idle", "hi")
        assert_json(self, self.call("POST", "/agents/idle/pause"), 200)
        for mode in ("run", "test"):
            body = assert_error(self, self.execute("idle", "hi", mode=mode), 400,
                                "agent_not_deployed")
            self.assertEqual(body["message"], "Agent 'idle' is in paused state. Deploy it first.")
        assert_json(self, self.call("POST", "/agents/idle/deploy"), 200)
        self.assertEqual(self.answer("idle", "back")["answer"], "echo: back")
        self.assertEqual(self.usage()["total_requests"], 2, "only the two answered runs count")

    def test_a_redeployed_agent_runs_its_new_config(self):
        self.agent("evolving", "openai/gpt-4o-mini", system="Old prompt.")
        # warm every worker thread's cache of the parsed agent
        run_concurrently([(lambda: self.answer("evolving", "warm up")) for _ in range(24)])
        self.assertTrue(all(entry_messages(r)[0] == ("system", "Old prompt.") for r in self.reqs()))
        assert_json(self, self.call("POST", "/agents/evolving/pause"), 200)
        assert_json(self, self.call("PUT", "/agents/evolving",
                                    {"step1": {"model": "anthropic/claude-3-haiku"},
                                     "step2": {"system_prompt": "New prompt."}}), 200)
        assert_json(self, self.call("POST", "/agents/evolving/deploy"), 200)
        self.fake.clear()
        results = run_concurrently([(lambda: self.answer("evolving", "after"))
                                    for _ in range(24)])
        self.assertEqual({b["model"] for b in results}, {"anthropic/claude-3-haiku"})
        reqs = self.reqs()
        self.assertEqual(len(reqs), 24)
        for r in reqs:
            self.assertEqual(r["path"], "/v1/messages")
            self.assertEqual(entry_messages(r)[0], ("system", "New prompt."))

    def test_unknown_agent_is_404(self):
        for mode in ("run", "test"):
            resp = self.execute("nobody-here", "hi", mode=mode)
            assert_error(self, resp, 404, "agent_not_found")
            self.check_rate_headers(resp[1])

    def test_another_orgs_agent_is_403_and_runs_nothing(self):
        self.agent("private", "openai/gpt-4o-mini")
        tok2, slug2 = self.inst.user(self.unique_email("intruder"))
        for mode in ("run", "test"):
            for name in ("private", "does-not-exist"):
                resp = self.execute(name, "hi", mode=mode, token=tok2)
                assert_error(self, resp, 403)
        self.assertEqual(self.reqs(), [])
        self.assertEqual(self.usage()["total_requests"], 0)
        self.assertEqual(self.usage(token=tok2, slug=slug2)["total_requests"], 0)


if __name__ == "__main__":
    main()
