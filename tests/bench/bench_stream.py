"""The stream rows of `make bench` (section 5), imported by bench.py.

5a. Relay latency: a streaming OpenAI-compatible fake runs in this process
    (a thread on RELAY_PORT, providers.mistral in the bench config) and
    stamps every chunk it writes with time.monotonic(); a WebSocket client
    (tests/integration/wsclient.py) reads the token events through
    lighttpd and stamps each read. latency = read - write, matched by
    order (a runtime that calls the sink once per answer relays one token:
    it is matched with the fake's last write). Next to it: the same fake
    read directly by a client over HTTP (the network floor).
5b. 2,000 idle WebSocket connections opened on the stream socket itself
    (one stream process; lighttpd's own connection limit is not what is
    measured), the per-org limit raised in the bench config: the stream
    process's VmRSS and Pss before and after, divided by the count; then
    5a's relay again with them open.
"""
import json
import os
import socket
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import wsclient  # noqa: E402

WORDS = 20             # chunks per answer
CHUNK_GAP_S = 0.002    # pause between chunks


class RelayFake:
    """A streaming OpenAI-compatible chat endpoint that records when it
    wrote each piece: writes[i] = [(text, monotonic seconds)] of request i."""

    def __init__(self, port):
        self.writes = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                words = ["w%d " % i for i in range(WORDS)]
                stamps = []
                with outer.lock:            # before any write: the client
                    outer.writes.append(stamps)     # cannot see it first
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for w in words:
                        ev = {"id": "c", "object": "chat.completion.chunk",
                              "model": body.get("model"),
                              "choices": [{"index": 0, "delta": {"content": w},
                                           "finish_reason": None}]}
                        stamps.append((w, time.monotonic()))
                        self.chunk("data: %s\n\n" % json.dumps(ev))
                        time.sleep(CHUNK_GAP_S)
                    ev = {"id": "c", "object": "chat.completion.chunk", "model": body.get("model"),
                          "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 5, "completion_tokens": WORDS,
                                    "total_tokens": WORDS + 5}}
                    self.chunk("data: %s\n\ndata: [DONE]\n\n" % json.dumps(ev))
                    self.chunk("")
                else:
                    for _ in words:                 # the same pacing, one answer
                        time.sleep(CHUNK_GAP_S)
                    doc = {"id": "c", "object": "chat.completion", "model": body.get("model"),
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant",
                                                    "content": "".join(words)}}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": WORDS,
                                     "total_tokens": WORDS + 5}}
                    data = json.dumps(doc).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    stamps.append(("".join(words), time.monotonic()))
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()

            def chunk(self, text):
                data = text.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass        # a client (the daemon's curl) that hung up

        self.server = Server(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self):
        with self.lock:
            out, self.writes = self.writes, []
        return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100.0 * (len(xs) - 1))))] if xs else float("nan")


def pair(stamps, reads):
    """Latencies (s) of reads [(text, t)] against writes [(text, t)]."""
    if len(reads) == len(stamps):
        return [r[1] - w[1] for w, r in zip(stamps, reads)]
    if reads:                                   # one token per answer
        return [reads[-1][1] - stamps[-1][1]]
    return []


def relay_ws(port, slug, token, agent, n):
    """n queries on one WebSocket through lighttpd; latencies and tokens."""
    ws = wsclient.WSClient.connect("127.0.0.1", port,
                                   "/api/v1/orgs/%s/agents/%s/stream" % (slug, agent),
                                   headers={"Authorization": "Bearer " + token})
    lat, tokens = [], 0
    try:
        for i in range(n):
            ws.send_json({"query": "relay %d" % i})
            reads = []
            while True:
                ev = ws.recv_json(timeout=30)
                if ev["type"] == "token":
                    reads.append((ev["content"], time.monotonic()))
                elif ev["type"] == "done":
                    break
                else:
                    raise RuntimeError("relay query failed: %r" % ev)
            tokens += len(reads)
            yield_stamps = FAKE.take()
            if yield_stamps:
                lat += pair(yield_stamps[-1], reads)
    finally:
        ws.close()
    return lat, tokens


def relay_direct(port, n):
    """The same fake read directly: n streamed answers over HTTP."""
    lat = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = json.dumps({"model": "direct", "stream": True,
                           "messages": [{"role": "user", "content": "direct %d" % i}]}).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                  b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        reads, buf = [], b""
        while b"[DONE]" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            now = time.monotonic()
            buf += chunk
            reads += [("", now)] * chunk.count(b'"delta": {"content"')
        s.close()
        stamps = FAKE.take()
        if stamps:
            lat += pair(stamps[-1], reads)
    return lat


def stream_pid(daemon_pid, children_all):
    for p in children_all(daemon_pid):
        try:
            with open("/proc/%d/comm" % p) as f:
                if f.read().strip() == "am-stream":
                    return p
        except OSError:
            pass
    return None


def open_idle(sock_path, slug, token, agent, n):
    conns = []
    for _ in range(n):
        conns.append(wsclient.WSClient.connect(
            "localhost", 0, "/api/v1/orgs/%s/agents/%s/stream" % (slug, agent),
            headers={"Authorization": "Bearer " + token}, unix=sock_path))
    return conns


FAKE = None


def run(port, relay_port, sock_path, token, slug, client, memory, daemon_pid, children_all,
        n_idle=2000, n_relay=200):
    """Print section 5; return the summary figures."""
    global FAKE
    FAKE = RelayFake(relay_port)
    base = "/api/v1/orgs/%s/agents" % slug
    client.expect(201, "POST", base, {"name": "relay", "step1": {"model": "mistral/relay"},
                                      "step2": {"system_prompt": "You relay."}})
    client.expect(200, "POST", base + "/relay/deploy")
    relay_ws(port, slug, token, "relay", 5)                 # warm-up
    FAKE.take()
    direct = relay_direct(relay_port, n_relay)
    ws_lat, ntok = relay_ws(port, slug, token, "relay", n_relay)
    spid = stream_pid(daemon_pid, children_all)
    before = memory(spid)
    t0 = time.monotonic()
    conns = open_idle(sock_path, slug, token, "relay", n_idle)
    opened = time.monotonic() - t0
    time.sleep(1.0)
    after = memory(spid)
    busy_lat, _ = relay_ws(port, slug, token, "relay", n_relay)
    for c in conns:
        c.abort()
    per_rss = (after["VmRSS"] - before["VmRSS"]) * 1024.0 / n_idle
    per_pss = (after["Pss"] - before["Pss"]) * 1024.0 / n_idle
    ms = 1000.0
    print("5. The WebSocket stream (WS .../agents/{name}/stream, one stream process)")
    print()
    print("  a. Relay latency: the fake (in the bench process, %d chunks %.0f ms apart) "
          "writes, the client reads" % (WORDS, CHUNK_GAP_S * 1000))
    hdr = "  %-44s %8s %8s %8s %8s" % ("path", "samples", "p50 ms", "p99 ms", "tokens/q")
    print(hdr)
    print("  " + "-" * (len(hdr) - 2))
    print("  %-44s %8d %8.3f %8.3f %8d" % ("fake read directly (HTTP, SSE)", len(direct),
                                           pct(direct, 50) * ms, pct(direct, 99) * ms, WORDS))
    print("  %-44s %8d %8.3f %8.3f %8.1f" % ("daemon + lighttpd, WebSocket", len(ws_lat),
                                             pct(ws_lat, 50) * ms, pct(ws_lat, 99) * ms,
                                             ntok / float(n_relay)))
    print("  %-44s %8d %8.3f %8.3f %8s" % ("same, %d idle streams open" % n_idle, len(busy_lat),
                                           pct(busy_lat, 50) * ms, pct(busy_lat, 99) * ms, ""))
    if ntok == n_relay:
        print("  (one token per answer: this runtime hands the sink the whole answer after the")
        print("   output guardrails, so the latency is from the fake's last write)")
    print()
    print("  b. %d idle streams on the stream socket (opened in %.2f s), stream process %d:"
          % (n_idle, opened, spid))
    print("     VmRSS %.2f -> %.2f MiB, Pss %.2f -> %.2f MiB: %.1f KiB (RSS) / %.1f KiB (Pss) "
          "per connection" % (before["VmRSS"] / 1024.0, after["VmRSS"] / 1024.0,
                              before["Pss"] / 1024.0, after["Pss"] / 1024.0,
                              per_rss / 1024.0, per_pss / 1024.0))
    print("     (user space only: the kernel's socket buffers are not in either figure)")
    return {"direct_p50": pct(direct, 50) * ms, "ws_p50": pct(ws_lat, 50) * ms,
            "ws_p99": pct(ws_lat, 99) * ms, "busy_p99": pct(busy_lat, 99) * ms,
            "per_rss_kib": per_rss / 1024.0, "per_pss_kib": per_pss / 1024.0, "n_idle": n_idle}
