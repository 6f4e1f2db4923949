"""cluster - three Astromesh hosts and a client, each in a network namespace
of its own on this machine, for the replication tests (issue 16).

Topology (names unique per run: "am<pid>" + h1, h2, h3, c, sw):

  am<pid>sw   a Linux bridge br0; one veth port per other namespace
  am<pid>h1   eth0 10.199.N.1/24   daemon + lighttpd on :8080, repmgr on :7001,
  am<pid>h2   eth0 10.199.N.2/24   a fake provider on 127.0.0.1 (its own
  am<pid>h3   eth0 10.199.N.3/24   loopback)
  am<pid>c    eth0 10.199.N.100/24 the client: every request of the tests

N is picked from the pid. The addresses exist only inside these
namespaces, and no namespace has a route to any other address: nothing
leaves them, nothing from the root namespace reaches them. Every veth is
made inside its namespace with its peer put straight into the switch's, so
nothing appears in the root namespace either. Removing a namespace removes
its veths.

Topology builds and removes the namespaces (try/finally and atexit, and a
SIGTERM turned into SystemExit so that both run; leftovers of earlier runs
whose pid is gone are removed first). Cluster adds a Host per host
namespace: a fake provider (NsFakeProvider) and a harness NetnsInstance
(data dir, config, daemon, lighttpd; the secret and OpenAPI checks at
stop), all three with the same auth.jwt_secret and master key, and with
replication=True the replication: section of each (site, url, peers,
cluster secret file). partition(host)/heal(host) set the host's port on the
bridge down/up (the host's eth0 loses its carrier); kill(host) SIGKILLs the
daemon's whole process group (kill_daemon is the same); restart(host) starts it again on the same
data dir. Requests go from the client namespace: host.inst.request(...).

Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2: without them,
Topology.build raises HarnessError with the reason (the tests fail, never
skip).
"""

import atexit
import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import tempfile
import threading

from harness import (BUILDDIR, IP, HarnessError, NetnsConnection, NetnsInstance, merge_config,
                     group_in_step, netns_argv, poll, _die_with_parent)
import fakeprov
from fakeprov import FakeProvider, provider_config

HOSTS = ("h1", "h2", "h3")
CLIENT = "c"
SWITCH = "sw"
HTTP_PORT = 8080
REPL_PORT = 7001
NAME_RE = re.compile(r"^am(\d+)(h\d+|c|sw)$")


def ip(*args, check=True, timeout=30):
    """Run `ip ARGS`; return its output; raise HarnessError on failure."""
    p = subprocess.run([IP] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise HarnessError("ip %s: exit %d: %s" % (" ".join(args), p.returncode,
                                                   (p.stderr or p.stdout).decode().strip()))
    return p.stdout.decode()


def netns_names():
    out = ip("netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def remove_leftovers():
    """Delete the namespaces of earlier runs whose process is gone."""
    for name in netns_names():
        m = NAME_RE.match(name)
        if m and not os.path.exists("/proc/%s" % m.group(1)):
            ip("netns", "del", name, check=False)


class Topology:
    """The five namespaces and the bridge (see the module comment)."""

    def __init__(self, hosts=HOSTS):
        self.tag = "am%d" % os.getpid()
        self.net = "10.199.%d" % (os.getpid() % 250 + 1)
        self.hosts = list(hosts)
        self.made = []
        self.down = set()

    def ns(self, role):
        return self.tag + role

    def addr(self, role):
        return "%s.%d" % (self.net, 100 if role == CLIENT else int(role[1:]))

    def build(self):
        if os.geteuid() != 0:
            raise HarnessError("the cluster tests need root (ip netns add): run as root")
        if not os.access(IP, os.X_OK):
            raise HarnessError("ip not found (%s): apt-get install iproute2" % IP)
        remove_leftovers()
        atexit.register(self.destroy)
        try:
            sw = self.ns(SWITCH)
            for role in [SWITCH, CLIENT] + self.hosts:
                ip("netns", "add", self.ns(role))
                self.made.append(self.ns(role))
                ip("-n", self.ns(role), "link", "set", "lo", "up")
            ip("-n", sw, "link", "add", "br0", "type", "bridge")
            ip("-n", sw, "link", "set", "br0", "up")
            for role in [CLIENT] + self.hosts:
                ns = self.ns(role)
                ip("-n", ns, "link", "add", "eth0", "type", "veth",
                   "peer", "name", role, "netns", sw)
                ip("-n", sw, "link", "set", role, "master", "br0", "up")
                ip("-n", ns, "addr", "add", self.addr(role) + "/24", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def run(self, role, argv, timeout=30):
        """Run argv inside role's namespace; (exit code, output)."""
        p = subprocess.run(netns_argv(self.ns(role), argv), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout)
        return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")

    def partition(self, role):
        """Cut role off the switch: its bridge port down (its eth0 has no
        carrier; its address stays)."""
        ip("-n", self.ns(SWITCH), "link", "set", role, "down")
        self.down.add(role)

    def heal(self, role):
        ip("-n", self.ns(SWITCH), "link", "set", role, "up")
        self.down.discard(role)

    def destroy(self):
        """Remove every namespace this run made (safe to call twice)."""
        made, self.made = self.made, []
        for ns in reversed(made):
            ip("netns", "del", ns, check=False)


def _sigterm(signum, frame):
    raise SystemExit(128 + signum)


class NsFakeProvider(FakeProvider):
    """tests/fake_provider.py inside a network namespace, on its loopback;
    its control API reached from there."""

    def __init__(self, netns, log_dir=None):
        super().__init__(log_dir=log_dir)
        self.netns = netns

    def start(self):
        err = subprocess.DEVNULL
        if self.log_dir:
            fd, self.stderr_path = tempfile.mkstemp(prefix="fake_provider-", suffix=".stderr",
                                                    dir=self.log_dir)
            err = os.fdopen(fd, "ab")
        try:
            self.proc = subprocess.Popen(
                netns_argv(self.netns, [fakeprov.PYTHON, fakeprov.SCRIPT, "--port", "0"]),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                preexec_fn=_die_with_parent(signal.SIGTERM))
        finally:
            if err is not subprocess.DEVNULL:
                err.close()
        self.port = self._read_port()
        poll(self._healthy, fakeprov.START_TIMEOUT, what="fake provider GET /_health")
        return self

    def _http(self, method, path, body=None, timeout=30):
        conn = NetnsConnection(self.netns, "127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            hdrs = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            return resp.status, (json.loads(payload) if payload else None)
        finally:
            conn.close()


class Host:
    """One host namespace: name ("h1"), ns, addr, site ("addr:7001"), url,
    fake (NsFakeProvider), inst (NetnsInstance)."""

    def __init__(self, name, ns, addr):
        self.name, self.ns, self.addr = name, ns, addr
        self.site = "%s:%d" % (addr, REPL_PORT)
        self.url = "http://%s:%d" % (addr, HTTP_PORT)
        self.fake = None
        self.inst = None

    def request(self, *args, **kw):
        return self.inst.request(*args, **kw)

    def health(self):
        return self.inst.health()

    def __repr__(self):
        return "<Host %s %s>" % (self.name, self.addr)


class Cluster:
    """A Topology and one Host per host namespace (see the module comment).

    config: merged over each host's config; replication: add the
    replication: section (False: three independent daemons); repl: merged
    over that section (e.g. {"priority": 0} for every host), per_host:
    {"h1": {...}} merged over one host's whole config; provider_delay_ms:
    every fake provider answers after this long (the bench's 1 s provider)."""

    def __init__(self, config=None, replication=True, repl=None, per_host=None,
                 name="cluster", hosts=HOSTS, provider_delay_ms=None):
        self.topo = Topology(hosts)
        self.config = config
        self.replication = replication
        self.repl = repl
        self.per_host = per_host or {}
        self.name = name
        self.provider_delay_ms = provider_delay_ms
        self.hosts = []
        self.jwt_secret = secrets.token_hex(24)
        self.master_key = secrets.token_bytes(32)
        self.cluster_secret = secrets.token_hex(32).encode()
        # one set for all three instances: a secret sent to any host is
        # looked for in every host's files (they replicate each other's)
        self.secrets = set()
        self.started = False

    def host(self, name):
        return next(h for h in self.hosts if h.name == name)

    def host_config(self, host, inst_dir):
        cfg = {"auth": {"jwt_secret": self.jwt_secret},
               "providers": provider_config(host.fake),
               "limits": {"max_agents": 1000, "requests_per_day": 1000000}}
        if self.replication:
            secret_file = os.path.join(inst_dir, "cluster.secret")
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, self.cluster_secret)
            os.close(fd)
            peers = " ".join("%s=%s" % (h.site, h.url) for h in self.hosts if h is not host)
            cfg["replication"] = merge_config({
                "site": host.site, "url": host.url, "peers": peers, "priority": 100,
                "ack_policy": "quorum", "ack_timeout_ms": 2000, "election_timeout_ms": 2000,
                "read_wait_ms": 2000, "secret_file": secret_file}, self.repl)
        cfg = merge_config(cfg, self.config)
        return merge_config(cfg, self.per_host.get(host.name))

    def start(self):
        """Build the namespaces, start every fake provider and host; wait
        until each answers GET /api/v1/health from the client namespace.
        Stops everything on failure."""
        signal.signal(signal.SIGTERM, _sigterm)
        atexit.register(self.stop)
        self.started = True
        try:
            self.topo.build()
            for name in self.topo.hosts:
                self.hosts.append(Host(name, self.topo.ns(name), self.topo.addr(name)))
            logs = os.path.join(BUILDDIR, "tests", "tmp")
            os.makedirs(logs, exist_ok=True)
            for h in self.hosts:
                h.fake = NsFakeProvider(h.ns, log_dir=logs).start()
                if self.provider_delay_ms:
                    h.fake.control(mode="slow", delay_ms=self.provider_delay_ms)
                h.inst = NetnsInstance(None, name="%s-%s" % (self.name, h.name), netns=h.ns,
                                       addr=h.addr, client_netns=self.topo.ns(CLIENT),
                                       port=HTTP_PORT, master_key=self.master_key)
                h.inst.secrets = self.secrets
                h.inst.jwt_secret = self.jwt_secret
                h.inst.config = merge_config(h.inst.config, self.host_config(h, h.inst.dir))
                h.inst.write_config()
            # all daemons first (a group elects while the fronts start)
            for h in self.hosts:
                h.inst.start_daemon()
            for h in self.hosts:
                h.inst.start_lighttpd()
            for h in self.hosts:
                h.inst.wait_healthy()
        except BaseException:
            self.stop(failed=True)
            raise
        return self

    def stop(self, failed=False):
        """Stop every host and fake provider, remove the namespaces. Raises
        the first host's check failure (sanitizer, secret in clear, an
        answer OpenAPI does not describe) after everything is stopped."""
        if not self.started:
            return
        self.started = False
        errors = []

        def stop_host(h):
            try:
                if h.inst is not None:
                    h.inst.stop(failed=failed)
            except AssertionError as e:
                errors.append("%s: %s" % (h.name, e))
            finally:
                if h.fake is not None:
                    h.fake.stop()
        try:
            for name in list(self.topo.down):
                with contextlib.suppress(HarnessError):
                    self.topo.heal(name)
            # all at once, as a whole group is stopped
            threads = [threading.Thread(target=stop_host, args=(h,)) for h in self.hosts]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            self.topo.destroy()
        if errors:
            raise AssertionError("\n".join(errors))

    # -- faults ---------------------------------------------------------------------
    def partition(self, host):
        self.topo.partition(host.name)

    def heal(self, host):
        self.topo.heal(host.name)

    def kill(self, host, sig=signal.SIGKILL):
        """sig to host's whole daemon process group; waits until all gone."""
        return host.inst.kill_group(sig)

    kill_daemon = kill

    def restart(self, host, wait=True):
        """Start host's daemon again (same config, data dir, lighttpd)."""
        if host.inst.daemon is not None and host.inst.daemon.poll() is None:
            host.inst.kill_group(signal.SIGTERM)
        host.inst.start_daemon()
        if wait:
            host.inst.wait_healthy()
        return host

    # -- roles ----------------------------------------------------------------------
    def roles(self, hosts=None, timeout=5):
        """{host name: health body, or None if it did not answer 200}."""
        out = {}
        for h in hosts or self.hosts:
            try:
                status, _, body = h.inst.request("GET", "/api/v1/health", timeout=timeout)
                out[h.name] = body if status == 200 and isinstance(body, dict) else None
            except (OSError, http.client.HTTPException):
                out[h.name] = None
        return out

    def master(self, hosts=None, timeout=30.0):
        """The Host that every host of hosts (default: all) names as master,
        itself saying role "master", the others "replica"; waits (bounded)."""
        hosts = hosts or self.hosts
        seen = []

        def agreed():
            r = self.roles(hosts)
            seen[:] = [r]
            if any(b is None for b in r.values()):
                return None
            masters = [h for h in hosts if r[h.name].get("role") == "master"]
            if len(masters) != 1:
                return None
            m = masters[0]
            if all(r[h.name].get("master") == m.site for h in hosts) and \
                    all(r[h.name].get("role") == "replica" for h in hosts if h is not m):
                return m
            return None
        try:
            return poll(agreed, timeout, interval=0.1, what="one master all agree on")
        except HarnessError as e:
            raise HarnessError("%s; last health answers: %s" % (
                e, {k: (v and {x: v.get(x) for x in ("role", "master")})
                    for k, v in (seen[0] if seen else {}).items()}))

    def replicas(self, master):
        return [h for h in self.hosts if h is not master]

    def in_step(self, master, timeout=60.0):
        """Wait until every other live host has applied a commit made now
        at master (harness.group_in_step)."""
        group_in_step(master, [h for h in self.replicas(master)
                               if h.inst.daemon is not None and h.inst.daemon.poll() is None],
                      timeout)
