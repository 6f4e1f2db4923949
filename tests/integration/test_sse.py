"""test_sse - POST run and test answered as Server-Sent Events (Accept:
text/event-stream), through the real lighttpd and the real Apache with the
shipped snippets (etc/lighttpd/, etc/apache2/) unchanged.

Two halves:
  - the front servers pass an event stream on as it comes: a FastCGI peer
    of our own (SsePeer) stands where the daemon would be, writes the head
    and a first event, then waits for the client to say it has that event
    before it writes the rest. A front server that buffers the answer
    until the request ends never lets the client see the first event in
    time: no clock is involved, the peer's gate either is opened by the
    client or times out;
  - the daemon: token events whose contents, joined, are the done event's
    answer (whether the runtime hands over the answer in one piece or
    token by token), done carrying the JSON answer's fields, the
    X-RateLimit headers on the stream, test mode counting nothing, the
    Accept header parsed properly, every error before the first event an
    ordinary JSON envelope with its status, an error after it an error
    event, and a client that goes away mid-stream costing the daemon
    nothing (same workers, next requests answered).
"""

import http.client
import json
import os
import socket
import struct
import threading
import time

from harness import (BUILDDIR, FcgiConnection, Instance, InstanceTestCase, assert_error,
                     assert_json, main, outcome_failed, poll)
from fakeprov import FakeProvider, provider_config

ANSWER_KEYS = {"answer", "session_id", "tokens_used", "model", "latency_ms", "trace_id", "version"}
SSE = "text/event-stream"
GATE_TIMEOUT = 10.0


# --- reading an event stream --------------------------------------------------

def read_events(resp, on_event=None):
    """Read resp (an http.client response of text/event-stream) to its end:
    [(event, data parsed as JSON, monotonic arrival time)]. Every line must
    be "event: ...", "data: ..." or the blank line ending an event;
    on_event(event, data) runs as each event arrives."""
    events, name, data = [], None, None
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.decode("utf-8")
        if line in ("\n", "\r\n"):
            if name is None or data is None:
                raise AssertionError("event without event: or data: line")
            events.append((name, json.loads(data), time.monotonic()))
            if on_event is not None:
                on_event(name, events[-1][1])
            name, data = None, None
        elif line.startswith("event: "):
            name = line[len("event: "):].rstrip("\n")
        elif line.startswith("data: "):
            if data is not None:
                raise AssertionError("two data lines in one event: a raw newline in the data")
            data = line[len("data: "):].rstrip("\n")
        else:
            raise AssertionError("unexpected line in the stream: %r" % line)
    if name is not None or data is not None:
        raise AssertionError("the stream ended inside an event")
    return events


def open_request(inst, method, path, body=None, token=None, accept=SSE, timeout=60):
    """Send one request; return (connection, response) with the body unread."""
    hdrs = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    if accept is not None:
        hdrs["Accept"] = accept
    conn = http.client.HTTPConnection("127.0.0.1", inst.port, timeout=timeout)
    conn.request(method, path, body=data, headers=hdrs)
    return conn, conn.getresponse()


def sse_call(inst, path, body, token, accept=SSE, on_event=None):
    """(status, headers, events or the parsed JSON body, seconds taken)."""
    t0 = time.monotonic()
    conn, resp = open_request(inst, "POST", path, body, token, accept)
    try:
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if headers.get("content-type", "").startswith(SSE):
            got = read_events(resp, on_event)
            got = [(n, d, t - t0) for n, d, t in got]
        else:
            payload = resp.read()
            got = json.loads(payload) if payload else None
        return resp.status, headers, got, time.monotonic() - t0
    finally:
        conn.close()


# --- a FastCGI peer that streams behind a gate ----------------------------------

def fcgi_record(rtype, content, request_id=1):
    pad = -len(content) % 8
    return (struct.pack("!BBHHBx", 1, rtype, request_id, len(content), pad)
            + content + b"\0" * pad)


def stdout_records(sock):
    """The non-empty FCGI_STDOUT records of one request, up to END_REQUEST."""
    buf, out = b"", []
    while True:
        while len(buf) < 8 or len(buf) < 8 + struct.unpack("!H", buf[4:6])[0] + buf[6]:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError("connection closed before END_REQUEST")
            buf += chunk
        _, rtype, _, clen, plen = struct.unpack("!BBHHBx", buf[:8])
        content, buf = buf[8:8 + clen], buf[8 + clen + plen:]
        if rtype == 6 and content:
            out.append(content)
        elif rtype == 3:
            return out


class SsePeer:
    """A FastCGI application on a unix socket, in a thread: reads a request,
    writes an SSE head and a first event, waits (at most GATE_TIMEOUT) for
    gate, then writes a last event and ends the request. opened_in_time
    says whether the gate opened before the timeout."""

    HEAD = (b"Status: 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            b"Cache-Control: no-cache\r\n\r\n")

    def __init__(self, path):
        self.gate = threading.Event()
        self.opened_in_time = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.done = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.done:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(30)
                try:
                    self.handle(conn)
                except (OSError, struct.error):
                    pass

    def handle(self, conn):
        buf, ended = b"", False
        while not ended:
            while len(buf) < 8 or len(buf) < 8 + struct.unpack("!H", buf[4:6])[0] + buf[6]:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            _, rtype, _, clen, plen = struct.unpack("!BBHHBx", buf[:8])
            content, buf = buf[8:8 + clen], buf[8 + clen + plen:]
            ended = rtype == 5 and not content          # the end of FCGI_STDIN
        first = b'event: token\ndata: {"type":"token","content":"first"}\n\n'
        conn.sendall(fcgi_record(6, self.HEAD + first))
        self.opened_in_time = self.gate.wait(GATE_TIMEOUT)
        last = b'event: done\ndata: {"type":"done","answer":"first"}\n\n'
        conn.sendall(fcgi_record(6, last) + fcgi_record(6, b"")
                     + fcgi_record(3, struct.pack("!IB3x", 0, 0)))

    def close(self):
        self.done = True
        self.thread.join(5)
        self.sock.close()


class FrontStreamsMixin:
    """The shipped front-server configuration passes each event on as it
    comes (lighttpd: server.stream-response-body; Apache: flushpackets)."""

    shared_instance = False

    def test_the_first_event_reaches_the_client_before_the_answer_ends(self):
        inst = Instance(name="sse-front", front=self.front)
        self.addCleanup(lambda: inst.stop(failed=outcome_failed(self)))
        peer = SsePeer(inst.socket)
        self.addCleanup(peer.close)
        if self.front == "apache":
            inst.start_apache()
        else:
            inst.start_lighttpd()

        def on_event(name, data):
            if name == "token":
                peer.gate.set()             # the client has the first event
        status, headers, events, _ = sse_call(inst, "/api/v1/anything", {"query": "x"}, None,
                                              on_event=on_event)
        self.assertEqual(status, 200)
        self.assertEqual([e[0] for e in events], ["token", "done"], events)
        self.assertTrue(peer.opened_in_time,
                        "%s held the first event back until the answer ended" % self.front)


class LighttpdFrontTest(FrontStreamsMixin, InstanceTestCase):
    front = "lighttpd"


class ApacheFrontTest(FrontStreamsMixin, InstanceTestCase):
    front = "apache"


# --- the daemon -------------------------------------------------------------------

class SseMixin:
    """Run and test as events, through self.front. Each test has an org of
    its own (the daily limit is per org); the fake is reset before each."""

    LIMIT = 6

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeProvider(log_dir=os.path.join(BUILDDIR, "tests", "tmp"))
        cls.fake.start()
        cls.addClassCleanup(cls.fake.stop)
        cls.config = {"providers": provider_config(cls.fake, timeout_ms=20000),
                      "limits": {"max_agents": 100, "requests_per_day": cls.LIMIT}}
        super().setUpClass()

    def setUp(self):
        self.fake.reset()
        self.token, self.slug = self.inst.user(self.unique_email("sse"))

    def path(self, tail):
        return "/api/v1/orgs/%s%s" % (self.slug, tail)

    def agent(self, name, model="echo/echo-1", deploy=True):
        wc = {"name": name, "step1": {"model": model},
              "step2": {"system_prompt": "You are a test agent."}}
        assert_json(self, self.inst.request("POST", self.path("/agents"), wc,
                                            token=self.token), 201)
        if deploy:
            assert_json(self, self.inst.request("POST", self.path("/agents/%s/deploy" % name),
                                                token=self.token), 200)

    def stream(self, name, body, mode="run", accept=SSE, token=None, on_event=None):
        return sse_call(self.inst, self.path("/agents/%s/%s" % (name, mode)), body,
                        self.token if token is None else token, accept, on_event)

    def check_stream(self, resp):
        """A 200 event stream: token events, then one done whose answer is
        the tokens joined. Returns (done's data, token events)."""
        status, headers, events, _ = resp
        self.assertEqual(status, 200, events)
        self.assertEqual(headers.get("content-type"), "text/event-stream; charset=utf-8")
        self.assertEqual(headers.get("cache-control"), "no-cache")
        self.assertIsInstance(events, list)
        self.assertGreaterEqual(len(events), 2, events)
        names = [e[0] for e in events]
        self.assertEqual(names, ["token"] * (len(events) - 1) + ["done"], names)
        tokens = events[:-1]
        for name, data, _ in tokens:
            self.assertEqual(set(data), {"type", "content"}, data)
            self.assertEqual(data["type"], "token")
            self.assertIsInstance(data["content"], str)
        done = events[-1][1]
        self.assertEqual(done["type"], "done")
        keys = set(done) - {"type"}
        self.assertTrue(ANSWER_KEYS <= keys <= ANSWER_KEYS | {"blocked"}, done)
        self.assertEqual("".join(d["content"] for _, d, _ in tokens), done["answer"])
        return done, tokens

    def rate(self, headers):
        return tuple(int(headers[h]) for h in ("x-ratelimit-limit", "x-ratelimit-remaining",
                                               "x-ratelimit-reset"))

    def usage_total(self):
        u = assert_json(self, self.inst.request("GET", self.path("/usage?days=1"),
                                                token=self.token), 200)
        return u["total_requests"]

    # -- the answer ---------------------------------------------------------------
    def test_run_streams_tokens_then_done_with_the_json_answer_fields(self):
        self.agent("bot", model="openai/gpt-4o-mini")
        reply = "one two three four five six"
        self.fake.control(reply=reply, chunk_delay_ms=150)
        resp = self.stream("bot", {"query": "count", "session_id": "sse-1"})
        done, tokens = self.check_stream(resp)
        self.assertEqual(done["answer"], reply)
        self.assertEqual(done["session_id"], "sse-1")
        self.assertEqual(done["model"], "openai/gpt-4o-mini")
        self.assertGreater(done["tokens_used"], 0)
        limit, remaining, reset = self.rate(resp[1])
        self.assertEqual((limit, remaining), (self.LIMIT, self.LIMIT - 1))
        self.assertGreater(reset, time.time())
        # the JSON answer of the same run has exactly done's fields
        plain = assert_json(self, self.inst.request(
            "POST", self.path("/agents/bot/run"), {"query": "count"}, token=self.token), 200)
        self.assertEqual(set(plain), set(done) - {"type"})
        self.assertEqual(plain["answer"], reply)
        streamed = [r for r in self.fake.provider_requests() if (r.get("body") or {}).get("stream")]
        self.assertTrue(streamed, "the provider was not asked to stream")
        # the first token is on the client's side well before the last chunk
        # has left the fake
        self.assertGreater(len(tokens), 1, tokens)
        self.assertLess(tokens[0][2], resp[2][-1][2] - 0.3,
                        "first token at %.2fs, done at %.2fs" % (tokens[0][2], resp[2][-1][2]))

    def test_newlines_in_the_answer_stay_inside_the_data_line(self):
        self.agent("lines", model="openai/gpt-4o-mini")
        reply = "first line\nsecond\r\nthird\rlast \"quoted\" \u00e9\n\nevent: fake\ndata: x"
        self.fake.control(reply=reply)
        done, _ = self.check_stream(self.stream("lines", {"query": "lines"}))
        self.assertEqual(done["answer"], reply)

    def test_test_mode_streams_and_counts_nothing(self):
        self.agent("tester")
        before = self.usage_total()
        resp = self.stream("tester", {"query": "hello there"}, mode="test")
        done, _ = self.check_stream(resp)
        self.assertEqual(done["answer"], "echo: hello there")
        self.assertTrue(done["session_id"].startswith("test-"), done)
        self.assertEqual(self.rate(resp[1])[1], self.LIMIT)
        self.assertEqual(self.usage_total(), before)

    def test_accept_header_is_parsed_not_matched(self):
        self.agent("acc")
        for accept, streams in (
                (SSE, True),
                ("application/json, text/event-stream;q=0.9", True),
                ("TEXT/Event-Stream; charset=utf-8", True),
                ('text/html;x="a,text/event-stream", text/event-stream ; q=1', True),
                ("text/event-stream;q=0", False),
                ("text/event-stream; q=0.000, application/json", False),
                ('text/html;x="a,text/event-stream"', False),
                ("text/event-streams", False),
                ("*/*", False),
                ("text/*", False),
                ("application/json", False),
                (None, False)):
            with self.subTest(accept=accept):
                status, headers, got, _ = self.stream("acc", {"query": "hi"}, mode="test",
                                                      accept=accept)
                self.assertEqual(status, 200, got)
                if streams:
                    self.check_stream((status, headers, got, 0))
                else:
                    self.assertTrue(headers["content-type"].startswith("application/json"))
                    self.assertEqual(got["answer"], "echo: hi")

    def test_the_daemon_flushes_each_event_in_a_record_of_its_own(self):
        """Straight to the daemon's socket: the head, each token event and
        done leave in FastCGI records of their own, so nothing of the
        answer waits in the daemon for the request to end."""
        self.agent("flush", model="openai/gpt-4o-mini")
        self.fake.control(reply="alpha beta gamma")
        body = json.dumps({"query": "go"}).encode()
        conn = FcgiConnection(self.inst.socket)
        try:
            conn.begin("POST", self.path("/agents/flush/run"), content_length=len(body),
                       headers={"Authorization": "Bearer " + self.token, "Accept": SSE,
                                "Content-Type": "application/json"})
            conn.send_body(body, last=True)
            records = stdout_records(conn.sock)
        finally:
            conn.close()
        self.assertTrue(records[0].startswith(b"Status: 200 OK\r\n"), records)
        self.assertTrue(records[0].endswith(b"\r\n\r\n"), "the head alone: %r" % records[0])
        for rec in records[1:]:
            self.assertTrue(rec.startswith(b"event: ") and rec.endswith(b"\n\n")
                            and rec.count(b"event: ") == 1, "one event per record: %r" % records)
        self.assertTrue(records[-1].startswith(b"event: done\n"), records)

    # -- errors --------------------------------------------------------------------
    def assert_envelope(self, resp, status, code):
        got_status, headers, body, _ = resp
        assert_error(self, (got_status, headers, body), status, code)
        return headers

    def test_errors_before_the_first_event_keep_their_status_and_envelope(self):
        self.agent("draft", deploy=False)
        self.agent("live")
        self.assert_envelope(self.stream("live", {"qwery": "x"}), 422, "validation_error")
        self.assert_envelope(self.stream("draft", {"query": "x"}), 400, "agent_not_deployed")
        self.assert_envelope(self.stream("draft", {"query": "x"}, mode="test"), 400,
                             "agent_not_deployed")
        self.assert_envelope(self.stream("ghost", {"query": "x"}), 404, "agent_not_found")
        self.assert_envelope(self.stream("live", {"query": "x"}, token="not.a.jwt"), 401,
                             "unauthorized")
        status, _, body = self.inst.request(
            "POST", self.path("/agents/live/run"), raw=b"{", token=self.token,
            headers={"Accept": SSE})
        self.assertEqual(status, 400, body)

    def test_a_provider_failing_before_any_token_is_a_502_envelope(self):
        self.agent("down", model="openai/down-%d" % os.getpid())
        self.fake.control(mode="fail", status=500)
        headers = self.assert_envelope(self.stream("down", {"query": "x"}), 502,
                                       "provider_error")
        self.assertIn("x-ratelimit-remaining", headers)

    def test_a_provider_cut_off_is_an_envelope_before_any_token_or_an_error_event_after(self):
        """The fake ends its streamed answer halfway: the tokens already
        passed on stay, then an error event (and nothing after it)."""
        self.agent("cut", model="openai/cut-%d" % os.getpid())
        self.fake.control(mode="truncated", reply="one two three four five six seven eight")
        status, headers, got, _ = self.stream("cut", {"query": "x"})
        self.assertEqual(status, 200, got)
        names = [e[0] for e in got]
        self.assertEqual(names, ["token"] * (len(got) - 1) + ["error"], names)
        self.assertGreater(len(got), 1, got)
        err = got[-1][1]
        self.assertEqual(set(err), {"type", "error", "message"}, err)
        self.assertEqual(err["type"], "error")
        self.assertIn(err["error"], ("provider_error", "provider_timeout"), err)
        self.assertTrue(err["message"], err)

    def test_over_the_daily_limit_is_a_429_envelope(self):
        self.agent("lim")
        for i in range(self.LIMIT):
            self.check_stream(self.stream("lim", {"query": "n%d" % i}))
        headers = self.assert_envelope(self.stream("lim", {"query": "one more"}), 429,
                                       "daily_limit_reached")
        self.assertEqual(int(headers["x-ratelimit-remaining"]), 0)
        # test mode is not limited
        self.check_stream(self.stream("lim", {"query": "still"}, mode="test"))

    # -- clients that leave --------------------------------------------------------
    def test_a_client_leaving_mid_stream_costs_the_daemon_nothing(self):
        self.agent("slow", model="openai/gpt-4o-mini")
        workers = self.inst.worker_pids()
        self.fake.control(delay_ms=1500, reply="a b c d e f g h", chunk_delay_ms=100)
        # one leaves before anything came, one after the first event
        sock = socket.create_connection(("127.0.0.1", self.inst.port))
        body = json.dumps({"query": "bye"}).encode()
        sock.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                      "Content-Type: application/json\r\nAccept: %s\r\n"
                      "Content-Length: %d\r\n\r\n" % (self.path("/agents/slow/run"),
                                                      self.token, SSE, len(body))).encode() + body)
        time.sleep(0.3)
        sock.close()
        conn, resp = open_request(self.inst, "POST", self.path("/agents/slow/run"),
                                  {"query": "bye"}, self.token)
        self.assertEqual(resp.status, 200)
        line = resp.readline()
        self.assertTrue(line.startswith(b"event: "), line)
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        # both runs end on the daemon's side, settled (the provider was
        # called): no thread is left waiting on a client that is gone
        poll(lambda: self.usage_total() == 2, 30, what="both abandoned runs settled")
        # nothing died: the same workers answer the next requests
        self.fake.control(reply="after")
        for mode in ("test", "run"):
            done, _ = self.check_stream(self.stream("slow", {"query": "again"}, mode=mode))
            self.assertEqual(done["answer"], "after")
        self.assertEqual(self.inst.worker_pids(), workers)
        poll(lambda: self.inst.health(), 30, what="health after the clients left")
        self.assertEqual(self.inst.worker_pids(), workers)


class LighttpdSseTest(SseMixin, InstanceTestCase):
    front = "lighttpd"


class ApacheSseTest(SseMixin, InstanceTestCase):
    front = "apache"


if __name__ == "__main__":
    main()
