"""test_stream - WS /api/v1/orgs/{slug}/agents/{name}/stream (SPEC section 6,
issue 10) through the real lighttpd and the real Apache, with a standard
library WebSocket client (wsclient.py), against the fake provider.

What a client sees: token events whose concatenation is the answer, then a
done event with its fields; several queries on one connection; a second
query while one runs refused with an error event; every refusal before the
upgrade as the SPEC envelope; the per-org limit counted across the stream
process's life (a SIGKILLed one gives its slots back); pause and delete
ending a stream with agent_not_deployed and close 1008 within a second;
the daily limit as an error event on a connection that stays usable; bad
frames closed with the right code; the idle timeout; a client that goes
away mid-stream; a SIGHUP roll that lets a running query finish.
"""

import os
import re
import secrets
import signal
import socket
import time

from harness import BUILDDIR, HarnessError, InstanceTestCase, main, poll
from fakeprov import FakeProvider, provider_config
import wsclient
from wsclient import BINARY, CLOSE, PING, TEXT, Closed, Refused

SESSION_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
ERROR_CODE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
MODELS = (("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku"),
          ("cohere", "command-r"), ("ollama", "llama3.1"))


class StreamCase(InstanceTestCase):
    """An instance against one fake provider; each test in an org of its
    own with one deployed agent "bot" on the OpenAI-compatible fake."""

    front = "lighttpd"
    extra = None

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeProvider(log_dir=os.path.join(BUILDDIR, "tests", "tmp"))
        cls.fake.start()
        cls.addClassCleanup(cls.fake.stop)
        cls.config = {"providers": provider_config(cls.fake),
                      "limits": {"max_agents": 100, "requests_per_day": 100000,
                                 "max_streams": 5}}
        if cls.extra:
            for k, v in cls.extra.items():
                cls.config[k] = dict(cls.config.get(k, {}), **v)
        super().setUpClass()

    def setUp(self):
        self.fake.reset()
        self.token, self.slug = self.inst.user(self.unique_email("ws"))
        self.agent("bot", "openai/gpt-4o-mini")

    # -- helpers -----------------------------------------------------------------
    def api(self, method, path, body=None, token=None, slug=None):
        return self.inst.request(method, "/api/v1/orgs/%s%s" % (slug or self.slug, path), body,
                                 token=token or self.token)

    def agent(self, name, model, deploy=True, token=None, slug=None):
        wc = {"name": name, "step1": {"model": model},
              "step2": {"system_prompt": "You are a stream test agent."}}
        status, _, body = self.api("POST", "/agents", wc, token=token, slug=slug)
        self.assertEqual(status, 201, body)
        if deploy:
            status, _, body = self.api("POST", "/agents/%s/deploy" % name, token=token, slug=slug)
            self.assertEqual(status, 200, body)

    def connect(self, name="bot", slug=None, **kw):
        if "token" not in kw and "api_key" not in kw and "query" not in kw:
            kw["token"] = self.token
        ws = self.inst.ws_connect(slug or self.slug, name, **kw)
        self.addCleanup(ws.abort)
        return ws

    def refused(self, status, code, name="bot", slug=None, **kw):
        """Connect expecting a plain answer; assert the SPEC envelope."""
        with self.assertRaises(Refused) as cm:
            self.inst.ws_connect(slug or self.slug, name, **kw)
        r = cm.exception
        self.assertEqual(r.status, status, r.body)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"),
                        r.headers)
        body = r.json()
        self.assertEqual(set(body), {"error", "message", "status"}, body)
        self.assertEqual(body["status"], status)
        self.assertEqual(body["error"], code, body)
        return body

    def check_done(self, tokens, done, answer=None):
        self.assertEqual(done["type"], "done", done)
        for k in ("answer", "tokens_used", "session_id", "model", "trace_id", "version"):
            self.assertIn(k, done)
        self.assertGreaterEqual(done["version"], 1)   # the version that answered
        self.assertRegex(done["session_id"], SESSION_RE)
        self.assertGreater(done["tokens_used"], 0)
        self.assertTrue(tokens, "no token event before done")
        self.assertEqual("".join(t["content"] for t in tokens), done["answer"])
        if answer is not None:
            self.assertEqual(done["answer"], answer)

    def check_error(self, ev, code):
        self.assertEqual(ev["type"], "error", ev)
        self.assertEqual(ev["error"], code, ev)
        self.assertRegex(ev["error"], ERROR_CODE_RE)
        self.assertTrue(ev["message"])


class StreamBasics(StreamCase):
    """What runs through both front servers."""

    def test_tokens_then_done_in_every_wire_format(self):
        for provider, model in MODELS:
            with self.subTest(provider=provider):
                name = "wf-" + provider
                self.agent(name, "%s/%s" % (provider, model))
                reply = "streamed words from %s one two three" % provider
                self.fake.control(reply=reply)
                ws = self.connect(name)
                tokens, done = ws.query("hello stream")
                self.check_done(tokens, done, reply)
                self.assertEqual(done["model"], "%s/%s" % (provider, model))
                # one token event per delta the fake sent, in its order
                words = reply.split(" ")
                self.assertEqual([t["content"] for t in tokens],
                                 [w + " " for w in words[:-1]] + [words[-1]])
                ws.close()

    def test_a_card_number_split_across_deltas_is_redacted_and_never_sent(self):
        """The fake sends "4111 1111 1111 1111" as four deltas; with
        pii_filter on output no digit of it may reach the client."""
        wc = {"name": "pii", "step1": {"model": "openai/gpt-4o-mini"},
              "step2": {"system_prompt": "You are a stream test agent."},
              "step5": {"output_guardrails": ["pii_filter"]}}
        self.assertEqual(self.api("POST", "/agents", wc)[0], 201)
        self.assertEqual(self.api("POST", "/agents/pii/deploy")[0], 200)
        self.fake.control(reply="your card 4111 1111 1111 1111 is on file, call 555 123 4567")
        tokens, done = self.connect("pii").query("my card?")
        self.check_done(tokens, done)
        self.assertGreater(len(tokens), 2, tokens)
        self.assertIn("[REDACTED_CC]", done["answer"])
        for t in tokens:
            self.assertNotRegex(t["content"], r"\d", tokens)

    def test_several_queries_on_one_connection_keep_the_session(self):
        ws = self.connect()
        tokens, first = ws.query("first question")
        self.check_done(tokens, first, "fake answer to: first question")
        tokens, second = ws.query("second question", session_id=first["session_id"])
        self.check_done(tokens, second, "fake answer to: second question")
        self.assertEqual(second["session_id"], first["session_id"])
        self.assertNotEqual(second["trace_id"], first["trace_id"])
        tokens, third = ws.query("third", session_id="my-own.session:1")
        self.assertEqual(third["session_id"], "my-own.session:1")

    def test_a_second_query_while_one_runs_gets_an_error_event(self):
        self.fake.control(mode="slow", delay_ms=1500)
        ws = self.connect()
        ws.send_json({"query": "slow one"})
        ws.send_json({"query": "impatient"})
        ev = ws.recv_json(timeout=30)
        self.check_error(ev, "conflict")
        tokens, done = [], None
        while done is None:
            ev = ws.recv_json(timeout=30)
            if ev["type"] == "token":
                tokens.append(ev)
            else:
                done = ev
        self.check_done(tokens, done, "fake answer to: slow one")
        self.fake.control()
        tokens, done = ws.query("now it is free")
        self.check_done(tokens, done, "fake answer to: now it is free")

    def test_auth_by_header_token_query_and_api_keys(self):
        status, _, key = self.api("POST", "/keys", {"name": "ws"})
        self.assertEqual(status, 201, key)
        self.inst.secrets.add(key["secret"])
        # A key in the URL lands in the front server's access log (the
        # README says so): this one is revoked after the test, and not
        # held to the harness's "never in clear" rule.
        status, _, in_url = self.api("POST", "/keys", {"name": "ws-url"})
        self.assertEqual(status, 201, in_url)
        for how, kw in (("bearer", {"token": self.token}),
                        ("?token=", {"query": "token=" + self.token}),
                        ("X-API-Key", {"api_key": key["secret"]}),
                        ("?api_key=", {"query": "api_key=" + in_url["secret"]})):
            with self.subTest(how=how):
                ws = self.connect(**kw)
                tokens, done = ws.query("who am i")
                self.check_done(tokens, done)
                ws.close()
        self.assertEqual(self.api("DELETE", "/keys/%s" % in_url["id"])[0], 204)
        self.refused(401, "unauthorized", query="api_key=" + in_url["secret"])
        self.inst.secrets.discard(in_url["secret"])

    def test_refusals_before_the_upgrade_are_the_spec_envelope(self):
        other_token, other_slug = self.inst.user(self.unique_email("other"))
        self.agent("theirs", "openai/gpt-4o-mini", token=other_token, slug=other_slug)
        self.agent("draft", "openai/gpt-4o-mini", deploy=False)
        self.refused(401, "unauthorized")
        self.refused(401, "unauthorized", token="not.a.jwt")
        self.refused(401, "unauthorized", query="token=garbage")
        self.refused(401, "unauthorized", api_key="ask-" + "0" * 40)
        self.refused(403, "forbidden", slug=other_slug, name="theirs", token=self.token)
        self.refused(403, "forbidden", slug=other_slug, name="theirs",
                     query="token=" + self.token)
        self.refused(404, "agent_not_found", name="nobody", token=self.token)
        body = self.refused(400, "agent_not_deployed", name="draft", token=self.token)
        self.assertIn("draft", body["message"])
        # a plain GET without the upgrade reaches the stream process too
        self.refused(400, "bad_request", token=self.token, upgrade=False)

    def test_the_sixth_stream_of_an_org_is_refused_until_one_closes(self):
        conns = [self.connect() for _ in range(5)]
        body = self.refused(429, "stream_limit_reached", token=self.token)
        self.assertIn("5", body["message"])
        # another org is not held to this one's count
        other_token, other_slug = self.inst.user(self.unique_email("free"))
        self.agent("bot", "openai/gpt-4o-mini", token=other_token, slug=other_slug)
        self.connect(slug=other_slug, token=other_token).close()
        conns[0].close()

        def accepted():
            try:
                return self.connect()
            except Refused as r:
                self.assertEqual(r.status, 429)
                return None
        ws = poll(accepted, 5, what="a stream slot given back")
        tokens, done = ws.query("in the freed slot")
        self.check_done(tokens, done)

    def test_pause_ends_an_open_stream_within_a_second(self):
        ws = self.connect()
        self.check_done(*ws.query("before the pause"))
        t0 = time.monotonic()
        status, _, body = self.api("POST", "/agents/bot/pause")
        self.assertEqual(status, 200, body)
        closed = ws.wait_close(timeout=5)
        self.assertLess(time.monotonic() - t0, 1.0 + 0.3)
        self.assertEqual(closed.code, 1008)
        self.assertTrue(closed.events, "no error event before the close")
        self.check_error(closed.events[-1], "agent_not_deployed")
        self.refused(400, "agent_not_deployed", token=self.token)

    def test_delete_ends_a_running_query(self):
        self.fake.control(mode="slow", delay_ms=3000)
        ws = self.connect()
        ws.send_json({"query": "will be cut"})
        time.sleep(0.3)
        self.assertEqual(self.api("POST", "/agents/bot/pause")[0], 200)
        t0 = time.monotonic()
        self.assertEqual(self.api("DELETE", "/agents/bot")[0], 204)
        closed = ws.wait_close(timeout=5)
        self.assertLess(time.monotonic() - t0, 1.3)
        self.assertEqual(closed.code, 1008)
        self.check_error(closed.events[-1], "agent_not_deployed")
        self.refused(404, "agent_not_found", token=self.token)


class StreamBasicsApache(StreamBasics):
    front = "apache"


class StreamFrames(StreamCase):
    """What a bad client gets (one front server: the frames are the stream
    process's, passed through untouched)."""

    def test_bad_json_and_bad_bodies_are_error_events_and_the_connection_stays(self):
        ws = self.connect()
        ws.send_text("{not json")
        self.check_error(ws.recv_json(timeout=10), "invalid_json")
        ws.send_text("[1, 2]")
        self.check_error(ws.recv_json(timeout=10), "validation_error")
        ws.send_json({"session_id": "s1"})
        ev = ws.recv_json(timeout=10)
        self.check_error(ev, "validation_error")
        self.assertIn("query", [d["field"] for d in ev["details"]])
        ws.send_json({"query": "x", "extra": 1})
        self.check_error(ws.recv_json(timeout=10), "validation_error")
        ws.send_json({"query": "x", "session_id": "bad session!"})
        self.check_error(ws.recv_json(timeout=10), "validation_error")
        self.check_done(*ws.query("still usable", context={"tier": "gold"}))

    def test_an_unmasked_client_frame_is_closed_with_1002(self):
        ws = self.connect()
        ws.send_frame(TEXT, b'{"query":"x"}', mask=False)
        self.assertEqual(ws.wait_close().code, 1002)

    def test_reserved_bits_are_closed_with_1002(self):
        ws = self.connect()
        ws.send_frame(TEXT, b'{"query":"x"}', rsv=4)
        self.assertEqual(ws.wait_close().code, 1002)

    def test_a_binary_message_is_closed_with_1003(self):
        ws = self.connect()
        ws.send_frame(BINARY, b"\x00\x01\x02")
        self.assertEqual(ws.wait_close().code, 1003)

    def test_an_oversized_message_is_closed_with_1009(self):
        ws = self.connect()
        ws.send_text('{"query":"' + "x" * (70 * 1024) + '"}')
        self.assertEqual(ws.wait_close().code, 1009)

    def test_an_oversized_fragmented_message_is_closed_with_1009(self):
        ws = self.connect()
        ws.send_frame(TEXT, b'{"query":"' + b"y" * 40000, fin=False)
        ws.send_frame(0, b"y" * 40000, fin=False)
        self.assertEqual(ws.wait_close().code, 1009)

    def test_fragments_and_pings_are_understood(self):
        ws = self.connect()
        ws.send_frame(PING, b"are you there")
        op, payload = ws.recv_frame()
        self.assertEqual((op, payload), (wsclient.PONG, b"are you there"))
        ws.send_frame(TEXT, b'{"query":"in ', fin=False)
        ws.send_frame(PING, b"mid-message")
        ws.send_frame(0, b'three parts"', fin=False)
        ws.send_frame(0, b"}", fin=True)
        op, payload = ws.recv_frame()
        self.assertEqual((op, payload), (wsclient.PONG, b"mid-message"))
        tokens, done = [], None
        while done is None:
            ev = ws.recv_json(timeout=30)
            tokens.append(ev) if ev["type"] == "token" else None
            done = ev if ev["type"] != "token" else None
        self.check_done(tokens, done, "fake answer to: in three parts")

    def test_invalid_utf8_is_closed_with_1007(self):
        ws = self.connect()
        ws.send_frame(TEXT, b'{"query":"\xc0\xaf"}')
        self.assertEqual(ws.wait_close().code, 1007)

    def test_a_client_close_is_answered(self):
        for sent, answered in ((b"\x03\xe8bye", 1000), (b"\x0f\xa0", 4000), (b"", 1000),
                               (b"\x03\xed", 1002), (b"\x00\x01", 1002)):
            with self.subTest(sent=sent):
                ws = self.connect()
                ws.send_frame(CLOSE, sent)
                self.assertEqual(ws.wait_close().code, answered)

    def test_a_client_gone_mid_stream_frees_its_slot_and_cancels_its_run(self):
        self.fake.control(reply=" ".join("word%d" % i for i in range(40)), chunk_delay_ms=100)
        ws = self.connect()
        ws.send_json({"query": "a long answer"})
        time.sleep(0.5)
        ws.abort()
        # the slot comes back at once: five new connections fit
        conns = poll(lambda: self._five(), 3, what="the vanished client's slot")
        for c in conns:
            c.close()
        # the stream process survived and serves the next query
        self.fake.control()
        self.check_done(*self.connect().query("after the vanished one"))

    def test_a_vanished_client_cancels_the_provider_call_within_a_second(self):
        """The fake sees its connection dropped: mid-answer (between two
        chunks) and while the provider is still silent (it hangs: only
        the liveness poll can notice)."""
        for mode, control, mark in (
                ("streaming", {"reply": " ".join("w%d" % i for i in range(60)),
                               "chunk_delay_ms": 100}, "stream_end"),
                ("silent", {"mode": "hang"}, "hang_end")):
            with self.subTest(provider=mode):
                self.fake.control(**control)
                self.fake.clear()
                ws = self.connect()
                ws.send_json({"query": "go on"})
                poll(lambda: self.fake.provider_requests(), 10, what="the provider call")
                time.sleep(0.5)
                ws.abort()
                left = time.time()
                entry = poll(lambda: (lambda r: r[-1] if r and r[-1].get(mark) else None)(
                    self.fake.provider_requests()), 10, what="the fake to see the drop")
                self.assertEqual(entry[mark], "client_gone")
                if mark == "hang_end":
                    self.assertLess(entry["hang_end_at"] - left, 1.5)
        self.fake.control()

    def _five(self):
        conns = []
        try:
            for _ in range(5):
                conns.append(self.connect())
        except Refused:
            for c in conns:
                c.abort()
            return None
        return conns


class StreamLimits(StreamCase):
    """The daily limit and the idle timeout, on an instance configured for
    them."""

    extra = {"limits": {"requests_per_day": 2},
             "stream": {"idle_timeout_ms": 1500, "ping_interval_ms": 300}}

    def test_the_daily_limit_is_an_error_event_and_the_connection_stays(self):
        ws = self.connect()
        self.check_done(*ws.query("one"))
        self.check_done(*ws.query("two"))
        tokens, ev = ws.query("three")
        self.assertEqual(tokens, [])
        self.check_error(ev, "daily_limit_reached")
        tokens, ev = ws.query("four")
        self.check_error(ev, "daily_limit_reached")
        ws.send_frame(PING, b"alive")
        self.assertEqual(ws.recv_frame()[0], wsclient.PONG)

    def test_an_idle_connection_is_pinged_then_closed(self):
        ws = self.connect()
        t0 = time.monotonic()
        closed = ws.wait_close(timeout=10)
        self.assertEqual(closed.code, 1001)
        self.assertIn("idle", closed.reason)
        self.assertGreaterEqual(time.monotonic() - t0, 1.2)
        self.assertGreaterEqual(ws.pings, 2)

    def test_a_running_query_is_not_idle(self):
        self.fake.control(mode="slow", delay_ms=2500)
        ws = self.connect()
        self.check_done(*ws.query("slower than the idle timeout"))


class StreamProcess(StreamCase):
    """The stream process under the supervisor: SIGKILL, SIGHUP."""

    def test_a_killed_stream_process_is_restarted_and_its_slots_come_back(self):
        conns = [self.connect() for _ in range(5)]
        self.refused(429, "stream_limit_reached", token=self.token)
        old = self.inst.wait_stream()
        os.kill(old, signal.SIGKILL)
        for c in conns:
            self.assertIsNone(c.wait_close(timeout=10).code)   # TCP gone, no close frame
        self.inst.wait_stream(exclude=(old,))

        def five():
            try:
                return [self.connect() for _ in range(5)]
            except (Refused, OSError, Closed):
                return None
        conns = poll(five, 15, what="five streams after the restart")
        self.check_done(*conns[0].query("after the restart"))
        self.refused(429, "stream_limit_reached", token=self.token)

    def test_sigterm_closes_streams_with_1001_and_stops(self):
        inst = self.new_instance(self.config)
        token, slug = inst.user(self.unique_email("term"))
        wc = {"name": "bot", "step1": {"model": "echo/echo-1"}, "step2": {"system_prompt": "x"}}
        self.assertEqual(inst.request("POST", "/api/v1/orgs/%s/agents" % slug, wc,
                                      token=token)[0], 201)
        self.assertEqual(inst.request("POST", "/api/v1/orgs/%s/agents/bot/deploy" % slug,
                                      token=token)[0], 200)
        ws = inst.ws_connect(slug, "bot", token=token)
        self.addCleanup(ws.abort)
        self.check_done(*ws.query("before the stop"))
        stream = inst.wait_stream()
        os.kill(inst.daemon_pid, signal.SIGTERM)
        self.assertEqual(ws.wait_close(timeout=10).code, 1001)
        inst.wait_daemon_exit()
        self.assertFalse(os.path.exists(inst.stream_socket))
        poll(lambda: not os.path.exists("/proc/%d" % stream), 10, what="the stream process gone")

    def test_sighup_rolls_the_process_and_a_running_query_finishes(self):
        old = self.inst.wait_stream()
        idle = self.connect()
        self.fake.control(mode="slow", delay_ms=1500)
        busy = self.connect()
        busy.send_json({"query": "across the roll"})
        time.sleep(0.3)
        os.kill(self.inst.daemon_pid, signal.SIGHUP)
        self.assertEqual(idle.wait_close(timeout=10).code, 1001)
        closed = busy.wait_close(timeout=20)
        self.assertEqual(closed.code, 1001)
        self.assertEqual(closed.events[-1]["type"], "done", closed.events)
        self.assertEqual(closed.events[-1]["answer"], "fake answer to: across the roll")
        new = self.inst.wait_stream(exclude=(old,))
        self.assertNotEqual(new, old)
        self.fake.control()
        self.check_done(*self.connect().query("on the new process"))


if __name__ == "__main__":
    main()
