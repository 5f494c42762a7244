#!/usr/bin/python3
"""`fener run` talks to its service manager: READY=1 after the first round of checks,
STATUS= lines, WATCHDOG=1 keep-alives, RELOADING=1 around SIGHUP and STOPPING=1 on
SIGTERM, over a NOTIFY_SOCKET this test listens on as systemd would, and a reload that
changes settings read only at start. Needs no cluster: the only checks look at scratch
directories; the API and agent listen on FENER_LAB_NET (default 127.0.8).

    FENER_BIN=build/fener /usr/bin/python3 tests/integration/test_systemd_notify.py
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lab.lab import agent_query, http_json  # noqa: E402

FENER = os.environ.get("FENER_BIN", os.path.join(os.path.dirname(__file__), "../../build/fener"))
ADDR = os.environ.get("FENER_LAB_NET", "127.0.8").rstrip(".") + ".1"


def free_ports(n):
    """n distinct free ports: each stays bound until all are chosen."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((ADDR, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def status(port):
    return http_json(f"http://{ADDR}:{port}/status", timeout=5)


def metrics(port):
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://{ADDR}:{port}/metrics", timeout=5) as r:
        return r.read().decode()


class NotifyTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="fener-notify-")
        self.proc = None
        self.log = None
        self.log_path = os.path.join(self.dir, "fener.log")
        self.sock_path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.messages = []
        me = pwd.getpwuid(os.getuid()).pw_name
        for d in ("data", "archive"):
            os.mkdir(os.path.join(self.dir, d), 0o700)
        self.config = os.path.join(self.dir, "fener.yaml")
        with open(self.config, "w") as f:
            f.write(f"""# two checks on scratch directories, nothing else
state_dir: {self.dir}/state
patroni:
  config: ""
etcd:
  env_files: []
postgresql:
  data_dir: {self.dir}/data
  owner: {me}
defaults:
  interval: 1s
  jitter: 0s
  rise: 1
  fall: 1
api:
  listen: "off"
audit:
  file: ""
rules:  # the built-in ones act on Patroni and etcd, which this node does not have
  datadir_permissions: {{enabled: false}}
  postgres_down: {{enabled: false}}
  postgres_stuck_starting: {{enabled: false}}
  patroni_down: {{enabled: false}}
  etcd_down: {{enabled: false}}
  leader_file_missing: {{enabled: false}}
checks:
  listening_sockets:
    enabled: false
  archive:
    type: datadir
    path: {self.dir}/archive
    owner: {me}
""")

    def tearDown(self):
        # Ended by pid, also when the test failed half-way.
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.log:
            self.log.close()
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, watchdog_usec, watchdog_pid=None):
        """Starts `fener run` as systemd would: NOTIFY_SOCKET, WATCHDOG_USEC and, unless
        watchdog_pid is given, WATCHDOG_PID set to fener's own pid."""
        env = dict(os.environ, NOTIFY_SOCKET=self.sock_path, WATCHDOG_USEC=str(watchdog_usec))
        env.pop("JOURNAL_STREAM", None)  # plain lines in the log file, not the journal
        fener = [FENER, "run", "-c", self.config, "--mode", "observe", "--log-level", "debug"]
        if watchdog_pid is None:
            # A shell learns its pid and execs fener in its place, keeping the pid.
            args = ["/bin/sh", "-c", 'export WATCHDOG_PID=$$; exec "$0" "$@"', *fener]
        else:
            env["WATCHDOG_PID"] = str(watchdog_pid)
            args = fener
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log)

    def text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_message(self, pred, timeout, what):
        """Receives notifications until one satisfies pred and returns it; fails at the
        deadline, or once fener has exited and nothing it sent is left unread."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages:
                if pred(m):
                    self.messages.remove(m)
                    return m
            exited = self.proc.poll() is not None
            left = deadline - time.monotonic()
            if left <= 0 or exited:
                self.sock.settimeout(0)  # what is already queued, then give up
            else:
                self.sock.settimeout(min(left, 0.5))
            try:
                self.messages.append(self.sock.recv(4096).decode())
                continue
            except (socket.timeout, BlockingIOError):
                pass
            if exited:
                self.fail(f"fener exited {self.proc.returncode} before {what}; got "
                          f"{self.messages}\n{self.text()[-2000:]}")
            if left <= 0:
                self.fail(f"no {what} within {timeout}s; got {self.messages}\n{self.text()[-2000:]}")

    def test_ready_status_watchdog_reload_stopping(self):
        self.start(2000000)
        ready = self.wait_message(lambda m: "READY=1" in m.split("\n"), 20, "READY=1")
        status = [f for f in ready.split("\n") if f.startswith("STATUS=")]
        self.assertEqual(status, ["STATUS=2 checks: 2 passing; mode observe"], ready)
        # The keep-alive: one at start, then every second (half of WATCHDOG_USEC).
        self.messages = [m for m in self.messages if m != "WATCHDOG=1"]
        self.wait_message(lambda m: m == "WATCHDOG=1", 5, "WATCHDOG=1")
        self.wait_message(lambda m: m == "WATCHDOG=1", 5, "a second WATCHDOG=1")

        # A check that turns critical changes the STATUS line.
        os.chmod(os.path.join(self.dir, "archive"), 0o755)
        self.wait_message(lambda m: m.startswith("STATUS=") and "1 critical (archive)" in m, 20,
                          "STATUS= naming the critical check")

        self.proc.send_signal(signal.SIGHUP)
        self.wait_message(lambda m: m.startswith("RELOADING=1\nMONOTONIC_USEC="), 10, "RELOADING=1")
        self.wait_message(lambda m: "READY=1" in m.split("\n"), 10, "READY=1 after the reload")

        # A rejected reload: READY again (the daemon runs on), and the STATUS line says so
        # until a reload succeeds.
        with open(self.config) as f:
            good = f.read()
        with open(self.config, "w") as f:
            f.write(good + "bogus: 1\n")
        self.proc.send_signal(signal.SIGHUP)
        failed = self.wait_message(lambda m: "READY=1" in m.split("\n") and "reload failed" in m,
                                   10, "READY=1 with the reload's failure")
        self.assertIn(self.config, failed)
        self.assertIn("bogus", failed)
        with open(self.config, "w") as f:
            f.write(good)
        self.proc.send_signal(signal.SIGHUP)
        self.wait_message(lambda m: "READY=1" in m.split("\n") and "reload failed" not in m, 10,
                          "READY=1 without the failure after a good reload")

        self.proc.send_signal(signal.SIGTERM)
        self.wait_message(lambda m: m == "STOPPING=1", 10, "STOPPING=1")
        self.assertEqual(self.proc.wait(40), 0, self.text()[-2000:])

    def test_reload_says_what_waits_for_a_restart(self):
        # The listeners are set up once: a reload that moves them says so (log, STATUS=,
        # /status, /metrics) and they stay where they were; moving them back clears it.
        api, agent, api2, agent2 = free_ports(4)
        with open(self.config) as f:
            base = f.read()

        def write(api_port, agent_port, lag_drain, read_wait="200ms", max_connections=1024):
            with open(self.config, "w") as f:
                f.write(base.replace('listen: "off"', f'listen: "{ADDR}:{api_port}"') +
                        f'agent: {{listen: "{ADDR}:{agent_port}", lag_drain: {lag_drain}, '
                        f'read_wait: {read_wait}, max_connections: {max_connections}}}\n')

        def agent_stats(pred, what):
            deadline = time.monotonic() + 10
            while True:
                st = status(api)["agent"]
                if pred(st):
                    return st
                if time.monotonic() > deadline:
                    self.fail(f"no {what} within 10 s: {st}")
                time.sleep(0.05)

        write(api, agent, "16MB")
        self.start(2000000)
        self.wait_message(lambda m: "READY=1" in m.split("\n"), 20, "READY=1")
        self.assertEqual(status(api)["config"]["pending_restart"], [])

        # The agent's other settings are taken up at once, so not listed.
        write(api2, agent2, "32MB", "5s", max_connections=1)
        self.proc.send_signal(signal.SIGHUP)
        ready = self.wait_message(lambda m: "READY=1" in m.split("\n"), 10, "READY=1 after the reload")
        self.assertIn("; restart pending for api.listen, agent.listen", ready)
        self.assertEqual(status(api)["config"]["pending_restart"], ["api.listen", "agent.listen"])
        self.assertIn("fener_config_pending_restart 1", metrics(api))
        self.assertIn("changes to api.listen, agent.listen take effect at the next start",
                      self.text())
        # Still served on the old port (no Patroni here: an empty answer, "no news").
        served = status(api)["agent"]["connections"]
        agent_query(ADDR, agent, "primary", timeout=5)
        self.assertEqual(status(api)["agent"]["connections"], served + 1)
        for port in (api2, agent2):
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection((ADDR, port), timeout=2).close()
        # The new cap (1) applies: a silent client holds the only slot, and the next
        # silent one is closed at once.
        with socket.create_connection((ADDR, agent), timeout=5):
            agent_stats(lambda st: st["connections"] == served + 2 and st["rejected"] == 0,
                        "accepted silent client")
            with socket.create_connection((ADDR, agent), timeout=5):
                agent_stats(lambda st: st["rejected"] == 1, "rejected second silent client")

        write(api, agent, "32MB")
        self.proc.send_signal(signal.SIGHUP)
        ready = self.wait_message(lambda m: "READY=1" in m.split("\n"), 10, "READY=1 after the revert")
        self.assertNotIn("restart pending", ready)
        self.assertEqual(status(api)["config"]["pending_restart"], [])
        self.assertIn("fener_config_pending_restart 0", metrics(api))

        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(40), 0, self.text()[-2000:])

    def test_no_watchdog_when_meant_for_another_process(self):
        self.start(200000, watchdog_pid=1)
        self.wait_message(lambda m: "READY=1" in m.split("\n"), 20, "READY=1")
        self.proc.send_signal(signal.SIGTERM)
        self.wait_message(lambda m: m == "STOPPING=1", 10, "STOPPING=1")
        self.assertEqual(self.proc.wait(40), 0, self.text()[-2000:])
        self.assertNotIn("WATCHDOG=1", self.messages)


if __name__ == "__main__":
    unittest.main(verbosity=2)
