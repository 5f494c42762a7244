#!/usr/bin/python3
"""fener's `haproxy` check and the `haproxy_down` rule on the lab's HAProxy node.

The lab runs HAProxy on ha with two designs side by side; no agent-check listener runs
here, so the check judges the httpchk front ends (primary_httpchk, replicas_httpchk).
fener on ha works from the etcd environment file and the lab's haproxy.cfg only (no
patroni.yml; the scope comes from etcd). Where systemd would restart HAProxy, fener runs
`lab.py ctl ... restart haproxy ha`, and the lab (the owner of every pid) restarts it.
Every process is ended by pid, also when a test fails.

    FENER_BIN=build/fener PYTHONPATH=tests /usr/bin/python3 tests/integration/test_haproxy_lab.py
"""

import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lab.lab import Lab, NotYet, terminate_pids  # noqa: E402

FENER = os.environ.get("FENER_BIN", os.path.join(os.path.dirname(__file__), "../../build/fener"))
LAB_PY = os.path.abspath(os.path.join(os.path.dirname(__file__), "../lab/lab.py"))

lab = None
conf_dir = None


def setUpModule():
    global lab, conf_dir
    lab = Lab()
    lab.start()
    lab.serve_control()
    # Inside the lab dir: fener's command line names it, so the lab's teardown finds it
    # even if this process dies first.
    conf_dir = os.path.join(lab.dir, "fener")
    os.mkdir(conf_dir)
    ctl = ["/usr/bin/python3", LAB_PY, "ctl", "--dir", lab.dir, "restart", "haproxy", "ha"]
    with open(config(), "w") as f:
        f.write(f"""# fener on the lab's HAProxy node
state_dir: {conf_dir}
etcd:
  env_files: [{lab.etcd_env_file("ha")}]
haproxy:
  config: {lab.haproxy_config()}
api:
  listen: off
audit:
  file: {os.path.join(conf_dir, "audit.jsonl")}
defaults:
  interval: 1s
  unhealthy_interval: 1s
  timeout: 2s
  jitter: 0s
  rise: 1
  fall: 1
services:
  haproxy:
    command: {json.dumps(ctl)}
rules:
  haproxy_down:
    settle: 4s
checks:
  haproxy:
    primary_backends: [primary_httpchk]
    replica_backends: [replicas_httpchk]
""")


def tearDownModule():
    if lab:
        lab.stop()


def config():
    return os.path.join(conf_dir, "ha.yaml")


def fener_check():
    """`fener check --json --only haproxy` on ha: (exit code, the haproxy check's result)."""
    p = subprocess.run([FENER, "check", "--json", "-c", config(), "--only", "haproxy"],
                       capture_output=True, text=True, timeout=60)
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"fener check gave no JSON (exit {p.returncode}): {p.stdout}{p.stderr}")
    checks = {c["name"]: c for c in doc["checks"]}
    return p.returncode, checks["haproxy"]


def wait_status(status, timeout, what):
    def probe():
        code, c = fener_check()
        return (code, c) if c["status"] == status else NotYet((code, c["status"], c["message"]))
    return lab.wait_for(probe, timeout, what, logs=[lab.haproxy_log()])


class HaproxyOnTheLab(unittest.TestCase):

    def setUp(self):
        lab.wait_cluster_healthy(120)
        if not lab.haproxy_pid():
            lab.start_haproxy()

    def test_1_passes_then_critical_when_haproxy_stops(self):
        leader = lab.leader()
        replica = next(n for n in ("kaptan1", "kaptan2") if n != leader)
        # httpchk needs `rise 2` rounds after HAProxy starts: poll.
        code, c = wait_status("passing", 30, "haproxy check passing")
        self.assertEqual(code, 0)
        self.assertEqual(c["message"], f"HAProxy routes primary_httpchk -> {leader} (leader); "
                                       f"replicas_httpchk -> {replica}")
        self.assertEqual(c["evidence"]["leader"], leader)
        self.assertEqual(c["evidence"]["etcd"]["scope"], "liman")  # learnt from etcd

        lab.stop_haproxy()
        code, c = fener_check()
        self.assertEqual(code, 2)
        self.assertEqual(c["status"], "critical")
        self.assertIn(c["evidence"]["socket"], ("refused", "missing"))
        self.assertIn(lab.haproxy_socket(), c["message"])
        self.assertTrue(c["message"].startswith("HAProxy is not running"), c["message"])
        lab.start_haproxy()
        wait_status("passing", 30, "haproxy check passing again")

    def test_2_operator_maint_warns_and_says_by_whom(self):
        wait_status("passing", 30, "haproxy check passing")
        replica = next(n for n in ("kaptan1", "kaptan2") if n != lab.leader())
        lab.haproxy_cmd(f"disable server replicas_httpchk/{replica}")
        try:
            code, c = wait_status("warning", 10, "haproxy check warning")
            self.assertEqual(code, 1)
            self.assertIn(f"replicas_httpchk/{replica} in MAINT (forced: stats socket or agent)",
                          c["message"])
        finally:
            lab.haproxy_cmd(f"enable server replicas_httpchk/{replica}")
        wait_status("passing", 30, "haproxy check passing after enable")

    def test_3_fener_run_restarts_a_stopped_haproxy(self):
        wait_status("passing", 30, "haproxy check passing")
        log = open(os.path.join(conf_dir, "run.log"), "ab")
        proc = subprocess.Popen([FENER, "run", "-c", config(), "--log-level", "debug"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
        lab.adopt("fener", "ha", proc.pid)
        try:
            before = len([r for r in lab.restarts if r[0] == "haproxy"])
            old = lab.stop_haproxy()

            def restarted():
                pid = lab.haproxy_pid()
                if proc.poll() is not None:
                    raise AssertionError(f"fener run exited with {proc.returncode}")
                return pid if pid and pid != old else NotYet(f"haproxy pid {pid}")
            lab.wait_for(restarted, 60, "HAProxy restarted by fener's haproxy_down rule",
                         logs=[os.path.join(conf_dir, "run.log")])
            self.assertEqual(len([r for r in lab.restarts if r[0] == "haproxy"]), before + 1)
            wait_status("passing", 30, "haproxy check passing after the restart")

            def audited():
                path = os.path.join(conf_dir, "audit.jsonl")
                recs = []
                if os.path.exists(path):
                    with open(path) as f:
                        recs = [json.loads(x) for x in f if x.strip()]
                hits = [r for r in recs if r.get("rule") == "haproxy_down" and r.get("outcome") == "success"]
                return hits or NotYet([(r.get("rule"), r.get("event"), r.get("outcome")) for r in recs][-5:])
            rec = lab.wait_for(audited, 10, "audit record of the haproxy_down restart")[0]
            self.assertEqual(rec.get("remedy"), "service_restart")
        finally:
            terminate_pids([proc.pid], timeout=40)
            proc.wait(5)
            log.close()
        self.assertEqual(proc.returncode, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
