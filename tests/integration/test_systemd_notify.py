#!/usr/bin/python3
"""`fener run` talks to its service manager: READY=1 after the first round of checks,
STATUS= lines, WATCHDOG=1 keep-alives, RELOADING=1 around SIGHUP and STOPPING=1 on
SIGTERM, over a NOTIFY_SOCKET this test listens on as systemd would. Needs no cluster:
the only checks look at scratch directories.

    FENER_BIN=build/fener /usr/bin/python3 tests/integration/test_systemd_notify.py
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

FENER = os.environ.get("FENER_BIN", os.path.join(os.path.dirname(__file__), "../../build/fener"))


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

    def test_no_watchdog_when_meant_for_another_process(self):
        self.start(200000, watchdog_pid=1)
        self.wait_message(lambda m: "READY=1" in m.split("\n"), 20, "READY=1")
        self.proc.send_signal(signal.SIGTERM)
        self.wait_message(lambda m: m == "STOPPING=1", 10, "STOPPING=1")
        self.assertEqual(self.proc.wait(40), 0, self.text()[-2000:])
        self.assertNotIn("WATCHDOG=1", self.messages)


if __name__ == "__main__":
    unittest.main(verbosity=2)
