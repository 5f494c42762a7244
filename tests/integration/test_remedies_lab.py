#!/usr/bin/python3
"""fener's remedies against a real etcd x3 + Patroni x2 + PostgreSQL 15 lab.

Each scenario injects a fault into the real cluster, runs `fener run` on the nodes, and
asserts the end state within a deadline, plus what the audit log says fener decided.
Every process (the lab's and each fener) is ended by pid, also when a test fails.
Where systemd would restart a service, fener runs `lab.py ctl ... restart KIND NODE`,
which asks the lab (the owner of every pid) to restart it.

    FENER_BIN=build/fener PYTHONPATH=tests /usr/bin/python3 tests/integration/test_remedies_lab.py

FENER_FIGURES=FILE appends one JSON line per timed scenario (bench/remedy-times uses it).
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lab.lab import Lab, NotYet, pid_alive, terminate_pids  # noqa: E402

FENER = os.environ.get("FENER_BIN", os.path.join(os.path.dirname(__file__), "../../build/fener"))
LAB_PY = os.path.abspath(os.path.join(os.path.dirname(__file__), "../lab/lab.py"))
PATRONICTL = "/usr/bin/patronictl"

lab = None
conf_dir = None
token = None


def setUpModule():
    global lab, conf_dir, token
    lab = Lab()
    lab.start()
    lab.serve_control()
    # Inside the lab dir: every fener's command line names it, so the lab's teardown
    # finds them even if this process dies before its own.
    conf_dir = os.path.join(lab.dir, "fener")
    os.mkdir(conf_dir)
    token = secrets.token_hex(16)
    with open(token_file(), "w") as f:
        f.write(token + "\n")
    os.chmod(token_file(), 0o600)


def tearDownModule():
    Fener.stop_all()
    if lab:
        lab.stop()


def token_file():
    return os.path.join(conf_dir, "token")


def replica():
    return next(n for n in ("kaptan1", "kaptan2") if n != lab.leader())


def patroni_state(node):
    st = lab.patroni_state(node)
    return st.get("state") if isinstance(st, dict) else None


def figure(name, **values):
    path = os.environ.get("FENER_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"scenario": name, **values}) + "\n")
    print(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()), file=sys.stderr)


def ctl(*args):
    return ["/usr/bin/python3", LAB_PY, "ctl", "--dir", lab.dir, "restart", *args]


class Fener:
    """One `fener run` on a lab node, with its own config, log and audit file."""
    running = []

    def __init__(self, node, mode="safe", extra="", edit=None):
        """edit: a function that may change the configuration text before it is used."""
        self.node = node
        self.mode = mode
        # One per node, kept across restarts: what a killed run left is found by the next.
        self.state_dir = os.path.join(conf_dir, f"state-{node}")
        tag = f"{node}-{len(os.listdir(conf_dir))}"
        self.config = os.path.join(conf_dir, f"{tag}.yaml")
        self.audit = os.path.join(conf_dir, f"{tag}-audit.jsonl")
        self.log = os.path.join(conf_dir, f"{tag}.log")
        addr = lab.address(node)
        text = f"""# fener on {node} in the remedy lab
mode: {mode}
state_dir: {self.state_dir}
cluster:
  members: 2
etcd:
  env_files: [{lab.etcd_env_file(node)}]
defaults:
  interval: 1s
  unhealthy_interval: 1s
  timeout: 2s
  jitter: 0s
  rise: 1
  fall: 1
api:
  listen: {addr}:8009
  token_file: {token_file()}
audit:
  file: {self.audit}
lock:
  ttl: 20s
services:
  patroni:
    command: {json.dumps(ctl("patroni", node))}
  etcd:
    command: {json.dumps(ctl("etcd", node))}
rules:
  postgres_down:
    settle: 4s
  postgres_stuck_starting:
    settle: 6s
    when:
      check: patroni_node
      status: [warning, critical]
      consecutive: 2
      for: 15s
      evidence:
        state: [starting, restarting]
  patroni_down:
    settle: 6s
  etcd_down:
    settle: 6s
{extra}"""
        with open(self.config, "w") as f:
            f.write(edit(text) if edit else text)
        args = [FENER, "run", "-c", self.config, "--log-level", "debug"]
        if node != "ha":
            args += ["--patroni-config", lab.patroni_config(node)]
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=self.logf, start_new_session=True)
        Fener.running.append(self)
        lab.adopt("fener", node, self.proc.pid)
        lab.wait_for(self._started, 20, f"fener run on {node} started")

    def _started(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"fener on {self.node} exited {self.proc.returncode}:\n{self.text()}")
        return "running on node" in self.text() or NotYet(self.text()[-500:])

    def cli(self, *args):
        """Runs `fener ARGS` with this daemon's configuration; its stdout."""
        argv = [FENER, *args, "-c", self.config]
        if self.node != "ha":
            argv += ["--patroni-config", lab.patroni_config(self.node)]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise AssertionError(f"fener {' '.join(args)} exited {p.returncode}: {p.stderr}")
        return p.stdout

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def records(self, **match):
        if not os.path.exists(self.audit):
            return []
        out = []
        with open(self.audit) as f:
            for line in f:
                r = json.loads(line)
                if all(r.get(k) == v for k, v in match.items()):
                    out.append(r)
        return out

    def wait_record(self, timeout, what, **match):
        def probe():
            recs = self.records(**match)
            return recs or NotYet([(r.get("rule"), r.get("remedy"), r.get("event"), r.get("outcome"),
                                    r.get("reason")) for r in self.records()][-8:])
        return lab.wait_for(probe, timeout, f"{what} (audit of {self.node})")

    def stop(self):
        if self.proc.poll() is None:
            terminate_pids([self.proc.pid], timeout=40)
            self.proc.wait(5)
        self.logf.close()
        if self in Fener.running:
            Fener.running.remove(self)
        self.assert_no_crash()

    def assert_no_crash(self):
        rc = self.proc.returncode
        if rc not in (0, None):
            raise AssertionError(f"fener on {self.node} ended with {rc}:\n{self.text()[-3000:]}")

    @classmethod
    def stop_all(cls):
        for f in list(cls.running):
            try:
                f.stop()
            except Exception as e:  # keep ending the others
                print(f"stopping fener on {f.node}: {e}", file=sys.stderr)


def break_permissions_and_kill(node, chown_root=False):
    d = lab.data_dir(node)
    if chown_root:
        subprocess.run(["chown", "-R", "root:root", d], check=True)
    else:
        os.chmod(d, 0o755)
    lab.kill_postmaster(node)


def streaming(node):
    """State running as a replica that streams from the leader (per the leader's /cluster)."""
    if patroni_state(node) != "running":
        return NotYet(f"{node} state {patroni_state(node)}")
    for m in lab.cluster().get("members", []):
        if m.get("name") == node and m.get("state") in ("streaming", "running"):
            return True
    return NotYet(f"{node} not streaming yet")


def wait_healthy(node, timeout, what):
    return lab.wait_for(lambda: streaming(node), timeout, what)


def action_start(rec):
    """Wall-clock start of an audited action (its record is written when it ends)."""
    t = time.mktime(time.strptime(rec["time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return t + float("0." + rec["time"][20:23]) - rec.get("duration_ms", 0) / 1000.0


class RemediesOnTheLab(unittest.TestCase):

    def setUp(self):
        lab.wait_cluster_healthy(180)

    def tearDown(self):
        Fener.stop_all()

    @unittest.skipUnless(os.environ.get("FENER_BASELINE") == "1", "baseline runs in bench only")
    def test_00_baseline_without_fener(self):
        """What the cluster does about scenario 1 on its own (for the figures)."""
        node = replica()
        t0 = time.time()
        break_permissions_and_kill(node)
        lab.wait_for(lambda: patroni_state(node) == "start failed" or NotYet(patroni_state(node)),
                     30, "start failed")
        healed = None
        while time.time() - t0 < 60:
            if streaming(node) is True:
                healed = time.time() - t0
                break
            time.sleep(0.5)
        figure("0_baseline_chmod_kill", healed_within_60s=healed is not None,
               state_after_60s=patroni_state(node))
        os.chmod(lab.data_dir(node), 0o700)
        wait_healthy(node, 60, "healed by hand")

    def test_01_permissions_and_killed_postmaster_healed(self):
        node = replica()
        f = Fener(node)
        lab.wait_for(lambda: f.records() == [] and "check datadir" in f.text(), 20, "first round")
        t0 = time.time()
        break_permissions_and_kill(node)
        wait_healthy(node, 60, f"{node} healed after chmod 755 + kill")
        healed = time.time() - t0
        fixes = f.records(remedy="fix_permissions", outcome="success")
        self.assertTrue(fixes, f.records())
        self.assertEqual(os.stat(lab.data_dir(node)).st_mode & 0o777, 0o700)
        first = min(action_start(r) for r in f.records(event="action"))
        steps = [(r["rule"], r["remedy"], r["outcome"], round(action_start(r) - t0, 2), r["duration_ms"])
                 for r in f.records(event="action")]
        figure("1_chmod_kill", detect_s=round(first - t0, 2), healthy_s=round(healed, 2),
               steps=steps)
        # Never on the leader: its fener did not run here, and nothing touched it.
        self.assertEqual(lab.leader(), next(n for n in ("kaptan1", "kaptan2") if n != node))

    def test_02_datadir_owned_by_root_healed(self):
        node = replica()
        f = Fener(node)
        lab.wait_for(lambda: "check datadir" in f.text(), 20, "first round")
        t0 = time.time()
        break_permissions_and_kill(node, chown_root=True)
        wait_healthy(node, 60, f"{node} healed after chown -R root + kill")
        healed = time.time() - t0
        fix = f.wait_record(5, "fix_permissions ran", remedy="fix_permissions", outcome="success")
        self.assertEqual(os.stat(lab.data_dir(node)).st_uid, lab.postgres_uid())
        first = min(action_start(r) for r in f.records(event="action"))
        figure("2_chown_root", detect_s=round(first - t0, 2), healthy_s=round(healed, 2),
               changed=fix[0]["details"].get("owners_changed"))

    def test_03_patroni_stopped_is_restarted(self):
        node = replica()
        f = Fener(node)
        lab.wait_for(lambda: "check listening_sockets" in f.text(), 20, "first round")
        t0 = time.time()
        lab.stop_patroni(node)
        wait_healthy(node, 90, f"{node} back after Patroni was stopped")
        healed = time.time() - t0
        rec = f.wait_record(5, "service_restart ran", rule="patroni_down", outcome="success")
        self.assertTrue(rec[0]["lock"]["acquired"])
        self.assertIn(("patroni", node), [(k, n) for k, n, _ in lab.restarts])
        figure("3_patroni_stopped", detect_s=round(action_start(rec[0]) - t0, 2),
               healthy_s=round(healed, 2))

    def test_04_etcd_member_restarted_quorum_kept(self):
        f = Fener("ha")
        lab.wait_for(lambda: "check listening_sockets" in f.text(), 20, "first round")
        t0 = time.time()
        lab.stop_etcd("ha")
        quorum_seen = []

        def back():
            quorum_seen.append(lab.etcd_health("kaptan1") and lab.etcd_health("kaptan2"))
            return lab.etcd_health("ha") or NotYet("ha etcd not healthy")
        lab.wait_for(back, 60, "etcd on ha restarted")
        healed = time.time() - t0
        self.assertTrue(all(quorum_seen), "quorum was lost while one member was down")
        rec = f.wait_record(5, "etcd restart", rule="etcd_down", outcome="success")
        self.assertTrue(rec[0]["facts"]["etcd_quorum"])
        figure("4_etcd_stopped", detect_s=round(action_start(rec[0]) - t0, 2),
               healthy_s=round(healed, 2))

    def test_07_paused_cluster_nothing_done(self):
        node = replica()
        subprocess.run([PATRONICTL, "-c", lab.patroni_config(node), "pause", "--wait"],
                       check=True, capture_output=True)
        try:
            f = Fener(node)
            lab.wait_for(lambda: "check datadir" in f.text(), 20, "first round")
            break_permissions_and_kill(node)
            refused = f.wait_record(30, "refusal because paused", outcome="refused")
            self.assertIn("paused", refused[0]["reason"])
            # Still broken: fener changed nothing.
            self.assertEqual(os.stat(lab.data_dir(node)).st_mode & 0o777, 0o755)
            self.assertFalse([r for r in f.records(event="action")
                              if r.get("outcome") not in ("refused",)], f.records())
        finally:
            subprocess.run([PATRONICTL, "-c", lab.patroni_config(node), "resume", "--wait"],
                           check=True, capture_output=True)
        # Once resumed, the same daemon heals it.
        wait_healthy(node, 90, f"{node} healed after resume")

    def test_08_observe_mode_changes_nothing(self):
        node = replica()
        f = Fener(node, mode="observe")
        lab.wait_for(lambda: "check datadir" in f.text(), 20, "first round")
        break_permissions_and_kill(node)
        would = f.wait_record(30, "would-run record", remedy="fix_permissions", outcome="would_run")
        self.assertIn("chmod", would[0]["plan"])
        lab.wait_for(lambda: f.records(remedy="patroni_restart", outcome="would_run") or NotYet(""),
                     40, "patroni_restart would run")
        self.assertEqual(os.stat(lab.data_dir(node)).st_mode & 0o777, 0o755)
        self.assertNotEqual(patroni_state(node), "running")
        self.assertIn("WOULD RUN", f.text())
        f.stop()
        # Let a safe-mode fener put it right for the next scenarios.
        Fener(node)
        wait_healthy(node, 60, f"{node} healed by a safe-mode fener")

    def test_09_same_fault_on_both_nodes_serialized_by_the_lock(self):
        fs = {n: Fener(n) for n in ("kaptan1", "kaptan2")}
        for f in fs.values():
            lab.wait_for(lambda f=f: "check listening_sockets" in f.text(), 20, "first round")
        # Both at once, as one bad deploy would do it.
        stoppers = [threading.Thread(target=lab.stop_patroni, args=(n,)) for n in fs]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        lab.wait_cluster_healthy(150)
        spans = []
        for n, f in fs.items():
            recs = f.wait_record(10, "restart", rule="patroni_down", outcome="success")
            for r in f.records(event="action"):
                if r.get("outcome") in ("success", "failure"):
                    spans.append((action_start(r), action_start(r) + r["duration_ms"] / 1000.0, n))
            self.assertTrue(recs[0]["lock"]["acquired"])
        spans.sort()
        for a, b in zip(spans, spans[1:]):
            self.assertLessEqual(a[1], b[0] + 0.05, f"disruptive actions overlapped: {spans}")
        held = sum(len(f.records(outcome="lock_held")) for f in fs.values())
        figure("9_both_nodes", actions=len(spans), lock_held_waits=held)

    def test_10_swp_file_copied_from_leader_and_traversal_refused(self):
        leader, node = lab.leader(), replica()
        data = secrets.token_bytes(5000)
        src = os.path.join(lab.data_dir(leader), ".pg_hba.conf.swp")
        with open(src, "wb") as out:
            out.write(data)
        os.chown(src, lab.postgres_uid(), lab.postgres_gid())
        os.chmod(src, 0o600)
        evil = os.path.join(lab.data_dir(leader), ".evil.swp")
        os.symlink("/etc/shadow", evil)
        dst = os.path.join(lab.data_dir(node), ".pg_hba.conf.swp")
        try:
            fl, fr = Fener(leader), Fener(node)
            lab.wait_for(lambda: os.path.exists(dst) or NotYet("not copied yet"), 60, "copied")
            with open(dst, "rb") as got:
                self.assertEqual(got.read(), data)
            st = os.stat(dst)
            self.assertEqual((st.st_uid, st.st_mode & 0o777), (lab.postgres_uid(), 0o600))
            self.assertFalse(os.path.lexists(os.path.join(lab.data_dir(node), ".evil.swp")))
            base = f"http://{lab.address(leader)}:8009/v1/peer/files/data_dir/"
            for bad in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", ".evil.swp",
                        "PG_VERSION", "..", "%2e%2e"):
                code = http_status(base + bad, token)
                self.assertIn(code, (400, 403, 404), bad)
            self.assertEqual(http_status(base + ".pg_hba.conf.swp", "wrong" * 4), 401)
            self.assertEqual(http_status(base + ".pg_hba.conf.swp", token), 200)
            fr.wait_record(5, "copy audited", remedy="copy_from_leader", outcome="success")
        finally:
            for p in (src, evil, dst):
                if os.path.lexists(p):
                    os.unlink(p)

    def test_11_unfixable_replica_safe_gives_up_full_reinits(self):
        leader, node = lab.leader(), replica()
        f = Fener(node)
        lab.wait_for(lambda: "check patroni_node" in f.text(), 20, "first round")
        leader_pid = lab.postmaster_pid(leader)
        t0 = time.time()
        os.unlink(os.path.join(lab.data_dir(node), "global", "pg_control"))
        lab.kill_postmaster(node)
        gave_up = f.wait_record(120, "safe mode gives up", rule="postgres_down", event="gave_up")
        self.assertIn("needs mode full", gave_up[0]["reason"])
        self.assertFalse(f.records(remedy="patroni_reinit", event="action"))
        self.assertIn("GAVE UP", f.text())
        # The operator's view and reset, through the daemon's API.
        shown = json.loads(f.cli("rules", "--json"))
        phases = {r["rule"]: r["phase"] for r in shown["rules"]}
        self.assertEqual(phases["postgres_down"], "gave_up", shown)
        self.assertIn("rule postgres_down reset", f.cli("rules", "reset", "postgres_down"))
        f.wait_record(5, "reset audited", rule="postgres_down", event="reset")
        f.stop()
        full = Fener(node, mode="full")
        wait_healthy(node, 180, f"{node} reinitialized in mode full")
        healed = time.time() - t0
        rec = full.wait_record(10, "reinit", remedy="patroni_reinit", outcome="success")
        self.assertEqual(rec[0]["facts"]["leader"], leader)
        self.assertTrue(all(g["pass"] for g in rec[0]["guards"]))
        self.assertEqual(lab.postmaster_pid(leader), leader_pid, "the leader was touched")
        figure("5_unfixable_replica", full_mode_healthy_s=round(healed, 2))

    def test_12_broken_leader_is_never_reinitialized(self):
        leader = lab.leader()
        fs = {n: Fener(n, mode="full") for n in ("kaptan1", "kaptan2")}
        for f in fs.values():
            lab.wait_for(lambda f=f: "check patroni_node" in f.text(), 20, "first round")
        os.unlink(os.path.join(lab.data_dir(leader), "global", "pg_control"))
        lab.kill_postmaster(leader)
        # Whatever Patroni does (fail over or not), fener never reinitializes a leader.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for r in fs[leader].records(remedy="patroni_reinit", event="action"):
                if r.get("outcome") in ("success", "failure"):
                    self.assertNotEqual(r["facts"]["leader"], leader, r)
                    self.assertNotIn(r["facts"]["self_role"], ("master", "primary"), r)
            if lab.leader() not in (None, leader) and streaming(leader) is True:
                break  # failed over, and the old leader was rebuilt as a replica
            time.sleep(1)
        refused = [r for r in fs[leader].records(outcome="refused")
                   if r.get("remedy") == "patroni_reinit"]
        figure("6_broken_leader", failed_over=lab.leader() != leader,
               reinit_refusals_on_leader=len(refused))


def http_status(url, tok):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {tok}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


if __name__ == "__main__":
    unittest.main(verbosity=2)
