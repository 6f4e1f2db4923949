#!/usr/bin/env python3
"""test_slow_clients - bounded connections in front (issue 15).

5,000 slow clients (each sends part of a request and then a byte every few
seconds, never finishing its headers) are held open while normal requests
keep answering, behind lighttpd (etc/lighttpd/astromesh-cloud-fastcgi.conf:
max-fds, max-connections, max-read-idle) and behind Apache (the snippet's
mod_reqtimeout; MaxRequestWorkers sized by apache_extra as the snippet
documents). Behind lighttpd, clients that send nothing are closed by the
idle limit; behind Apache they wait in its listener without a worker.

And the backend comes back at once after a daemon restart: the time from
the new daemon's first healthy FastCGI answer (straight to its socket) to
the first healthy answer through the front server, with the socket held
as astromesh-cloud.socket holds it (no connect ever fails), and without
(lighttpd's disable-time 0; Apache tries again on the next request)."""

import errno
import os
import resource
import selectors
import signal
import socket
import threading
import time

from harness import FRONT, FcgiConnection, Instance, InstanceTestCase, main, poll

SLOW = int(os.environ.get("ASTROMESH_SLOW_CLIENTS", "5000"))
HOLD = 20.0                  # seconds the slow clients are held
DRIBBLE = 4.0                # a byte per client every DRIBBLE seconds
SOURCES = ["127.0.0.%d" % i for i in range(2, 12)]    # ten client addresses
# Apache: MaxRequestWorkers above the slow clients, as the snippet documents
APACHE_SIZING = ["<IfModule mpm_event_module>", "ServerLimit 80", "ThreadsPerChild 64",
                 "MaxRequestWorkers 5120", "ThreadStackSize 262144", "StartServers 80",
                 "ListenBacklog 8192", "</IfModule>"]


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class SlowClients:
    """n connections from several loopback addresses, each sending an
    unfinished request and then one header byte every DRIBBLE seconds."""

    def __init__(self, port, n, silent=False):
        self.port, self.n, self.silent = port, n, silent
        self.socks = []
        self.failed_connects = 0

    def open(self, timeout=30.0):
        sel = selectors.DefaultSelector()
        pending = 0
        for i in range(self.n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.bind((SOURCES[i % len(SOURCES)], 0))
            rc = s.connect_ex(("127.0.0.1", self.port))
            if rc not in (0, errno.EINPROGRESS):
                self.failed_connects += 1
                s.close()
                continue
            sel.register(s, selectors.EVENT_WRITE)
            pending += 1
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(1.0):
                s = key.fileobj
                sel.unregister(s)
                pending -= 1
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    self.failed_connects += 1
                    s.close()
                    continue
                if not self.silent:
                    try:
                        s.send(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    except OSError:
                        s.close()
                        continue
                self.socks.append(s)
        for key in list(sel.get_map().values()):
            key.fileobj.close()         # never connected in time
        sel.close()
        return len(self.socks)

    def dribble(self):
        """One byte on each (silent ones: none); returns how many are still
        open (a closed one shows as a failed send, or anything to read)."""
        alive = []
        for s in self.socks:
            try:
                if self.silent:
                    s.recv(4096)        # EOF, or the front's 408 before it closes
                    raise OSError("closed")
                else:
                    s.send(b"a")
                alive.append(s)
            except BlockingIOError:
                alive.append(s)         # silent and still open: nothing to read
            except OSError:
                s.close()
        self.socks = alive
        return len(alive)

    def close(self):
        for s in self.socks:
            s.close()
        self.socks = []


class SlowClientsTest(InstanceTestCase):

    shared_instance = False     # made here: Apache gets its sizing lines

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if FRONT != "apache":
            # lighttpd starts with what systemd gives a service (1024): only
            # its own server.max-fds raises it (Debian's apache2ctl raises
            # Apache's itself: envvars, ulimit -n 65536)
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        cls.inst = Instance(None, name=cls.__name__, front=FRONT,
                            apache_extra=APACHE_SIZING if FRONT == "apache" else ())
        cls.addClassCleanup(lambda: cls.inst.stop(failed=cls._failed))
        try:
            cls.inst.start()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        cls.nofile = raise_nofile(SLOW + 2000)

    def timed_health(self):
        t = time.monotonic()
        status, _, body = self.inst.request("GET", "/api/v1/health", timeout=30)
        return status, time.monotonic() - t

    def test_5000_slow_clients_do_not_stop_service(self):
        self.assertGreaterEqual(self.nofile, SLOW + 1000, "RLIMIT_NOFILE too low for the test")
        slow = SlowClients(self.inst.port, SLOW)
        self.addCleanup(slow.close)
        opened = slow.open()
        self.assertGreaterEqual(opened, SLOW * 0.99, "connected %d of %d (failed %d)"
                                % (opened, SLOW, slow.failed_connects))
        lat, statuses, alive = [], [], []
        end = time.monotonic() + HOLD
        next_dribble = time.monotonic()
        while time.monotonic() < end:
            if time.monotonic() >= next_dribble:
                alive.append(slow.dribble())
                next_dribble += DRIBBLE
            status, took = self.timed_health()
            statuses.append(status)
            lat.append(took)
            time.sleep(0.5)
        held = slow.dribble()
        lat.sort()
        print("\n%s: %d slow clients opened, %d still open after %.0f s; %d normal GETs, "
              "p50 %.3f s, max %.3f s" % (FRONT, opened, held, HOLD, len(lat),
                                         lat[len(lat) // 2], lat[-1]))
        self.assertEqual(set(statuses), {200}, "normal requests failed: %r" % statuses)
        if FRONT == "apache":
            # each slow client is cut by mod_reqtimeout (headers within 10-20 s)
            self.assertLess(held, opened * 0.05, "mod_reqtimeout closed too few: %r" % alive)
            self.assertLess(lat[-1], 5.0)
        else:
            # lighttpd keeps every one of them (a descriptor each), and serves
            self.assertGreaterEqual(held, opened * 0.99, "slow clients dropped: %r" % alive)
            self.assertLess(lat[-1], 2.0)

    def test_silent_clients_are_closed_by_the_idle_limit(self):
        silent = SlowClients(self.inst.port, 200, silent=True)
        self.addCleanup(silent.close)
        self.assertGreaterEqual(silent.open(), 198)
        t0 = time.monotonic()
        if FRONT == "apache":
            # Apache's event MPM waits for a new connection's first byte in its
            # listener, without a worker, and closes it after Timeout (not
            # reqtimeout's 10 s): they cost a descriptor each, not service
            self.assertEqual(self.timed_health()[0], 200)
            self.assertEqual(silent.dribble(), len(silent.socks))
            return
        # lighttpd: server.max-read-idle 20
        poll(lambda: silent.dribble() == 0, 40, interval=1.0,
             what="the front server to close 200 silent connections")
        took = time.monotonic() - t0
        print("\n%s: 200 silent clients closed after %.1f s" % (FRONT, took))
        self.assertLess(took, 35.0)
        self.assertEqual(self.timed_health()[0], 200)


class BackendReenableTest(InstanceTestCase):
    """The first healthy answer through the front server follows the new
    daemon's first healthy FastCGI answer within 100 ms with the socket held
    (astromesh-cloud.socket), and without it within lighttpd's one-second
    tick (Apache: at once)."""

    shared_instance = False

    def fcgi_healthy(self, inst):
        try:
            c = FcgiConnection(inst.socket, timeout=2)
        except OSError:
            return False
        try:
            c.begin("GET", "/api/v1/health")
            c.send_body(b"", last=True)
            return c.response()[0] == 200
        except Exception:
            return False
        finally:
            c.close()

    def front_healthy(self, inst):
        try:
            return inst.request("GET", "/api/v1/health", timeout=5)[0] == 200
        except OSError:
            return False

    def measure(self, inst, held=False):
        """Restart the daemon with both probes polling; (direct, front) times
        of the first healthy answer, from the restart."""
        times = {}
        stop = threading.Event()

        def probe(name, fn):
            while not stop.is_set():
                if fn(inst):
                    times.setdefault(name, time.monotonic())
                    return
                time.sleep(0.005)

        inst.kill_daemon(signal.SIGTERM)
        if not held:
            self.assertFalse(self.front_healthy(inst))   # the front has seen it fail
        threads = [threading.Thread(target=probe, args=(n, f), daemon=True)
                   for n, f in (("direct", self.fcgi_healthy), ("front", self.front_healthy))]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        inst.start_daemon()
        for t in threads:
            t.join(30)
        stop.set()
        self.assertIn("direct", times)
        self.assertIn("front", times)
        return times["direct"] - t0, times["front"] - t0

    def test_with_the_socket_held_the_backend_never_goes_away(self):
        inst = self.new_instance(start=False)
        sock = inst.hold_socket()
        self.addCleanup(sock.close)
        inst.start()
        for _ in range(3):
            direct, front = self.measure(inst, held=True)
            print("\n%s, socket held: direct %.3f s, through the front %.3f s"
                  % (FRONT, direct, front))
            self.assertLess(front - direct, 0.1)

    def test_without_the_socket_unit_the_front_retries_soon(self):
        inst = self.new_instance()
        for _ in range(2):
            direct, front = self.measure(inst)
            print("\n%s, own socket: direct %.3f s, through the front %.3f s"
                  % (FRONT, direct, front))
            # lighttpd counts in whole seconds: disable-time 0 re-enables the
            # backend at the first one-second tick after the last failed
            # connect (measured 1.9 s; the default disable-time 1 adds a
            # second); Apache tries the socket again on the next request
            self.assertLess(front - direct, 2.5 if FRONT != "apache" else 0.1)


if __name__ == "__main__":
    main()
