"""test_apache - the daemon behind the real Apache (mod_proxy_fcgi), with
etc/apache2/astromesh-cloud.conf included unchanged (harness.Instance with
front="apache"): what a client sees through Apache is what it sees through
lighttpd. Bearer tokens reach the daemon (CGIPassAuth), the daemon's JSON
error envelopes arrive untouched (ProxyErrorOverride Off), the query string
arrives, bodies up to the daemon's limit arrive whole and the 413 over it is
the daemon's own, execution answers keep their X-RateLimit-* headers, and
stop() leaves no apache2 process behind.

X-API-Key is checked twice: end to end (a key made through Apache runs an
agent, and is refused once deleted), and one step earlier: a FastCGI peer
recording what Apache sends (FcgiRecorder) sees it as HTTP_X_API_KEY, which
is where the daemon reads it (src/server/http.c)."""

import http.client
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

from harness import (APACHE2, APACHE2_MODULES, APACHE_CONF, STOP_TIMEOUT, Instance,
                     InstanceTestCase, assert_error, assert_json, main, outcome_failed,
                     parse_body, pid_alive, poll, proc_children)

MIB = 1024 * 1024
WC = {"display_name": "Through Apache", "step1": {"model": "echo/echo-1"},
      "step2": {"system_prompt": "You are a test agent."}}
ANSWER_KEYS = {"answer", "session_id", "tokens_used", "model", "latency_ms", "trace_id", "version"}


def next_utc_midnight():
    return (int(time.time()) // 86400 + 1) * 86400


class ApacheTest(InstanceTestCase):
    front = "apache"

    def setUp(self):
        self.token, self.slug = self.inst.user(self.unique_email("apache"))

    def call(self, method, path, body=None, token=None, **kw):
        return self.inst.request(method, "/api/v1/orgs/%s%s" % (self.slug, path), body,
                                 token=self.token if token is None else token, **kw)

    def test_the_front_server_is_apache(self):
        status, headers, _ = self.inst.request("GET", "/api/v1/health")
        self.assertEqual(status, 200)
        self.assertIn("Apache", headers.get("server", ""), headers)
        self.assertIsNone(self.inst.lighttpd)
        # the harness denies everything; the snippet opens /api/v1/ alone
        self.assertEqual(self.inst.request("GET", "/daemon.log")[0], 403)

    def test_bearer_token_reaches_the_daemon(self):
        login = self.inst.login(self.unique_email("bearer"))
        me = assert_json(self, self.inst.request("GET", "/api/v1/orgs/me",
                                                 token=login["access_token"]), 200)
        self.assertEqual(me["slug"], login["org_slug"])
        self.assertEqual(me["role"], "owner")
        # the refresh token travels in the body, logout's access token in the header
        new = assert_json(self, self.inst.request("POST", "/api/v1/auth/refresh",
                                                  {"refresh_token": login["refresh_token"]}), 200)
        self.assertEqual(self.inst.request("POST", "/api/v1/auth/logout",
                                           token=new["access_token"])[0], 204)
        assert_error(self, self.inst.request("GET", "/api/v1/orgs/me",
                                             token=new["access_token"]), 401, "unauthorized")

    def test_lifecycle_create_deploy_run_pause_delete(self):
        name = "via-apache"
        created = assert_json(self, self.call("POST", "/agents", dict(WC, name=name)), 201)
        self.assertEqual((created["name"], created["status"]), (name, "draft"))
        dep = assert_json(self, self.call("POST", "/agents/%s/deploy" % name), 200)
        self.assertEqual(dep["status"], "deployed")
        self.assertEqual(dep["agent_id"], "%s__%s" % (self.slug, name))

        for i, query in enumerate(("Hello through Apache", "again")):
            resp = self.call("POST", "/agents/%s/run" % name, {"query": query})
            body = assert_json(self, resp, 200)
            self.assertTrue(ANSWER_KEYS <= set(body), body)
            self.assertEqual(body["model"], "echo/echo-1")
            self.assertIn(query, body["answer"])
            headers = resp[1]
            for h in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
                self.assertRegex(headers.get(h, ""), r"^\d+$", "%s in %r" % (h, headers))
            self.assertEqual(int(headers["x-ratelimit-limit"]), 1000)
            self.assertEqual(int(headers["x-ratelimit-remaining"]), 999 - i)
            self.assertIn(int(headers["x-ratelimit-reset"]),
                          (next_utc_midnight(), next_utc_midnight() - 86400))

        paused = assert_json(self, self.call("POST", "/agents/%s/pause" % name), 200)
        self.assertEqual(paused["status"], "paused")
        err = assert_error(self, self.call("POST", "/agents/%s/run" % name, {"query": "hi"}),
                           400, "agent_not_deployed")
        self.assertIn("paused", err["message"])
        self.assertEqual(self.call("DELETE", "/agents/%s" % name)[0], 204)
        assert_error(self, self.call("GET", "/agents/%s" % name), 404, "agent_not_found")

    def test_api_key_reaches_the_daemon(self):
        name = "key-bot"
        assert_json(self, self.call("POST", "/agents", dict(WC, name=name)), 201)
        assert_json(self, self.call("POST", "/agents/%s/deploy" % name), 200)
        key = assert_json(self, self.call("POST", "/keys", {"name": "apache"}), 201)
        h = {"X-API-Key": key["secret"]}
        path = "/api/v1/orgs/%s/agents/%s/run" % (self.slug, name)
        body = assert_json(self, self.inst.request("POST", path, {"query": "by key"},
                                                   headers=h), 200)
        self.assertIn("by key", body["answer"])
        assert_error(self, self.inst.request("GET", "/api/v1/orgs/%s/keys" % self.slug,
                                             headers=h), 403, "forbidden")
        self.assertEqual(self.call("DELETE", "/keys/" + key["id"])[0], 204)
        assert_error(self, self.inst.request("POST", path, {"query": "x"}, headers=h), 401,
                     "unauthorized")

    def test_daemon_errors_arrive_untouched(self):
        """Each answer is the daemon's JSON envelope, not an Apache page."""
        assert_error(self, self.call("GET", "/agents/no-such-agent"), 404, "agent_not_found")
        assert_error(self, self.inst.request("GET", "/api/v1/orgs/me"), 401, "unauthorized")
        assert_error(self, self.inst.request("GET", "/api/v1/orgs/me", token="not.a.jwt"),
                     401, "unauthorized")
        assert_error(self, self.inst.request("GET", "/api/v1/no/such/route"), 404)
        other, _ = self.inst.user(self.unique_email("other"))
        assert_error(self, self.call("GET", "/agents", token=other), 403)
        assert_error(self, self.call("POST", "/agents", raw=b"{not json"), 400)
        assert_error(self, self.call("POST", "/agents", {"name": "Bad_Name"}), 422)
        assert_error(self, self.inst.request("POST", "/api/v1/auth/github"), 501,
                     "not_implemented")

    def test_query_string_reaches_the_daemon(self):
        for days in (1, 3, 90):
            u = assert_json(self, self.call("GET", "/usage?days=%d" % days), 200)
            self.assertEqual(u["period_days"], days)
            self.assertEqual(len(u["by_day"]), days)
        self.assertEqual(assert_json(self, self.call("GET", "/usage"), 200)["period_days"], 30)
        for bad in ("0", "91", "abc"):
            assert_error(self, self.call("GET", "/usage?days=" + bad), 422, "validation_error",
                         fields=["days"])

    def big(self, size, name):
        """A valid WizardConfig of exactly size bytes (the system prompt,
        with multi-byte UTF-8 in it, then blanks): the agent is created
        only if every byte arrived. Returns (raw, prompt)."""
        prompt = ("Apache keeps every byte: \u00e9\u00e8 \u2713 " * 1000)[:8000]
        head = ('{"name":"%s","step1":{"model":"echo/echo-1"},"step2":{"system_prompt":"%s"}'
                % (name, prompt)).encode("utf-8")
        raw = head + b" " * (size - len(head) - 1) + b"}"
        self.assertEqual(len(raw), size)
        return raw, prompt

    def test_body_up_to_the_limit_arrives_whole(self):
        raw, prompt = self.big(MIB, "big-exact")
        created = assert_json(self, self.call("POST", "/agents", raw=raw), 201)
        self.assertEqual(created["wizard_config"]["step2"]["system_prompt"], prompt)
        got = assert_json(self, self.call("GET", "/agents/big-exact"), 200)
        self.assertEqual(got["wizard_config"]["step2"]["system_prompt"], prompt)

    def test_body_over_the_limit_gets_the_daemons_413(self):
        """Apache sets no limit of its own on a proxied body (lighttpd
        stops at 8 MiB): even 16 MiB get the daemon's envelope."""
        for size in (MIB + 1, 4 * MIB, 16 * MIB):
            with self.subTest(size=size):
                raw, _ = self.big(size, "big-over")
                assert_error(self, self.call("POST", "/agents", raw=raw), 413,
                             "payload_too_large")
        assert_error(self, self.call("GET", "/agents/big-over"), 404, "agent_not_found")

    def chunked_post(self, path, raw):
        """POST raw with Transfer-Encoding: chunked (no Content-Length)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.inst.port, timeout=60)
        try:
            conn.request("POST", "/api/v1/orgs/%s%s" % (self.slug, path),
                         body=iter([raw[i:i + 65536] for i in range(0, len(raw), 65536)]),
                         headers={"Content-Type": "application/json",
                                  "Authorization": "Bearer " + self.token},
                         encode_chunked=True)
            resp = conn.getresponse()
            payload = resp.read()
            headers = {k.lower(): v for k, v in resp.getheaders()}
            return resp.status, headers, parse_body(headers, payload)
        finally:
            conn.close()

    def test_chunked_body_arrives_whole(self):
        raw, prompt = self.big(MIB // 2, "chunked")
        created = assert_json(self, self.chunked_post("/agents", raw), 201)
        self.assertEqual(created["wizard_config"]["step2"]["system_prompt"], prompt)
        raw, _ = self.big(2 * MIB, "chunked-over")
        assert_error(self, self.chunked_post("/agents", raw), 413, "payload_too_large")


# --- what Apache hands the FastCGI application ---------------------------------

def fcgi_record(rtype, content, request_id=1):
    pad = -len(content) % 8
    return (struct.pack("!BBHHBx", 1, rtype, request_id, len(content), pad)
            + content + b"\0" * pad)


def fcgi_params(data):
    """Decode FastCGI name-value pairs into a dict of str."""
    out, i = {}, 0
    while i < len(data):
        lens = []
        for _ in range(2):
            if data[i] & 0x80:
                lens.append(struct.unpack("!I", data[i:i + 4])[0] & 0x7FFFFFFF)
                i += 4
            else:
                lens.append(data[i])
                i += 1
        name, value = data[i:i + lens[0]], data[i + lens[0]:i + lens[0] + lens[1]]
        i += lens[0] + lens[1]
        out[name.decode("latin-1")] = value.decode("latin-1")
    return out


class FcgiRecorder:
    """A FastCGI application on a unix socket, in a thread: records the
    params and stdin of each request and answers 200 {"ok":true}."""

    def __init__(self, path):
        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o660)         # as the daemon's default socket_mode
        self.sock.listen(16)
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
        buf, params, stdin, ended = b"", b"", b"", False
        while not ended:
            while len(buf) < 8 or len(buf) < 8 + struct.unpack("!H", buf[4:6])[0] + buf[6]:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            _, rtype, _, clen, plen = struct.unpack("!BBHHBx", buf[:8])
            content, buf = buf[8:8 + clen], buf[8 + clen + plen:]
            if rtype == 4:                        # FCGI_PARAMS
                params += content
            elif rtype == 5:                      # FCGI_STDIN; empty = end
                stdin += content
                ended = not content
        self.requests.append((fcgi_params(params), stdin))
        answer = b"Status: 200 OK\r\nContent-Type: application/json\r\n\r\n{\"ok\":true}"
        conn.sendall(fcgi_record(6, answer) + fcgi_record(6, b"")
                     + fcgi_record(3, struct.pack("!IB3x", 0, 0)))

    def close(self):
        self.done = True
        self.thread.join(5)
        self.sock.close()


class ApacheParamsTest(InstanceTestCase):
    """Apache in front of FcgiRecorder instead of the daemon."""
    shared_instance = False

    def setUp(self):
        self.inst = Instance(name="apache-params", front="apache")
        self.addCleanup(lambda: self.inst.stop(failed=outcome_failed(self)))
        self.rec = FcgiRecorder(self.inst.socket)
        self.addCleanup(self.rec.close)
        self.inst.start_apache()

    def send(self, method, path, **kw):
        n = len(self.rec.requests)
        resp = self.inst.request(method, path, **kw)
        self.assertEqual(resp[0], 200, resp)
        self.assertEqual(len(self.rec.requests), n + 1)
        return self.rec.requests[-1]

    def test_credentials_are_passed(self):
        params, _ = self.send("GET", "/api/v1/orgs/me", token="abc.def.ghi",
                              headers={"X-API-Key": "ask-0123456789abcdef"})
        self.assertEqual(params.get("HTTP_AUTHORIZATION"), "Bearer abc.def.ghi", params)
        self.assertEqual(params.get("HTTP_X_API_KEY"), "ask-0123456789abcdef", params)

    def test_request_uri_is_byte_for_byte(self):
        for uri in ("/api/v1/orgs/acme/usage?days=3",
                    "/api/v1/orgs/acme/agents/bot?x=1&y=%2F%20a+b&z=%C3%A9&&empty=",
                    "/api/v1/orgs/ac%6De/agents/"):
            with self.subTest(uri=uri):
                params, _ = self.send("GET", uri)
                self.assertEqual(params.get("REQUEST_URI"), uri, params)
                self.assertEqual(params.get("QUERY_STRING"), uri.partition("?")[2], params)
                self.assertEqual(params.get("REQUEST_METHOD"), "GET")

    def test_body_and_content_length_are_passed(self):
        body = os.urandom(MIB)
        params, stdin = self.send("POST", "/api/v1/orgs/acme/agents", raw=body)
        self.assertEqual(params.get("CONTENT_LENGTH"), str(MIB))
        self.assertEqual(params.get("CONTENT_TYPE"), "application/json")
        self.assertTrue(stdin == body, "stdin of %d bytes differs from the body" % len(stdin))

    def test_chunked_body_is_passed_whole(self):
        """No Content-Length: Apache streams the body and sends no
        CONTENT_LENGTH (the daemon then reads stdin to its end)."""
        body = os.urandom(MIB // 2 + 7)
        conn = http.client.HTTPConnection("127.0.0.1", self.inst.port, timeout=60)
        try:
            conn.request("POST", "/api/v1/orgs/acme/agents",
                         body=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                         headers={"Content-Type": "application/json"}, encode_chunked=True)
            self.assertEqual(conn.getresponse().status, 200)
        finally:
            conn.close()
        params, stdin = self.rec.requests[-1]
        self.assertIn(params.get("CONTENT_LENGTH"), (None, str(len(body))), params)
        self.assertTrue(stdin == body, "stdin of %d bytes differs from the body" % len(stdin))


# --- process hygiene and the shipped file on its own ------------------------------

class ApacheProcessTest(InstanceTestCase):
    front = "apache"
    shared_instance = False

    def apache_pids(self, inst):
        pids = [inst.apache.pid] + proc_children(inst.apache.pid)
        self.assertGreater(len(pids), 1, "apache2 has children")
        return pids

    def assert_all_gone(self, pids):
        poll(lambda: not [p for p in pids if pid_alive(p)], STOP_TIMEOUT,
             what="apache2 processes %s to be gone" % pids)

    def test_stop_leaves_no_apache_process(self):
        inst = self.new_instance()
        pids = self.apache_pids(inst)
        inst.stop()
        self.assert_all_gone(pids)

    def test_stop_after_apache_parent_was_killed_leaves_no_child(self):
        inst = self.new_instance()
        pids = self.apache_pids(inst)
        os.kill(inst.apache.pid, 9)
        inst.apache.wait(timeout=STOP_TIMEOUT)
        inst.stop()
        self.assert_all_gone(pids)


class ApacheConfigTest(InstanceTestCase):
    """The shipped snippet passes `apache2 -t` where the README puts it:
    enabled from conf-available/ (what a2enconf does) and inside a
    <VirtualHost>, with the packaged socket path."""
    shared_instance = False

    def layout(self, main_conf_body):
        d = tempfile.mkdtemp(prefix="apache-etc-")
        self.addCleanup(shutil.rmtree, d, True)
        for sub in ("conf-available", "conf-enabled"):
            os.makedirs(os.path.join(d, sub))
        shutil.copy(APACHE_CONF, os.path.join(d, "conf-available", "astromesh-cloud.conf"))
        os.symlink("../conf-available/astromesh-cloud.conf",
                   os.path.join(d, "conf-enabled", "astromesh-cloud.conf"))
        conf = os.path.join(d, "apache2.conf")
        mods = "".join('LoadModule %s_module "%s/mod_%s.so"\n' % (m, APACHE2_MODULES, m)
                       for m in ("mpm_event", "authz_core", "headers", "proxy", "proxy_fcgi"))
        with open(conf, "w") as f:
            f.write('ServerRoot "%s"\nPidFile "%s/pid"\nErrorLog "%s/error.log"\n'
                    'ServerName localhost\nListen 127.0.0.1:8080\n%s%s\n'
                    % (d, d, d, mods, main_conf_body))
        return conf

    def t(self, conf, *args):
        p = subprocess.run([APACHE2, "-t", "-f", conf] + list(args), capture_output=True,
                           timeout=30)
        return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")

    def test_enabled_from_conf_available(self):
        conf = self.layout("IncludeOptional conf-enabled/*.conf")
        rc, out = self.t(conf)
        self.assertEqual(rc, 0, out)
        rc, out = self.t(conf, "-D", "DUMP_RUN_CFG")
        self.assertIn("ASTROMESH_SOCKET=/run/astromesh-cloud/fcgi.sock", out)

    def test_inside_a_virtual_host(self):
        conf = self.layout('<VirtualHost 127.0.0.1:8080>\n'
                           '    Include conf-available/astromesh-cloud.conf\n'
                           '</VirtualHost>')
        rc, out = self.t(conf)
        self.assertEqual(rc, 0, out)


if __name__ == "__main__":
    main()
