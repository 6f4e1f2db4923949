"""test_front_errors - what the front server answers by itself under /api/v1/
is the SPEC error envelope too (issue 11): {"error","message","status"} with
Content-Type application/json, from lighttpd's error pages
(etc/lighttpd/errors/, server.errorfile-prefix) and from Apache's
ErrorDocument lines (etc/apache2/astromesh-cloud.conf).

Run behind the front of ASTROMESH_FRONT (make check runs it behind both):
  - 503 while the daemon is down (its socket gone), then 200 once it is back;
  - 502 from a backend that answers garbage (Apache says 503, lighttpd 500);
  - 504 from a backend that accepts and never answers (Apache with a short
    ProxyTimeout; the shipped lighttpd snippet sets no FastCGI read timeout,
    so there lighttpd waits: no 504 to check);
  - 411 for a POST without Content-Length (lighttpd only: Apache takes such
    a POST as an empty body and the daemon answers);
  - 413 past the front server's own body limit (lighttpd: 8 MiB; Apache
    has none for a proxied request: the daemon's 413 is the one);
  - the texts of both fronts are the same (the pages and the ErrorDocument
    lines cannot drift apart)."""

import glob
import http.client
import json
import os
import re
import signal
import socket
import threading

from harness import (APACHE_CONF, ERRORS_DIR, InstanceTestCase, assert_error, main,
                     parse_body)


def raw_post(port, path, headers, timeout=30):
    """A POST with the given headers and no body, and nothing added (no
    Content-Length unless headers has one); return (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        payload = resp.read()
        rheaders = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, rheaders, parse_body(rheaders, payload)
    finally:
        conn.close()


class FakeBackend:
    """A unix socket in place of the daemon's: accepts every connection and
    either never answers (reply=None) or writes reply and closes."""

    def __init__(self, path, reply=None):
        self.reply = reply
        self.conns = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.sock.listen(16)
        self.stopped = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            if self.reply is not None:
                try:
                    c.settimeout(2)
                    c.recv(65536)
                    c.sendall(self.reply)
                except OSError:
                    pass
                c.close()

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()


class FrontErrorsTest(InstanceTestCase):
    shared_instance = False

    def backend_instance(self, reply, apache_extra=()):
        """An instance whose front server talks to a FakeBackend instead of
        the daemon (no daemon runs)."""
        inst = self.new_instance(start=False)
        inst.apache_extra = list(apache_extra)
        backend = FakeBackend(inst.socket, reply)
        self.addCleanup(backend.close)
        if inst.front == "apache":
            inst.start_apache()
        else:
            inst.start_lighttpd()
        return inst

    def test_503_json_while_the_daemon_is_down_then_200(self):
        inst = self.new_instance()
        token, slug = inst.user(self.unique_email("down"))
        inst.kill_daemon(signal.SIGTERM)
        self.assertFalse(os.path.exists(inst.socket), "the daemon left its socket behind")
        for _ in range(3):      # lighttpd: once refused, then "disabled" for 1 s
            assert_error(self, inst.request("GET", "/api/v1/health"), 503,
                         "service_unavailable")
        assert_error(self, inst.request("POST", "/api/v1/orgs/%s/agents" % slug,
                                        body={"name": "x"}, token=token), 503,
                     "service_unavailable")
        inst.restart_daemon()
        self.assertEqual(inst.request("GET", "/api/v1/health")[0], 200)

    def test_502_json_from_a_backend_that_answers_garbage(self):
        inst = self.backend_instance(b"this is not FastCGI\r\n" * 4)
        # Apache calls it a 503 (or 502), lighttpd a 500 (or 502)
        assert_error(self, inst.request("GET", "/api/v1/health"),
                     (502, 503) if inst.front == "apache" else (500, 502),
                     ("bad_gateway", "service_unavailable", "internal_error"))

    def test_504_json_from_a_backend_that_never_answers(self):
        inst = self.new_instance(start=False)
        if inst.front != "apache":
            self.skipTest("the lighttpd snippet sets no FastCGI read timeout: no 504")
        inst = self.backend_instance(None, apache_extra=["ProxyTimeout 2"])
        assert_error(self, inst.request("GET", "/api/v1/health", timeout=30), 504,
                     "gateway_timeout")

    def test_bodiless_post(self):
        """The user's `curl -X POST .../pause` (no body, no Content-Length)."""
        inst = self.new_instance()
        token, slug = inst.user(self.unique_email("bodiless"))
        resp = raw_post(inst.port, "/api/v1/orgs/%s/agents/nobot/pause" % slug,
                        {"Authorization": "Bearer " + token})
        if inst.front == "lighttpd":
            # lighttpd 1.4 refuses it before any module runs: its 411, as JSON
            assert_error(self, resp, 411, "length_required")
        else:
            # Apache passes it on as an empty body: the daemon's own answer
            assert_error(self, resp, 404, "agent_not_found")

    def test_404_for_an_encoded_slash(self):
        """lighttpd passes an encoded slash on and the daemon asks for
        credentials first. Apache refuses it itself (AllowEncodedSlashes,
        server-wide) before any <Location> applies, so the snippet's
        ErrorDocument cannot reach it: its HTML 404 (README says so)."""
        inst = self.new_instance()
        resp = inst.request("GET", "/api/v1/orgs/a%2Fb/agents")
        if inst.front == "apache":
            self.assertEqual(resp[0], 404, resp)
            self.assertIn("text/html", resp[1].get("content-type", ""), resp)
        else:
            assert_error(self, resp, 401, "unauthorized")

    def test_413_json_past_the_front_servers_own_limit(self):
        inst = self.new_instance()
        if inst.front != "lighttpd":
            self.skipTest("Apache applies no body limit of its own to a proxied request "
                          "(not even LimitRequestBody's 1 GiB): the daemon's 413 is the one")
        resp = raw_post(inst.port, "/api/v1/auth/dev/login",
                        {"Content-Type": "application/json",
                         "Content-Length": str(9 * 1024 * 1024)})
        body = assert_error(self, resp, 413, "payload_too_large")
        # the front's page, not the daemon's envelope (which says "1 MiB")
        self.assertIn("front server", body["message"])

    def test_both_fronts_say_the_same(self):
        """Every lighttpd page is valid envelope JSON and Apache's
        ErrorDocument for its status is the same text."""
        with open(APACHE_CONF) as f:
            apache = dict(re.findall(r"(?m)^\s*ErrorDocument (\d+) '(.*)'$", f.read()))
        pages = sorted(glob.glob(os.path.join(ERRORS_DIR, "*.html")))
        self.assertGreaterEqual(len(pages), 5)
        for page in pages:
            status = os.path.basename(page)[:3]
            with open(page) as f:
                text = f.read().strip()
            doc = json.loads(text)
            self.assertEqual(set(doc), {"error", "message", "status"}, page)
            self.assertEqual(doc["status"], int(status), page)
            self.assertEqual(apache.get(status), text, "ErrorDocument %s" % status)
        self.assertEqual(len(apache), len(pages), "an ErrorDocument without its page")
        for status in ("411", "413", "502", "503", "504"):
            self.assertIn(status, apache)


if __name__ == "__main__":
    main()
