#!/usr/bin/python3
"""fener against a real etcd x3 + Patroni x2 + PostgreSQL 15 lab on 127.0.1.x.

Each scenario injects a fault the setup guide describes and asserts what `fener check`
reports, polling with deadlines (a fault takes a moment to show). The lab ends every
process it started, by pid, also when a test fails.

    FENER_BIN=build/fener PYTHONPATH=tests /usr/bin/python3 tests/integration/test_fener_lab.py
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lab.lab import Lab, NotYet, pid_alive  # noqa: E402

FENER = os.environ.get("FENER_BIN", os.path.join(os.path.dirname(__file__), "../../build/fener"))
TIMEOUT_S = 2  # the per-check timeout written into every node's fener.yaml

lab = None
conf_dir = None


def setUpModule():
    global lab, conf_dir
    lab = Lab()
    lab.start()
    conf_dir = tempfile.mkdtemp(prefix="fener-conf-")
    for node in ("ha", "kaptan1", "kaptan2"):
        with open(node_config(node), "w") as f:
            f.write(f"""# fener on {node} in the lab
state_dir: {conf_dir}
cluster:
  members: 2
etcd:
  env_files: [{lab.etcd_env_file(node)}]
defaults:
  interval: 1s
  unhealthy_interval: 1s
  timeout: {TIMEOUT_S}s
  jitter: 0s
  rise: 1
  fall: 1
""")


def tearDownModule():
    if lab:
        lab.stop()
    if conf_dir:
        for f in os.listdir(conf_dir):
            os.unlink(os.path.join(conf_dir, f))
        os.rmdir(conf_dir)


def node_config(node):
    return os.path.join(conf_dir, f"{node}.yaml")


def fener_args(node):
    args = ["-c", node_config(node)]
    if node != "ha":
        args += ["--patroni-config", lab.patroni_config(node)]
    return args


def fener_check(node, *extra):
    """Runs `fener check --json` for a node: (exit code, document, seconds)."""
    t0 = time.monotonic()
    p = subprocess.run([FENER, "check", "--json", *fener_args(node), *extra],
                       capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"fener check gave no JSON (exit {p.returncode}): {p.stdout}{p.stderr}")
    return p.returncode, doc, took


def by_name(doc):
    return {c["name"]: c for c in doc["checks"]}


def poll_check(node, predicate, timeout, what):
    """Polls `fener check` until predicate(checks by name) holds; returns that document."""
    def probe():
        code, doc, _ = fener_check(node)
        checks = by_name(doc)
        if predicate(checks):
            return doc
        return NotYet({n: (c["status"], c["message"]) for n, c in checks.items()})
    return lab.wait_for(probe, timeout, what)


def replica():
    return next(n for n in ("kaptan1", "kaptan2") if n != lab.leader())


class FenerOnTheLab(unittest.TestCase):

    def test_1_all_passing_on_every_node(self):
        lab.wait_cluster_healthy(90)
        expected = {
            "ha": {"etcd_health", "etcd_members", "listening_sockets", "config_lint"},
            "kaptan1": {"etcd_health", "etcd_members", "patroni_node", "patroni_cluster",
                        "listening_sockets", "datadir", "config_lint"},
        }
        expected["kaptan2"] = expected["kaptan1"]
        for node, names in expected.items():
            doc = poll_check(node, lambda c: all(x["status"] == "passing" for x in c.values()),
                             60, f"every check passing on {node}")
            self.assertEqual(set(by_name(doc)), names, node)
            self.assertEqual(doc["status"], "passing")
            self.assertEqual(doc["node"], node)
            code, _, took = fener_check(node)
            self.assertEqual(code, 0)
            print(f"\n  fener check on {node}: {took:.2f} s wall", file=sys.stderr)

    def test_2_zero_config_discovery_from_patroni_yml(self):
        # No fener file at all: everything comes from patroni.yml.
        p = subprocess.run([FENER, "check", "--json", "--patroni-config",
                            lab.patroni_config("kaptan1")], capture_output=True, text=True,
                           timeout=60)
        doc = json.loads(p.stdout)
        checks = by_name(doc)
        for name in ("etcd_health", "etcd_members", "patroni_node", "patroni_cluster",
                     "listening_sockets", "datadir"):
            self.assertIn(name, checks)
            self.assertEqual(checks[name]["status"], "passing", checks[name])
        self.assertEqual(doc["node"], "kaptan1")
        self.assertEqual(len(checks["etcd_health"]["evidence"]["members"]), 3)

    def test_3_bad_config_is_a_clear_error(self):
        bad = os.path.join(conf_dir, "bad.yaml")
        with open(bad, "w") as f:
            f.write("defaults:\n  interval: 5s\n  timout: 3s\n")
        p = subprocess.run([FENER, "check", "-c", bad], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 78, p.stderr)
        self.assertIn(f"{bad}:3:3: defaults.timout: unknown key (did you mean \"timeout\"?)",
                      p.stderr)
        self.assertEqual(p.stdout, "")

    def test_4_hung_patroni_costs_a_timeout_only(self):
        node = replica()
        lab.signal_patroni(node, signal.SIGSTOP)
        try:
            code, doc, took = fener_check(node)
        finally:
            lab.signal_patroni(node, signal.SIGCONT)
        checks = by_name(doc)
        self.assertEqual(checks["patroni_node"]["status"], "unknown", checks["patroni_node"])
        self.assertEqual(checks["patroni_node"]["evidence"].get("error"), "timeout")
        self.assertGreaterEqual(checks["patroni_node"]["duration_ms"], TIMEOUT_S * 1000 - 50)
        # The other checks did not wait for the hung peer.
        self.assertEqual(checks["etcd_health"]["status"], "passing")
        self.assertEqual(checks["datadir"]["status"], "passing")
        self.assertLess(checks["etcd_health"]["duration_ms"], TIMEOUT_S * 1000)
        self.assertEqual(code, 3)
        # Bounded by the timeout, not by the hung peer (generous margin for a busy machine).
        self.assertLess(took, TIMEOUT_S + 10)
        print(f"\n  fener check with a hung Patroni: {took:.2f} s wall", file=sys.stderr)

    def test_5_one_etcd_member_down_keeps_quorum(self):
        lab.stop_etcd("ha")
        try:
            doc = poll_check("kaptan1", lambda c: c["etcd_health"]["status"] == "warning", 30,
                             "etcd_health warning with one member down")
            msg = by_name(doc)["etcd_health"]["message"]
            self.assertIn("2/3", msg)
            self.assertIn("quorum", msg)
        finally:
            lab.start_etcd("ha")
        poll_check("kaptan1", lambda c: c["etcd_health"]["status"] == "passing", 30,
                   "etcd_health passing again")

    def test_6_replica_datadir_permissions(self):
        lab.wait_cluster_healthy(90)
        node = replica()
        data = lab.data_dir(node)
        os.chmod(data, 0o755)
        try:
            lab.kill_postmaster(node)
            doc = poll_check(
                node,
                lambda c: c["patroni_node"]["status"] == "critical"
                and "start failed" in c["patroni_node"]["message"]
                and c["listening_sockets"]["status"] == "critical",
                90, "patroni_node critical (start failed) on the replica")
            checks = by_name(doc)
            self.assertEqual(checks["datadir"]["status"], "critical")
            self.assertIn(data, checks["datadir"]["message"])
            self.assertIn("0755", checks["datadir"]["message"])
            self.assertIn("5432", checks["listening_sockets"]["message"])
            # Only the replica is hurt: the leader's own view stays passing for its node.
            leader_checks = by_name(fener_check(lab.leader())[1])
            self.assertEqual(leader_checks["patroni_node"]["status"], "passing")
        finally:
            os.chmod(data, 0o700)
        lab.wait_cluster_healthy(120)

    def test_7_daemon_logs_transitions_and_reloads(self):
        node = "kaptan1"
        cfg = os.path.join(conf_dir, "run.yaml")
        with open(node_config(node)) as f:
            good = f.read()
        with open(cfg, "w") as f:
            f.write(good)
        log_path = os.path.join(conf_dir, "run.log")
        log = open(log_path, "w")
        proc = subprocess.Popen([FENER, "run", "-c", cfg, "--patroni-config",
                                 lab.patroni_config(node)], stdout=log, stderr=log)

        def logged(text):
            def probe():
                with open(log_path) as f:
                    content = f.read()
                return True if text in content else NotYet(content[-2000:])
            return probe
        try:
            for name in ("etcd_health", "patroni_node", "datadir"):
                lab.wait_for(logged(f"check {name}: (start) -> passing"), 30,
                             f"daemon reports {name} passing")
            with open(cfg, "w") as f:
                f.write(good + "bogus: 1\n")
            proc.send_signal(signal.SIGHUP)
            lab.wait_for(logged("reload failed, keeping the running configuration"), 30,
                         "invalid reload rejected")
            self.assertIsNone(proc.poll(), "daemon died on a bad reload")
            with open(cfg, "w") as f:
                f.write(good)
            proc.send_signal(signal.SIGHUP)
            lab.wait_for(logged("configuration reloaded"), 30, "valid reload applied")
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(timeout=30), 0)
            with open(log_path) as f:
                self.assertIn("fener stopped", f.read())
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
        self.assertFalse(pid_alive(proc.pid))


if __name__ == "__main__":
    unittest.main(verbosity=2)
