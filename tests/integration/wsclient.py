"""wsclient - a small RFC 6455 WebSocket client for the tests, standard
library only.

    ws = WSClient.connect("127.0.0.1", port, "/api/v1/orgs/o/agents/a/stream",
                          headers={"Authorization": "Bearer ..."})
    ws.send_json({"query": "hi"})
    ev = ws.recv_json()          # {"type": "token", ...}
    ws.close()

connect() raises Refused(status, headers, body) when the server answers
anything but 101. Besides well-formed frames, send_frame() can send what a
bad client would (unmasked, binary, reserved bits, huge lengths) so the
tests can check the server's close codes.
"""

import base64
import hashlib
import json
import os
import socket
import struct
import time

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


class Refused(Exception):
    """The server answered the upgrade request with a plain HTTP response."""

    def __init__(self, status, headers, body):
        super().__init__("HTTP %d: %r" % (status, body[:200]))
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class Closed(Exception):
    """The server closed the WebSocket: code and reason (code None if the
    TCP connection ended without a close frame)."""

    def __init__(self, code, reason=""):
        super().__init__("closed %s %r" % (code, reason))
        self.code = code
        self.reason = reason


class WSClient:
    def __init__(self, sock, leftover=b""):
        self.sock = sock
        self.buf = leftover
        self.pings = 0

    @classmethod
    def connect(cls, host, port, path, headers=None, timeout=30.0, key=None, version="13",
                upgrade=True, unix=None):
        """Open a WebSocket to path (with its query string). unix: connect to
        this unix socket instead of host:port (the stream socket itself)."""
        if unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(unix)
        else:
            sock = socket.create_connection((host, port), timeout=timeout)
        if not unix:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = key or base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path, "Host: %s:%s" % (host, port)]
        if upgrade:
            lines += ["Upgrade: websocket", "Connection: Upgrade",
                      "Sec-WebSocket-Key: %s" % key, "Sec-WebSocket-Version: %s" % version]
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                sock.close()
                raise Refused(0, {}, head)
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        status_line, *hlines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        rheaders = {}
        for h in hlines:
            if ":" in h:
                k, v = h.split(":", 1)
                rheaders[k.strip().lower()] = v.strip()
        if status != 101:
            body = rest
            if "content-length" in rheaders:
                need = int(rheaders["content-length"])
                while len(body) < need:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    body += chunk
            else:
                while True:
                    try:
                        chunk = sock.recv(65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    body += chunk
                body = _dechunk(body) if rheaders.get("transfer-encoding") == "chunked" else body
            sock.close()
            raise Refused(status, rheaders, body)
        want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        if rheaders.get("sec-websocket-accept") != want:
            sock.close()
            raise AssertionError("bad Sec-WebSocket-Accept %r" % rheaders.get("sec-websocket-accept"))
        return cls(sock, rest)

    # -- sending -----------------------------------------------------------------
    def send_frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
        head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
        n = len(payload) if length is None else length
        mbit = 0x80 if mask else 0
        if n < 126:
            head += bytes([mbit | n])
        elif n < 65536:
            head += bytes([mbit | 126]) + struct.pack("!H", n)
        else:
            head += bytes([mbit | 127]) + struct.pack("!Q", n)
        if mask:
            m = os.urandom(4)
            head += m
            payload = bytes(b ^ m[i & 3] for i, b in enumerate(payload))
        self.sock.sendall(head + payload)

    def send_text(self, text):
        self.send_frame(TEXT, text.encode("utf-8") if isinstance(text, str) else text)

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def close(self, code=1000):
        try:
            self.send_frame(CLOSE, struct.pack("!H", code))
        except OSError:
            pass
        self.sock.close()

    def abort(self):
        """Vanish: no close frame, just the TCP connection gone."""
        self.sock.close()

    # -- receiving ---------------------------------------------------------------
    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed(None, "connection ended")
            self.buf += chunk

    def recv_frame(self):
        """(opcode, payload) of the next frame from the server."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        if b1 & 0x80:
            raise AssertionError("server frames must not be masked")
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n)
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return b0 & 0x0F, payload

    def recv_json(self, timeout=None):
        """The next text message as JSON, answering pings; raises Closed on
        a close frame."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("no message within %.1fs" % timeout)
                self.sock.settimeout(left)
            op, payload = self.recv_frame()
            if op == PING:
                self.pings += 1
                self.send_frame(PONG, payload)
            elif op == PONG:
                continue
            elif op == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(code, payload[2:].decode("utf-8", "replace"))
            elif op == TEXT:
                return json.loads(payload.decode("utf-8"))
            else:
                raise AssertionError("unexpected opcode %d" % op)

    def wait_close(self, timeout=10.0):
        """Read until the server closes, at most timeout seconds in all
        (pings answered on the way); return the Closed (code, reason) with
        .events, the messages that came before it."""
        deadline = time.monotonic() + timeout
        events = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("not closed within %.1fs (events %r)"
                                         % (timeout, events))
                events.append(self.recv_json(timeout=left))
        except socket.timeout:
            raise AssertionError("not closed within %.1fs (events %r)" % (timeout, events))
        except Closed as c:
            c.events = events
            return c

    def query(self, query, session_id=None, timeout=30.0, **extra):
        """Send a query; return (token events, final event) where the final
        one is the done or error event."""
        msg = {"query": query}
        if session_id:
            msg["session_id"] = session_id
        msg.update(extra)
        self.send_json(msg)
        tokens = []
        deadline = time.monotonic() + timeout
        while True:
            ev = self.recv_json(timeout=max(0.1, deadline - time.monotonic()))
            if ev.get("type") == "token":
                tokens.append(ev)
            else:
                return tokens, ev


def _dechunk(body):
    out = b""
    while body:
        line, _, body = body.partition(b"\r\n")
        n = int(line.split(b";")[0] or b"0", 16)
        if n == 0:
            break
        out, body = out + body[:n], body[n + 2:]
    return out


def _cli(argv):
    """python3 wsclient.py ws://HOST:PORT/PATH?QUERY 'question' ['question' ...]
    Open the stream, send each question in turn and print every event as
    one JSON line (a manual client for the README's walk-through)."""
    import sys
    import urllib.parse
    if len(argv) < 3:
        print(_cli.__doc__.strip(), file=sys.stderr)
        return 2
    u = urllib.parse.urlsplit(argv[1])
    path = u.path + ("?" + u.query if u.query else "")
    headers = {}
    if os.environ.get("TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["TOKEN"]
    try:
        ws = WSClient.connect(u.hostname, u.port or 80, path, headers=headers)
    except Refused as r:
        print("HTTP %d %s" % (r.status, r.body.decode("utf-8", "replace")))
        return 1
    session = None
    for q in argv[2:]:
        tokens, final = ws.query(q, session_id=session)
        for ev in tokens + [final]:
            print(json.dumps(ev))
        session = final.get("session_id", session)
    ws.close()
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(_cli(sys.argv))
