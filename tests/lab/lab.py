#!/usr/bin/python3
"""A real etcd + Patroni + PostgreSQL cluster on loopback addresses, for fener's tests.

Nodes (as in docs: ha, kaptan1, kaptan2) get one loopback address each, NET.1..NET.3:
  ha      etcd, HAProxy (5000-5003, stats socket ha/haproxy.sock)
  kaptan1 etcd, Patroni + PostgreSQL 15
  kaptan2 etcd, Patroni + PostgreSQL 15

Everything the lab starts is tracked and ended by pid, never by process name.
Python 3 standard library only.

    with Lab() as lab:            # starts and waits for a healthy cluster
        lab.leader()              # "kaptan1"
    # every process is gone here

CLI: python3 tests/lab/lab.py up [--dir D] [--net 127.0.1]
"""

import argparse
import atexit
import glob
import ipaddress
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ETCD_BIN = "/usr/bin/etcd"
PATRONI_BIN = "/usr/bin/patroni"
PG_BIN_DIR = "/usr/lib/postgresql/15/bin"
HAPROXY_BIN = "/usr/sbin/haproxy"
RUNUSER = "/usr/sbin/runuser" if os.path.exists("/usr/sbin/runuser") else "/sbin/runuser"

NODES = ("ha", "kaptan1", "kaptan2")
PATRONI_NODES = ("kaptan1", "kaptan2")
SCOPE = "liman"
ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380
PATRONI_PORT, PG_PORT = 8008, 5432
HAPROXY_NODE = "ha"
# HAProxy front ends on the ha node: the agent design (fener's agent-check listener on
# AGENT_PORT of each DB node says up/down) next to the usual Patroni httpchk design.
HAPROXY_PORTS = {"primary": 5000, "replicas": 5001, "primary_httpchk": 5002, "replicas_httpchk": 5003}
AGENT_PORT = 8010
# Patroni 3.0.2 says "master", Patroni 4 "primary"; /cluster says "leader".
LEADER_ROLES = ("leader", "master", "primary", "standby_leader")

# What the control socket can restart (lab.py ctl --dir D restart KIND NODE).
SERVICES = ("etcd", "patroni", "haproxy")

PIDS_HEADER = "# fener-lab pids v1"
TMP_PREFIX = "fener-lab-"

# Our own HTTP calls go to loopback only: never through a proxy from the environment.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LabError(RuntimeError):
    """The lab could not reach or keep the state asked for."""


class NotYet:
    """A falsy poll result that still says what was seen (wait_for reports it on timeout)."""

    def __init__(self, seen):
        self.seen = seen

    def __bool__(self):
        return False

    def __repr__(self):
        return str(self.seen)


# ---------------------------------------------------------------- /proc helpers

def proc_cmdline(pid):
    """Command line of pid as a list ([] if gone, a zombie or unreadable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def proc_state(pid):
    """One-letter state from /proc/PID/stat (R, S, T, Z, ...) or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: the state follows the LAST ')'.
    return data[data.rindex(")") + 2]


def proc_starttime(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(")") + 2:].split()[19])


def proc_comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def pid_alive(pid):
    """True while pid exists and is not a zombie (orphans reparented to a PID 1 that
    does not reap would otherwise look alive forever)."""
    return proc_state(pid) not in (None, "Z")


def proc_children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        pass
    # Kernels without CONFIG_PROC_CHILDREN: scan every process's parent pid.
    kids = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                data = f.read()
            if int(data[data.rindex(")") + 2:].split()[1]) == pid:
                kids.append(int(stat.split("/")[2]))
        except (OSError, ValueError):
            continue
    return kids


def cmdline_mentions(pid, text):
    return any(text in arg for arg in proc_cmdline(pid))


def _send(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def terminate_pids(pids, timeout=30.0, sig=signal.SIGTERM, reap=None):
    """End pids: SIGCONT (a stopped process cannot act on SIGTERM), sig, wait until the
    deadline, then SIGKILL. reap(pid) is called while waiting so our own children do not
    linger as zombies. Returns the pids still alive at the end (should be none)."""
    def gone(p):
        if pid_alive(p):
            return False
        if reap:
            reap(p)  # checked after pid_alive, so an exit in between still gets reaped
        return True

    pids = [p for p in pids if not gone(p)]
    for p in pids:
        _send(p, signal.SIGCONT)
        _send(p, sig)
    for final in (False, True):
        deadline = time.monotonic() + (timeout if not final else 10.0)
        while time.monotonic() < deadline:
            pids = [p for p in pids if not gone(p)]
            if not pids:
                return []
            time.sleep(0.1)
        if not final:
            for p in pids:
                _send(p, signal.SIGKILL)
    return pids


def http_json(url, timeout=2.0):
    """GET url and parse JSON. Non-2xx answers (Patroni's 503) are still parsed.
    Raises OSError/ValueError when nothing usable came back."""
    try:
        with _http.open(url, timeout=timeout) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        body = e.read()
    return json.loads(body)


def agent_query(host, port, send, timeout=2.0):
    """One HAProxy agent-check exchange: sends the agent-send word, reads to the close and
    returns the stripped line ("" when fener sent none). Raises OSError as the socket does."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(send.encode() + b"\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace").strip()


def tail(path, lines=25):
    """Last lines of a log, preceded by its last error lines (a Python traceback at the
    end of a Patroni log would otherwise push the actual cause out of view)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            text = f.read().decode(errors="replace").splitlines()
    except OSError as e:
        return f"(no log: {e})"
    last = text[-lines:]
    errors = [ln for ln in text[:-lines] if re.search(r"\b(ERROR|FATAL|PANIC|CRITICAL)\b|^[A-Za-z]+Error: ", ln)]
    head = ["(earlier errors)"] + errors[-8:] + ["(last lines)"] if errors else []
    return "\n".join(head + last)


# ---------------------------------------------------------------- YAML writer
# Block-style YAML, plain scalars where unambiguous, so simple parsers (and people) can
# read patroni.yml exactly like a hand-written one.

_PLAIN = re.compile(r"^[A-Za-z0-9_./][A-Za-z0-9_./:,@ -]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"}


def _yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    looks_number = re.fullmatch(r"[-+]?[0-9._]+([eE][-+]?[0-9]+)?", s) is not None
    if _PLAIN.match(s) and not s.endswith(" ") and s.lower() not in _YAML_WORDS \
            and not looks_number and ": " not in s and " #" not in s:
        return s
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj, indent=0):
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{k}:")
                out.append(to_yaml(v, indent + 2))
            elif isinstance(v, dict):
                out.append(f"{pad}{k}: {{}}")
            elif isinstance(v, list):
                out.append(f"{pad}{k}: []")
            else:
                out.append(f"{pad}{k}: {_yaml_scalar(v)}")
    else:
        for v in obj:
            if isinstance(v, dict):
                inner = to_yaml(v, indent + 2).splitlines()
                out.append(f"{pad}- {inner[0].lstrip()}")
                out.extend(inner[1:])
            else:
                out.append(f"{pad}- {_yaml_scalar(v)}")
    return "\n".join(out)


# ---------------------------------------------------------------- the lab

class Lab:
    """A 3-member etcd + 2-node Patroni cluster on NET.1 (ha), NET.2 (kaptan1), NET.3 (kaptan2)."""

    def __init__(self, net=None, lab_dir=None, rest_user="fener", rest_password=None, haproxy=True):
        self.net = net or os.environ.get("FENER_LAB_NET") or "127.0.1"
        self.addr = {}
        for i, node in enumerate(NODES, start=1):
            a = f"{self.net}.{i}"
            try:
                ok = ipaddress.ip_address(a) in ipaddress.ip_network("127.0.0.0/8")
            except ValueError:
                ok = False
            if not ok or self.net.count(".") != 2:
                raise LabError(f"net {self.net!r}: need three octets inside 127.0.0.0/8, e.g. 127.0.1")
            self.addr[node] = a
        self._given_dir = lab_dir
        self.dir = None
        self.rest_auth = (rest_user, rest_password or secrets.token_hex(8))
        self.pg_passwords = {"superuser": secrets.token_hex(8),
                             "replication": secrets.token_hex(8),
                             "rewind": secrets.token_hex(8)}
        self.keep = os.environ.get("FENER_LAB_KEEP") == "1"
        self._created_dir = False
        self._procs = {}         # (kind, node) -> latest Popen (etcd or runuser)
        self._popens = []        # every Popen ever made
        self._patroni_pid = {}   # node -> pid of the patroni process (runuser's child)
        self.with_haproxy = haproxy  # HAProxy on the ha node (see haproxy_settings)
        self._started = []       # (kind, node, pid) of everything ever started/seen
        self._started_lock = threading.Lock()
        self._stopping = False
        self._stopped = False
        self._failed = False
        self._critical = 0       # >0 while a Popen and its recording must not be split
        self._pending_signal = None
        self._old_handlers = {}
        self.timings = {}

    # ---------------------------------------------------------------- paths

    def address(self, node):
        return self.addr[node]

    @staticmethod
    def postgres_uid():
        return pwd.getpwnam("postgres").pw_uid

    @staticmethod
    def postgres_gid():
        return pwd.getpwnam("postgres").pw_gid

    def node_dir(self, node):
        return os.path.join(self.dir, node)

    def etcd_env_file(self, node):
        return os.path.join(self.dir, node, "etcd.conf")

    def etcd_data_dir(self, node):
        return os.path.join(self.dir, node, "etcd")

    def etcd_log(self, node):
        return os.path.join(self.dir, node, "etcd.log")

    def patroni_config(self, node):
        return os.path.join(self.dir, node, "patroni.yml")

    def patroni_log(self, node):
        return os.path.join(self.dir, node, "patroni.log")

    def data_dir(self, node):
        return os.path.join(self.dir, node, "data")

    def run_dir(self, node):
        """postgres-owned: unix sockets and pgpass."""
        return os.path.join(self.dir, node, "run")

    def haproxy_config(self):
        return os.path.join(self.dir, HAPROXY_NODE, "haproxy.cfg")

    def haproxy_socket(self):
        """HAProxy's stats socket (level admin): `show servers state`, `disable server`, ..."""
        return os.path.join(self.dir, HAPROXY_NODE, "haproxy.sock")

    def haproxy_log(self):
        return os.path.join(self.dir, HAPROXY_NODE, "haproxy.log")

    def haproxy_port(self, name):
        """Port of the HAProxy front end name (primary, replicas, primary_httpchk,
        replicas_httpchk) on the ha node's address."""
        if name not in HAPROXY_PORTS:
            raise LabError(f"unknown HAProxy front end {name!r}; expected one of {tuple(HAPROXY_PORTS)}")
        return HAPROXY_PORTS[name]

    def rest_url(self, node, path=""):
        return f"http://{self.addr[node]}:{PATRONI_PORT}{path}"

    def etcd_url(self, node, path=""):
        return f"http://{self.addr[node]}:{ETCD_CLIENT_PORT}{path}"

    @property
    def pids_file(self):
        return os.path.join(self.dir, "pids")

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop(failed=exc_type is not None)
        return False

    def start(self, timeout=180.0):
        """Prepare the lab dir, start etcd x3, kaptan1 (leader), kaptan2 (streaming replica)."""
        if self._stopped or self.dir:
            raise LabError("a Lab object can be started once; make a new one")
        t0 = time.monotonic()
        try:
            self._install_signal_handlers()
            atexit.register(self.stop)
            cleanup_stale_labs(extra_dirs=[self._given_dir] if self._given_dir else [])
            self.timings["stale_cleanup"] = time.monotonic() - t0
            self._check_ports_free()
            self._make_dir()
            self._write_configs()
            deadline = t0 + timeout

            for node in NODES:
                self.start_etcd(node, wait=False)
            self.wait_for(lambda: self._etcd_health("ha"), min(60.0, deadline - time.monotonic()),
                          f"etcd /health on ha ({self.etcd_url('ha', '/health')})",
                          logs=[self.etcd_log(n) for n in NODES], procs=[("etcd", n) for n in NODES])
            self.timings["etcd_healthy"] = time.monotonic() - t0
            if self.with_haproxy:
                # Independent of the cluster: its servers are simply DOWN until PostgreSQL runs.
                self.start_haproxy()

            self.start_patroni("kaptan1", wait=False)
            self.wait_for(lambda: self._is_running_leader("kaptan1"), deadline - time.monotonic(),
                          "kaptan1 to be the running leader", logs=[self.patroni_log("kaptan1")],
                          procs=[("patroni", "kaptan1")])
            self._record_postmaster("kaptan1")
            self.timings["leader_running"] = time.monotonic() - t0

            self.start_patroni("kaptan2", wait=False)
            self.wait_for(lambda: self._replica_streaming("kaptan2"), deadline - time.monotonic(),
                          "kaptan2 to be a streaming replica",
                          logs=[self.patroni_log("kaptan2"), self.patroni_log("kaptan1")],
                          procs=[("patroni", "kaptan2"), ("patroni", "kaptan1")])
            self._record_postmaster("kaptan2")
            self.timings["healthy"] = time.monotonic() - t0
            self.write_summary()
        except BaseException:
            self.stop(failed=True)
            raise
        return self

    # ---------------------------------------------------------------- control socket

    def control_socket(self):
        return os.path.join(self.dir, "ctl.sock")

    def serve_control(self):
        """Serves `lab.py ctl --dir D restart {etcd|patroni|haproxy} NODE` on a unix socket in the lab
        dir: fener's service_restart runs that command where a real node runs systemctl.
        The lab itself restarts the process, so it keeps owning (and later ending) every pid."""
        if getattr(self, "_ctl", None):
            return self.control_socket()
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(self.control_socket())
        srv.listen(8)
        self._ctl = srv
        self._ctl_lock = threading.Lock()
        self.restarts = []  # (kind, node, monotonic time) of every restart served

        def handle(conn):
            with conn:
                conn.settimeout(120)
                try:
                    words = conn.makefile().readline().split()
                    if len(words) != 3 or words[0] != "restart" or words[1] not in SERVICES:
                        raise LabError(f"expected: restart etcd|patroni|haproxy NODE, got {words}")
                    self.restart_service(words[1], words[2])
                    conn.sendall(b"ok\n")
                except Exception as e:  # report every failure to the caller
                    conn.sendall(f"error: {e}\n".encode())

        def serve():
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return  # closed by stop()
                threading.Thread(target=handle, args=(conn,), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        return self.control_socket()

    def restart_service(self, kind, node):
        with self._ctl_lock:
            self.restarts.append((kind, node, time.monotonic()))
            if kind == "etcd":
                if self.etcd_pid(node):
                    self.stop_etcd(node)
                self.start_etcd(node, wait=False)
            elif kind == "haproxy":
                if node != HAPROXY_NODE:
                    raise LabError(f"HAProxy runs on {HAPROXY_NODE}, not {node!r}")
                if self.haproxy_pid():
                    self.stop_haproxy()
                self.start_haproxy()  # back when the stats socket answers, as systemd's notify
            else:
                if self.patroni_pid(node):
                    self.stop_patroni(node)
                self.start_patroni(node, wait=False)
                # As `systemctl restart` of a notify unit: back when the REST API answers.
                self.wait_for(lambda: self.patroni_state(node) is not None or NotYet("no answer"),
                              60, f"Patroni REST API of {node}")

    def stop(self, failed=False):
        """End every process the lab started (by pid), then remove the lab dir unless kept.
        Safe to call more than once, from atexit and from signal handlers."""
        self._failed = self._failed or bool(failed)
        if self._stopping or self._stopped:
            return
        self._stopping = True
        if getattr(self, "_ctl", None):
            self._ctl.close()
        t0 = time.monotonic()
        leftovers = []
        try:
            if self.dir:
                leftovers = self._end_everything()
        finally:
            self._stopped = True
            self._stopping = False
            self.timings["teardown_processes"] = time.monotonic() - t0
            try:
                atexit.unregister(self.stop)
            except Exception:
                pass
            self._restore_signal_handlers()
        if leftovers:
            self._failed = True
        if self.dir and os.path.isdir(self.dir):
            if self.keep and self._failed:
                with open(os.path.join(self.dir, "KEPT"), "w") as f:
                    f.write("kept by FENER_LAB_KEEP=1 after a failure; later runs leave it alone\n")
                print(f"fener lab: FENER_LAB_KEEP=1, keeping {self.dir}", file=sys.stderr)
            else:
                self._remove_dir()  # slow-ish: PostgreSQL's fsynced files on ext4 with discard
        self.timings["teardown"] = time.monotonic() - t0
        if leftovers:
            raise LabError(f"processes still alive after teardown: {leftovers}")

    def adopt(self, kind, node, pid):
        """Record a process started by the test (fener itself): teardown ends it first, by
        pid, before the cluster it watches goes away."""
        self._record(kind, node, pid)

    def _end_everything(self):
        # Watchers first (fener), so that nothing tries to heal the cluster while it stops.
        watchers = [p for k, _, p in self.started() if k == "fener" and pid_alive(p)]
        terminate_pids(watchers, timeout=40.0, reap=self._reap)
        # Then the proxy: clients stop reaching the databases before they go away.
        if self.haproxy_pid():
            terminate_pids([self.haproxy_pid()], timeout=20.0, reap=self._reap)
        # Patroni first, all nodes at once: each stops its own PostgreSQL and needs etcd
        # for that; stopping them together avoids a pointless failover to the other node.
        t0 = time.monotonic()
        patronis = [p for p in map(self.patroni_pid, PATRONI_NODES) if p]
        terminate_pids(patronis, timeout=60.0, reap=self._reap)
        self.timings["teardown_patroni"] = time.monotonic() - t0
        # runuser exits when its patroni child exits; it is never signalled itself because
        # on SIGTERM it kills its child with SIGKILL two seconds later.
        runusers = [p.pid for (k, _), p in self._procs.items() if k == "runuser"]
        terminate_pids(runusers, timeout=10.0, sig=0, reap=self._reap)
        # PostgreSQL runs detached from Patroni (own session, reparented): if Patroni did not
        # stop it (Patroni killed, or stuck), end it by the pid in postmaster.pid.
        for node in PATRONI_NODES:
            self._end_postmaster(node, signal.SIGTERM, timeout=30.0)  # leftovers counted below
        # etcd one member at a time: a raft leader that gets SIGTERM hands leadership to a
        # peer first; if that peer is stopping too, the handover times out (~7 s).
        for (k, _), p in self._procs.items():
            if k == "etcd":
                terminate_pids([p.pid], timeout=30.0, reap=self._reap)
        # Safety net: anything still running from the lab dir (e.g. started by hand from a
        # kept config) is ended by pid too.
        stray = [p for p in lab_processes(self.dir) if pid_alive(p)]
        terminate_pids(stray, timeout=20.0, reap=self._reap)
        for p in self._popens:
            p.poll()
        # Every process the lab starts names the lab dir in its command line; checking that
        # keeps a reused pid from being reported as ours.
        left = {p for _, _, p in self.started() if pid_alive(p) and cmdline_mentions(p, self.dir)}
        return sorted(left | {p for p in lab_processes(self.dir) if pid_alive(p)})

    def _make_dir(self):
        if self._given_dir:
            self.dir = os.path.abspath(self._given_dir)
            if os.path.isdir(self.dir) and os.listdir(self.dir):
                # Only wipe a directory that a previous lab run wrote (its processes were
                # ended by cleanup_stale_labs above); never an arbitrary one.
                if not _is_lab_dir(self.dir):
                    raise LabError(f"{self.dir} is not empty and is not a fener lab dir")
                if _lab_owner_alive(self.dir):
                    raise LabError(f"{self.dir} belongs to a running lab ({_read_pids(self.dir)[0]})")
                for entry in os.listdir(self.dir):
                    p = os.path.join(self.dir, entry)
                    shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
            elif not os.path.isdir(self.dir):
                os.makedirs(self.dir)
                self._created_dir = True
        else:
            self.dir = tempfile.mkdtemp(prefix=TMP_PREFIX)
            self._created_dir = True
        os.chmod(self.dir, 0o755)  # postgres must traverse it to reach its own dirs
        with open(self.pids_file, "w") as f:
            # The owner line lets a later run tell a crashed lab from a live one.
            f.write(f"{PIDS_HEADER}\nowner - {os.getpid()} {proc_starttime(os.getpid())}\n")

    def _remove_dir(self):
        if self._created_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            for entry in list(NODES) + ["pids", "lab.json"]:
                p = os.path.join(self.dir, entry)
                if os.path.isdir(p):
                    shutil.rmtree(p, ignore_errors=True)
                elif os.path.exists(p):
                    os.unlink(p)

    def _check_ports_free(self):
        wanted = [(self.addr[n], p) for n in NODES for p in (ETCD_CLIENT_PORT, ETCD_PEER_PORT)]
        wanted += [(self.addr[n], p) for n in PATRONI_NODES for p in (PATRONI_PORT, PG_PORT)]
        if self.with_haproxy:
            wanted += [(self.addr[HAPROXY_NODE], p) for p in HAPROXY_PORTS.values()]
        busy = []
        for addr, port in wanted:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # SO_REUSEADDR like the real servers: TIME_WAIT leftovers are not "busy",
            # but any listener on the address (or the wildcard) is.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((addr, port))
            except OSError as e:
                busy.append(f"{addr}:{port} ({e.strerror})")
            finally:
                s.close()
        if busy:
            live = [d for d in _lab_dirs() if _lab_owner_alive(d)]
            hint = f"; running labs: {live}" if live else ""
            raise LabError("ports needed by the lab are in use: " + ", ".join(busy) +
                           hint + " (use another --net / FENER_LAB_NET, e.g. 127.0.2)")

    # ---------------------------------------------------------------- configs

    def etcd_env(self, node):
        """The settings etcd runs with, in the setup guide's environment-file form."""
        a = self.addr[node]
        cluster = ",".join(f"{n}=http://{self.addr[n]}:{ETCD_PEER_PORT}" for n in NODES)
        return {
            "ETCD_NAME": node,
            "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"http://{a}:{ETCD_PEER_PORT}",
            "ETCD_LISTEN_PEER_URLS": f"http://{a}:{ETCD_PEER_PORT}",
            "ETCD_LISTEN_CLIENT_URLS": f"http://{a}:{ETCD_CLIENT_PORT}",
            "ETCD_ADVERTISE_CLIENT_URLS": f"http://{a}:{ETCD_CLIENT_PORT}",
            "ETCD_INITIAL_CLUSTER_TOKEN": "etcd-cluster-1",
            "ETCD_INITIAL_CLUSTER": cluster,
            "ETCD_INITIAL_CLUSTER_STATE": "new",
            "ETCD_DATA_DIR": self.etcd_data_dir(node),
            "ETCD_ENABLE_V2": "true",
        }

    def patroni_settings(self, node):
        a = self.addr[node]
        hba = ["local all postgres trust",
               "host replication replicator 127.0.0.0/8 md5",
               "host all all 127.0.0.0/8 md5"]
        return {
            "scope": SCOPE,
            "namespace": "/service/",
            "name": node,
            "restapi": {
                "listen": f"{a}:{PATRONI_PORT}",
                "connect_address": f"{a}:{PATRONI_PORT}",
                "authentication": {"username": self.rest_auth[0], "password": self.rest_auth[1]},
            },
            "etcd": {"hosts": ",".join(f"{self.addr[n]}:{ETCD_CLIENT_PORT}" for n in NODES)},
            "bootstrap": {
                "dcs": {
                    "ttl": 30,
                    "loop_wait": 10,
                    "retry_timeout": 10,
                    "maximum_lag_on_failover": 1048576,
                    "postgresql": {"use_pg_rewind": True, "use_slots": True,
                                   "parameters": {"max_connections": 100, "wal_level": "replica",
                                                  "hot_standby": "on", "max_wal_senders": 10,
                                                  "max_replication_slots": 10}},
                },
                "initdb": [{"encoding": "UTF8"}, "data-checksums"],
            },
            "postgresql": {
                "listen": f"{a}:{PG_PORT}",
                "connect_address": f"{a}:{PG_PORT}",
                "data_dir": self.data_dir(node),
                "bin_dir": PG_BIN_DIR,
                "pgpass": os.path.join(self.run_dir(node), "pgpass"),
                "authentication": {
                    "replication": {"username": "replicator", "password": self.pg_passwords["replication"]},
                    "superuser": {"username": "postgres", "password": self.pg_passwords["superuser"]},
                    "rewind": {"username": "rewind_user", "password": self.pg_passwords["rewind"]},
                },
                "parameters": {"unix_socket_directories": self.run_dir(node),
                               "shared_buffers": "32MB"},
                "pg_hba": hba,
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }

    def haproxy_cfg_text(self):
        """haproxy.cfg of the ha node: the agent design (primary, replicas) beside the
        usual Patroni httpchk design (primary_httpchk, replicas_httpchk) for comparison."""
        ha = self.addr[HAPROXY_NODE]
        lines = [
            "# fener lab: HAProxy on the ha node",
            "global",
            f"    stats socket {self.haproxy_socket()} mode 600 level admin",
            "    stats timeout 30s",
            # Foreground (-db): the log goes to stdout, i.e. haproxy.log of the lab.
            "    log stdout format raw local0 info",
            "",
            "defaults",
            "    mode tcp",
            "    log global",
            "    option tcplog",
            "    timeout connect 2s",
            # psql sessions may idle for a long time.
            "    timeout client 30m",
            "    timeout server 30m",
            "    timeout check 1s",
        ]
        for role in ("primary", "replicas"):
            send = "primary" if role == "primary" else "replica"
            lines += ["", f"listen {role}", f"    bind {ha}:{HAPROXY_PORTS[role]}",
                      # A plain TCP check on 5432; the agent on 8010 says whether this node
                      # may take this kind of traffic. An unreachable agent changes nothing.
                      "    default-server inter 1s downinter 250ms fall 2 rise 1 on-marked-down shutdown-sessions"]
            for n in PATRONI_NODES:
                a = self.addr[n]
                lines.append(f"    server {n} {a}:{PG_PORT} check agent-check agent-addr {a} "
                             f"agent-port {AGENT_PORT} agent-inter 250ms agent-send \"{send}\\n\"")
        for role, path in (("primary_httpchk", "/primary"), ("replicas_httpchk", "/replica")):
            lines += ["", f"listen {role}", f"    bind {ha}:{HAPROXY_PORTS[role]}",
                      f"    option httpchk OPTIONS {path}",
                      "    http-check expect status 200",
                      "    default-server inter 1s fall 3 rise 2 on-marked-down shutdown-sessions"]
            for n in PATRONI_NODES:
                lines.append(f"    server {n} {self.addr[n]}:{PG_PORT} maxconn 100 check port {PATRONI_PORT}")
        return "\n".join(lines) + "\n"

    def _write_configs(self):
        pg = pwd.getpwnam("postgres")
        for node in NODES:
            os.makedirs(self.node_dir(node), mode=0o755, exist_ok=True)
            with open(self.etcd_env_file(node), "w") as f:
                f.write("# etcd settings of this lab member; etcd runs with exactly these (as flags)\n")
                f.writelines(f'{k}="{v}"\n' for k, v in self.etcd_env(node).items())
        for node in PATRONI_NODES:
            # postgres owns the node dir: Patroni renames a failed data dir to data.failed.
            os.chown(self.node_dir(node), pg.pw_uid, pg.pw_gid)
            # Created here owned by postgres (0700 is what PostgreSQL demands): Patroni
            # bootstraps or base-backups into an empty existing data dir.
            for d, mode in ((self.data_dir(node), 0o700), (self.run_dir(node), 0o755)):
                os.makedirs(d, exist_ok=True)
                os.chown(d, pg.pw_uid, pg.pw_gid)
                os.chmod(d, mode)
            with open(self.patroni_config(node), "w") as f:
                f.write(f"# fener lab: Patroni for {node}\n")
                f.write(to_yaml(self.patroni_settings(node)) + "\n")
            # It holds the REST and PostgreSQL passwords: Patroni (postgres) reads it
            # through its group, nobody else may (fener's config_lint warns otherwise).
            os.chown(self.patroni_config(node), 0, pg.pw_gid)
            os.chmod(self.patroni_config(node), 0o640)
        if self.with_haproxy:
            with open(self.haproxy_config(), "w") as f:
                f.write(self.haproxy_cfg_text())

    def summary(self):
        return {
            "dir": self.dir,
            "net": self.net,
            "scope": SCOPE,
            "owner_pid": os.getpid(),
            "leader": self.leader(),
            "rest_api": {"username": self.rest_auth[0], "password": self.rest_auth[1]},
            "postgres": {"superuser": ["postgres", self.pg_passwords["superuser"]],
                         "replication": ["replicator", self.pg_passwords["replication"]]},
            "nodes": {
                n: {
                    "address": self.addr[n],
                    "etcd_client_url": self.etcd_url(n),
                    "etcd_env_file": self.etcd_env_file(n),
                    "etcd_data_dir": self.etcd_data_dir(n),
                    "etcd_log": self.etcd_log(n),
                    **({"patroni_config": self.patroni_config(n),
                        "patroni_rest_url": self.rest_url(n),
                        "patroni_log": self.patroni_log(n),
                        "data_dir": self.data_dir(n),
                        "postgres_port": PG_PORT,
                        "unix_socket_dir": self.run_dir(n)} if n in PATRONI_NODES else {}),
                } for n in NODES
            },
            **({"haproxy": {"node": HAPROXY_NODE,
                            "config": self.haproxy_config(),
                            "socket": self.haproxy_socket(),
                            "log": self.haproxy_log(),
                            "ports": dict(HAPROXY_PORTS)}} if self.with_haproxy else {}),
        }

    def write_summary(self):
        path = os.path.join(self.dir, "lab.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.summary(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)  # readers never see half a file
        return path

    # ---------------------------------------------------------------- process bookkeeping

    def _record(self, kind, node, pid):
        with self._started_lock:
            if (kind, node, pid) in self._started:
                return
            self._started.append((kind, node, pid))
            with open(self.pids_file, "a") as f:
                f.write(f"{kind} {node} {pid}\n")

    def started(self):
        """(kind, node, pid) of every process the lab started or adopted (postmasters)."""
        with self._started_lock:
            return list(self._started)

    def started_pids(self):
        return [p for _, _, p in self.started()]

    def _reap(self, pid):
        for p in self._popens:
            if p.pid == pid:
                p.poll()

    def _spawn(self, kind, node, argv, log, env):
        # A signal handler must not run between Popen and recording the pid, or teardown
        # would miss that process: defer it (see _on_signal).
        self._critical += 1
        try:
            logf = open(log, "ab")
            try:
                # Own session: a Ctrl-C in the terminal reaches only us, and teardown
                # then stops things in order (Patroni before etcd).
                p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                     env=env, start_new_session=True, close_fds=True)
            finally:
                logf.close()
            self._procs[(kind, node)] = p
            self._popens.append(p)  # also the replaced ones, so all get reaped
            self._record(kind, node, p.pid)
        finally:
            self._critical -= 1
        if not self._critical and self._pending_signal is not None:
            signum, self._pending_signal = self._pending_signal, None
            self._on_signal(signum, None)
        return p

    @staticmethod
    def _child_env(drop_prefixes):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(drop_prefixes) and not k.lower().endswith("_proxy")}
        env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        env["LC_ALL"] = env["LANG"] = "C.UTF-8"
        return env

    def _check_node(self, node, patroni=False):
        allowed = PATRONI_NODES if patroni else NODES
        if node not in allowed:
            raise LabError(f"unknown node {node!r}; expected one of {allowed}")

    # ---------------------------------------------------------------- etcd

    def etcd_pid(self, node):
        p = self._procs.get(("etcd", node))
        return p.pid if p and p.poll() is None else None

    def start_etcd(self, node, wait=True, timeout=30.0):
        """Start (or restart, same data dir) the etcd member of node."""
        self._check_node(node)
        if self.etcd_pid(node):
            raise LabError(f"etcd on {node} is already running (pid {self.etcd_pid(node)})")
        # Flags built from the same dict as etcd.conf, so the file describes what runs, and
        # the data dir appears in the command line (pid ownership check on cleanup).
        argv = [ETCD_BIN] + [f"--{k[5:].lower().replace('_', '-')}={v}"
                             for k, v in self.etcd_env(node).items()]
        self._spawn("etcd", node, argv, self.etcd_log(node), self._child_env(("ETCD",)))
        if wait:
            self.wait_for(lambda: self._etcd_health(node), timeout, f"etcd /health on {node}",
                          logs=[self.etcd_log(node)], procs=[("etcd", node)])

    def stop_etcd(self, node, sig=signal.SIGTERM, timeout=30.0):
        """Stop the etcd member of node by pid and wait until it has exited."""
        self._check_node(node)
        pid = self.etcd_pid(node)
        if pid is None:
            raise LabError(f"etcd on {node} is not running")
        left = terminate_pids([pid], timeout=timeout, sig=sig, reap=self._reap)
        if left:
            raise LabError(f"etcd on {node} (pid {pid}) did not exit")
        return pid

    def etcd_health(self, node):
        """True if the member answers GET /health with health "true"."""
        return bool(self._etcd_health(node))

    def _etcd_health(self, node):
        try:
            h = http_json(self.etcd_url(node, "/health"))
        except (OSError, ValueError) as e:
            return NotYet(f"{node}: {e}")
        return True if h.get("health") == "true" else NotYet(f"{node}: {h}")

    def etcd_leader(self):
        """Name of the etcd raft leader (from each member's /v2/stats/self), or None."""
        for node in NODES:
            if not self.etcd_pid(node):
                continue
            try:
                st = http_json(self.etcd_url(node, "/v2/stats/self"), timeout=1.0)
            except (OSError, ValueError):
                continue
            if st.get("state") == "StateLeader":
                return st.get("name")
        return None

    def etcd_members(self, node="ha"):
        """Member names from the v2 members API of node."""
        data = http_json(self.etcd_url(node, "/v2/members"))
        return sorted(m.get("name", "") for m in data.get("members", []))

    # ---------------------------------------------------------------- HAProxy

    def haproxy_pid(self):
        p = self._procs.get(("haproxy", HAPROXY_NODE))
        return p.pid if p and p.poll() is None else None

    def start_haproxy(self, wait=True, timeout=20.0):
        """Start HAProxy in the foreground (-db, no daemon, no master: the pid is HAProxy
        itself); wait=True waits until the stats socket answers."""
        if not self.with_haproxy:
            raise LabError("this lab runs without HAProxy (Lab(haproxy=False))")
        if self.haproxy_pid():
            raise LabError(f"HAProxy is already running (pid {self.haproxy_pid()})")
        # A socket file left by a killed HAProxy would make the wait below pass on nothing.
        if os.path.exists(self.haproxy_socket()):
            os.unlink(self.haproxy_socket())
        argv = [HAPROXY_BIN, "-db", "-f", self.haproxy_config()]
        self._spawn("haproxy", HAPROXY_NODE, argv, self.haproxy_log(), self._child_env(("HAPROXY",)))
        if wait:
            self.wait_for(lambda: "Pid:" in self.haproxy_cmd("show info"), timeout,
                          f"HAProxy stats socket {self.haproxy_socket()}",
                          logs=[self.haproxy_log()], procs=[("haproxy", HAPROXY_NODE)])
        return self.haproxy_pid()

    def stop_haproxy(self, sig=signal.SIGTERM, timeout=20.0):
        """Stop HAProxy by pid (SIGTERM: hard stop, sessions closed) and wait for its exit."""
        pid = self.haproxy_pid()
        if pid is None:
            raise LabError("HAProxy is not running")
        if terminate_pids([pid], timeout=timeout, sig=sig, reap=self._reap):
            raise LabError(f"HAProxy (pid {pid}) did not exit")
        return pid

    def haproxy_cmd(self, cmd, timeout=5.0):
        """Send one command to HAProxy's stats socket and return its whole answer as text.
        Raises OSError if HAProxy does not listen there."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(timeout)
            c.connect(self.haproxy_socket())
            c.sendall(cmd.rstrip("\n").encode() + b"\n")
            chunks = []
            while True:  # without `prompt`, HAProxy answers one command and closes
                data = c.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    def haproxy_servers(self):
        """{(backend, server): {"op_state": int, "admin_state": int}} from `show servers state`
        (op_state 2 = UP, 0 = DOWN; admin_state 0 = ready)."""
        out = {}
        for line in self.haproxy_cmd("show servers state").splitlines():
            f = line.split()
            if len(f) > 6 and not line.startswith("#") and f[0].isdigit():
                out[(f[1], f[3])] = {"op_state": int(f[5]), "admin_state": int(f[6])}
        return out

    # ---------------------------------------------------------------- Patroni

    def patroni_pid(self, node):
        """pid of node's Patroni if it runs (checked against its command line: the pid
        belongs to runuser's child, which we do not reap, so it could be reused)."""
        pid = self._patroni_pid.get(node)
        return pid if pid and pid_alive(pid) and cmdline_mentions(pid, self.patroni_config(node)) else None

    def start_patroni(self, node, wait=True, timeout=90.0):
        """Start Patroni of node as postgres (runuser); wait=True waits for state running."""
        self._check_node(node, patroni=True)
        if self.patroni_pid(node):
            raise LabError(f"Patroni on {node} is already running (pid {self.patroni_pid(node)})")
        argv = [RUNUSER, "-u", "postgres", "--", PATRONI_BIN, self.patroni_config(node)]
        # PATRONI_* would override the config file; PG* would redirect its connections.
        env = self._child_env(("PATRONI_", "PG", "ETCD"))
        runuser = self._spawn("runuser", node, argv, self.patroni_log(node), env)
        # runuser forks and waits (it does not exec): Patroni is its child. Signals must go
        # to that child; wait until it has exec'd Patroni (before exec it is still runuser).
        cfg = self.patroni_config(node)

        def exec_done():
            if runuser.poll() is not None:
                raise LabError(f"runuser for {node} exited with {runuser.returncode}:\n"
                               f"{tail(self.patroni_log(node))}")
            for kid in proc_children(runuser.pid):
                cmd = proc_cmdline(kid)
                if cmd and os.path.basename(cmd[0]) != "runuser" and cfg in cmd:
                    return kid
            return NotYet(f"children of runuser {runuser.pid}: {proc_children(runuser.pid)}")

        pid = self.wait_for(exec_done, 10.0, f"Patroni process of {node}")
        self._patroni_pid[node] = pid
        self._record("patroni", node, pid)
        if wait:
            self.wait_for(lambda: self._patroni_running(node), timeout, f"Patroni {node} running",
                          logs=[self.patroni_log(node)], procs=[("patroni", node)])
            self._record_postmaster(node)
        return pid

    def stop_patroni(self, node, timeout=60.0):
        """Graceful stop: SIGTERM to Patroni (it stops its PostgreSQL), wait for exit.
        SIGKILL after the deadline, in which case the postmaster may be left running."""
        self._check_node(node, patroni=True)
        pid = self.patroni_pid(node)
        if pid is None:
            raise LabError(f"Patroni on {node} is not running")
        terminate_pids([pid], timeout=timeout, reap=self._reap)
        runuser = self._procs.get(("runuser", node))
        if runuser:
            terminate_pids([runuser.pid], timeout=10.0, sig=0, reap=self._reap)  # see _end_everything
        if pid_alive(pid):
            raise LabError(f"Patroni on {node} (pid {pid}) did not exit")
        return pid

    def signal_patroni(self, node, sig):
        """Send sig (e.g. SIGSTOP/SIGCONT/SIGHUP) to the Patroni process of node."""
        self._check_node(node, patroni=True)
        pid = self.patroni_pid(node)
        if pid is None:
            raise LabError(f"Patroni on {node} is not running")
        os.kill(pid, sig)
        return pid

    def patroni_state(self, node, timeout=2.0):
        """Parsed JSON of GET /patroni on node, or None if it does not answer."""
        self._check_node(node, patroni=True)
        try:
            return http_json(self.rest_url(node, "/patroni"), timeout=timeout)
        except (OSError, ValueError):
            return None

    def cluster(self, node=None):
        """Parsed GET /cluster from node, or from the first Patroni that answers (None if none)."""
        for n in ([node] if node else PATRONI_NODES):
            try:
                return http_json(self.rest_url(n, "/cluster"))
            except (OSError, ValueError):
                continue
        return None

    def leader(self):
        """Name of the current leader according to /cluster, or None."""
        c = self.cluster()
        for m in (c or {}).get("members", []):
            if m.get("role") in LEADER_ROLES:
                return m.get("name")
        return None

    def replicas(self):
        c = self.cluster()
        return [m.get("name") for m in (c or {}).get("members", []) if m.get("role") not in LEADER_ROLES]

    def _patroni_running(self, node):
        st = self.patroni_state(node)
        return True if st and st.get("state") == "running" else NotYet(f"{node} /patroni: {st}")

    def _is_running_leader(self, node):
        st = self.patroni_state(node)
        if st and st.get("state") == "running" and st.get("role") in LEADER_ROLES:
            return True
        return NotYet(f"{node} /patroni: {st}")

    def _replica_streaming(self, node):
        """node is a running replica, /cluster knows its lag, and the leader's PostgreSQL
        lists it in pg_stat_replication as streaming."""
        c = self.cluster()
        members = {m.get("name"): m for m in (c or {}).get("members", [])}
        m = members.get(node)
        if not m or m.get("role") in LEADER_ROLES or m.get("state") not in ("running", "streaming") \
                or not isinstance(m.get("lag"), int):
            return NotYet(f"/cluster member {node}: {m}")
        lead = next((n for n, mm in members.items() if mm.get("role") in LEADER_ROLES), None)
        if lead not in PATRONI_NODES:
            return NotYet(f"/cluster has no leader: {c}")
        st = self.patroni_state(lead) or {}
        rep = [r for r in st.get("replication", []) if r.get("application_name") == node]
        if not rep or rep[0].get("state") != "streaming":
            return NotYet(f"leader {lead} replication: {st.get('replication')}")
        return True

    def wait_cluster_healthy(self, timeout=90.0):
        """Wait until there is a running leader and the other node is a streaming replica.
        Returns the leader's name."""
        def check():
            lead = self.leader()
            if lead not in PATRONI_NODES:
                return NotYet(f"leader: {lead}; /cluster: {self.cluster()}")
            if not self._is_running_leader(lead):
                return NotYet(f"leader {lead} /patroni: {self.patroni_state(lead)}")
            other = [n for n in PATRONI_NODES if n != lead][0]
            ok = self._replica_streaming(other)
            return lead if ok else ok
        return self.wait_for(check, timeout, "a healthy cluster (leader + streaming replica)",
                             logs=[self.patroni_log(n) for n in PATRONI_NODES])

    # ---------------------------------------------------------------- PostgreSQL

    def postmaster_pid(self, node):
        """pid from the first line of <data_dir>/postmaster.pid, if that process is alive and
        its command line names this data dir (a stale file or a reused pid gives None)."""
        self._check_node(node, patroni=True)
        pid = _postmaster_pid(self.data_dir(node))
        if pid:
            self._record("postmaster", node, pid)
        return pid

    def _record_postmaster(self, node):
        self.postmaster_pid(node)

    def kill_postmaster(self, node, sig=signal.SIGKILL, timeout=30.0):
        """Kill node's postmaster (default SIGKILL, a crash) and wait until it and its
        children are gone. Patroni notices and starts PostgreSQL again on its own."""
        pid = self.postmaster_pid(node)
        if pid is None:
            raise LabError(f"no running postmaster for {node}")
        left = self._end_postmaster(node, sig, timeout)
        if left:
            raise LabError(f"postmaster of {node} or its children still alive: {left}")
        return pid

    def _end_postmaster(self, node, sig, timeout):
        """End node's postmaster by pid (sig, then SIGKILL after timeout) and wait for its
        children too. Returns the pids still alive (none, normally)."""
        pid = _postmaster_pid(self.data_dir(node)) if self.dir else None
        if pid is None:
            return []
        self._record("postmaster", node, pid)
        # Its backends notice postmaster death only later: collect them first and wait
        # for them too, so nothing of this instance survives the call.
        kids = proc_children(pid)
        left = terminate_pids([pid], timeout=timeout, sig=sig)
        return left + terminate_pids(kids, timeout=10.0, sig=0)

    # ---------------------------------------------------------------- waiting

    def wait_for(self, predicate, timeout, what, logs=(), procs=(), interval=0.2):
        """Poll predicate() until it returns something truthy (returned) or the deadline
        passes (LabError with the last value seen and the tail of each log in logs).
        procs: (kind, node) pairs that must stay alive meanwhile: fail fast if one exits.
        A LabError raised by predicate stops the wait; other exceptions count as 'not yet'."""
        deadline = time.monotonic() + max(0.0, timeout)
        last = None
        while True:
            for kind, node in procs:
                alive = self.patroni_pid(node) if kind == "patroni" else \
                    self.haproxy_pid() if kind == "haproxy" else self.etcd_pid(node)
                if not alive:
                    raise LabError(self._explain(f"{kind} on {node} exited while waiting for {what}",
                                                 last, logs))
            try:
                value = predicate()
            except LabError:
                raise
            except Exception as e:  # noqa: BLE001 - transient (connection refused, ...)
                value = NotYet(f"{type(e).__name__}: {e}")
            if value:
                return value
            last = value
            if time.monotonic() >= deadline:
                raise LabError(self._explain(f"timed out after {timeout:.0f}s waiting for {what}",
                                             last, logs))
            time.sleep(interval)

    @staticmethod
    def _explain(msg, last, logs):
        parts = [msg, f"last seen: {last!r}"]
        for log in logs:
            parts.append(f"--- tail of {log} ---\n{tail(log)}")
        return "\n".join(parts)

    # ---------------------------------------------------------------- signals

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers; context manager + atexit remain
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self):
        for sig, old in self._old_handlers.items():
            try:
                signal.signal(sig, old if old is not None else signal.SIG_DFL)
            except (ValueError, TypeError):
                pass
        self._old_handlers = {}

    def _on_signal(self, signum, frame):
        if self._critical:
            self._pending_signal = signum
            return
        if self._stopping:
            return  # teardown already running; let it finish
        old = self._old_handlers.get(signum, signal.SIG_DFL)
        print(f"fener lab: signal {signum}, stopping the lab", file=sys.stderr)
        self.stop(failed=True)
        print(f"fener lab: stopped in {self.timings.get('teardown', 0):.1f}s", file=sys.stderr)
        # Then behave as if we had not been here: the previous handler or the default action.
        if callable(old):
            old(signum, frame)
        elif old != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        # A background job of a script inherits SIGINT ignored: exit anyway, the lab is gone.
        raise SystemExit(128 + signum)


# ---------------------------------------------------------------- stale labs

def _postmaster_pid(data_dir):
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as f:
            pid = int(f.readline().strip())
    except (OSError, ValueError):
        return None
    # pid reuse safety: the process must be a postgres started with this data dir.
    return pid if pid_alive(pid) and data_dir in proc_cmdline(pid) else None


def _is_lab_dir(d):
    try:
        with open(os.path.join(d, "pids")) as f:
            return f.readline().strip() == PIDS_HEADER
    except OSError:
        return False


def _read_pids(d):
    """(owner (pid, starttime) or None, [(kind, node, pid)]) from d/pids."""
    owner, entries = None, []
    try:
        with open(os.path.join(d, "pids")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None, []
    for line in lines[1:]:
        parts = line.split()
        try:
            if parts[0] == "owner":
                owner = (int(parts[2]), int(parts[3]) if parts[3] != "None" else None)
            elif len(parts) == 3:
                entries.append((parts[0], parts[1], int(parts[2])))
        except (IndexError, ValueError):
            continue
    return owner, entries


def _lab_owner_alive(d):
    owner, _ = _read_pids(d)
    return bool(owner) and pid_alive(owner[0]) and proc_starttime(owner[0]) == owner[1]


def _lab_dirs():
    # /tmp and $TMPDIR (e.g. TMPDIR=/dev/shm for speed): a crashed run may have used either.
    bases = {"/tmp", tempfile.gettempdir()}
    return [d for b in bases for d in glob.glob(os.path.join(b, TMP_PREFIX + "*")) if _is_lab_dir(d)]


def _ancestors():
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                data = f.read()
            pid = int(data[data.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            break
    return pids


def lab_processes(d):
    """pids of etcd/Patroni/runuser/PostgreSQL processes whose command line names lab dir d
    (never this process or its ancestors, e.g. `lab.py up --dir d`)."""
    d = d.rstrip("/") + "/"
    mine = _ancestors()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        pid = int(entry)
        cmd = proc_cmdline(pid)
        if not cmd or not any(d in a for a in cmd):
            continue
        prog = os.path.basename(cmd[0])
        # PostgreSQL tools too: Patroni's initdb / pg_basebackup / pg_rewind children outlive
        # a Patroni killed mid-bootstrap, still writing into the lab dir.
        if prog in ("etcd", "postgres", "runuser", "haproxy") or cmd[0].startswith(PG_BIN_DIR + "/") or \
                (prog.startswith("python") and any(a.endswith("/patroni") for a in cmd)):
            found.append(pid)
    return found


def cleanup_stale_labs(extra_dirs=()):
    """End, by pid, the processes of lab dirs whose owner (the harness) is gone: a crashed
    or SIGKILLed earlier run. Each pid is ended only if its command line names that lab dir.
    Live labs of other runs are left alone. The dirs themselves are kept (maybe for debugging)."""
    ended = []
    for d in set(_lab_dirs()) | {os.path.abspath(x) for x in extra_dirs if _is_lab_dir(x)}:
        if _lab_owner_alive(d):
            continue
        _, entries = _read_pids(d)
        pids = []
        # Patroni before PostgreSQL before etcd, as in a normal teardown.
        for kind in ("haproxy", "patroni", "runuser", "postmaster", "etcd"):
            pids = [p for k, _, p in entries if k == kind and pid_alive(p) and cmdline_mentions(p, d)]
            if kind == "postmaster":
                pids += [p for p in (_postmaster_pid(x) for x in glob.glob(os.path.join(d, "*", "data")))
                         if p and p not in pids]
            kids = [k for p in pids if kind == "postmaster" for k in proc_children(p)]
            # runuser is only waited for: on SIGTERM it would SIGKILL its Patroni child.
            # etcd one at a time (see Lab._end_everything).
            for group in ([[p] for p in pids] if kind == "etcd" else [pids]):
                terminate_pids(group, timeout=30.0, sig=0 if kind == "runuser" else signal.SIGTERM)
            terminate_pids(kids, timeout=10.0, sig=0)
            ended += pids
        stray = lab_processes(d)
        terminate_pids(stray, timeout=20.0)
        ended += stray
        if ended:
            print(f"fener lab: ended processes of stale lab {d}: {ended}", file=sys.stderr)
        # A crashed run's dir goes too, unless someone asked to keep dirs; a dir kept on
        # purpose (KEPT marker) stays for whoever is debugging it.
        if os.path.basename(d).startswith(TMP_PREFIX) and d in _lab_dirs() and \
                os.environ.get("FENER_LAB_KEEP") != "1" and not os.path.exists(os.path.join(d, "KEPT")):
            shutil.rmtree(d, ignore_errors=True)
    return ended


# ---------------------------------------------------------------- CLI

def _print_summary(lab):
    s = lab.summary()
    print(f"fener lab up in {lab.timings.get('healthy', 0):.1f}s: {s['dir']}")
    print(f"  leader: {s['leader']}   REST API auth: {s['rest_api']['username']}:{s['rest_api']['password']}")
    for n, info in s["nodes"].items():
        print(f"  {n:8} {info['address']:12} etcd.conf={info['etcd_env_file']}")
        if "patroni_config" in info:
            print(f"  {'':8} {'':12} patroni.yml={info['patroni_config']}")
    if "haproxy" in s:
        h = s["haproxy"]
        ports = " ".join(f"{k}={v}" for k, v in h["ports"].items())
        print(f"  HAProxy on {h['node']}: {ports}  socket={h['socket']}")
    print(f"  summary JSON: {os.path.join(s['dir'], 'lab.json')}")
    print("  Ctrl-C or SIGTERM to stop.", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description="fener lab: etcd x3 + Patroni x2 on loopback")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the lab and keep it running until SIGINT/SIGTERM")
    up.add_argument("--dir", help="lab dir (default: a new /tmp/fener-lab-*)")
    up.add_argument("--net", help="first three octets in 127.0.0.0/8 (default 127.0.1 or $FENER_LAB_NET)")
    sub.add_parser("cleanup", help="end processes of crashed earlier labs")
    ctl = sub.add_parser("ctl", help="ask a running lab to restart one of its processes")
    ctl.add_argument("--dir", required=True, help="the lab dir")
    ctl.add_argument("action", choices=["restart"])
    ctl.add_argument("kind", choices=list(SERVICES))
    ctl.add_argument("node")
    args = ap.parse_args(argv)

    if args.cmd == "ctl":
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(150)
            c.connect(os.path.join(args.dir, "ctl.sock"))
            c.sendall(f"{args.action} {args.kind} {args.node}\n".encode())
            answer = c.makefile().readline().strip()
        print(answer)
        return 0 if answer == "ok" else 1

    if args.cmd == "cleanup":
        cleanup_stale_labs()
        return 0
    lab = Lab(net=args.net, lab_dir=args.dir)
    try:
        lab.start()
        lab.serve_control()
        _print_summary(lab)
        while True:
            signal.pause()  # the Lab's handler tears down and then re-raises the signal
    except KeyboardInterrupt:
        return 130
    except LabError as e:
        print(f"fener lab: {e}", file=sys.stderr)
        return 1
    finally:
        signalled = lab._stopped  # the signal handler already stopped it and said so
        lab.stop()
        if "teardown" in lab.timings and not signalled:
            print(f"fener lab: stopped in {lab.timings['teardown']:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
