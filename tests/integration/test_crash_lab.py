#!/usr/bin/python3
"""fener when things fail under it, on the real lab (etcd x3 + Patroni x2 + PostgreSQL 15):

1. fener is SIGKILLed in the middle of a patroni_reinit: the etcd lock expires by its TTL,
   the restarted fener audits the action as `interrupted`, never repeats the reinit on its
   own, and shows the rule as given up; Patroni's own reinit brings the replica back.
2. SIGHUP with an invalid fener.yaml while a (slow) service_restart runs: the error names
   file, line and key; the remedy finishes under the old configuration; /status and
   /metrics say the reload failed; a later valid SIGHUP applies.
3. All three etcd members down: the agent-check keeps answering from the local view, the
   etcd checks go critical and an alert goes out, nothing that needs the lock runs; when
   etcd returns the checks pass, the leader watch and the fleet publishing resume.

Every process (the lab's and each fener) is ended by pid, also when a test fails.

    FENER_LAB_NET=127.0.6 FENER_BIN=build/fener PYTHONPATH=tests \\
        /usr/bin/python3 tests/integration/test_crash_lab.py

FENER_FIGURES=FILE appends one JSON line per measured figure.
"""

import http.server
import json
import os
import signal
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lab.lab import NotYet, agent_query, http_json  # noqa: E402
import test_remedies_lab as remedies  # noqa: E402  (its lab and Fener runner)

Fener = remedies.Fener
lab = None
LOCK_TTL_S = 20  # the `lock: ttl:` of remedies.Fener's configuration


def setUpModule():
    global lab
    remedies.setUpModule()
    lab = remedies.lab


def tearDownModule():
    remedies.tearDownModule()


def figure(name, **values):
    remedies.figure(name, **values)


def etcd_get(key):
    """(status, parsed body) of GET /v2/keys/KEY from the first etcd member that answers."""
    for node in ("ha", "kaptan1", "kaptan2"):
        try:
            with urllib.request.urlopen(lab.etcd_url(node, "/v2/keys" + key), timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, None
        except OSError:
            continue
    return None, None


def fener_status(node):
    return http_json(f"http://{lab.address(node)}:8009/status", timeout=2.0)


def fener_metrics(node):
    with urllib.request.urlopen(f"http://{lab.address(node)}:8009/metrics", timeout=2) as r:
        return r.read().decode()


def check_status(node, name):
    try:
        st = fener_status(node)
    except (OSError, ValueError):
        return None
    return next((c.get("status") for c in st.get("checks", []) if c.get("name") == name), None)


def agent_answer(node, send):
    """(line, seconds) of the agent-check on node for an agent-send word; "" if none."""
    t0 = time.monotonic()
    try:
        return agent_query(lab.address(node), 8010, send, timeout=5), time.monotonic() - t0
    except OSError:
        return "", time.monotonic() - t0


def killed(f):
    """SIGKILLs a Fener and forgets it (it cannot end cleanly, by design)."""
    os.kill(f.proc.pid, signal.SIGKILL)
    f.proc.wait(10)
    f.logf.close()
    if f in Fener.running:
        Fener.running.remove(f)


class Webhook:
    """A webhook receiver on the lab's ha address: every event fener posts."""

    def __init__(self):
        self.events = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    outer.events.extend(json.loads(body).get("events", []))
                except ValueError:
                    pass
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((lab.address("ha"), 0), Handler)
        self.url = f"http://{lab.address('ha')}:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class CrashAndOutages(unittest.TestCase):

    def setUp(self):
        lab.wait_cluster_healthy(180)

    def tearDown(self):
        Fener.stop_all()

    def test_1_sigkill_during_reinit(self):
        leader, node = lab.leader(), remedies.replica()
        leader_pid = lab.postmaster_pid(leader)
        # Straight to the reinit: the lower steps are test_remedies_lab's business.
        reinit_only = lambda text: text.replace(  # noqa: E731
            "  postgres_down:\n    settle: 4s\n",
            "  postgres_down:\n    settle: 4s\n    ladder:\n"
            "      - remedy: patroni_reinit\n        timeout: 5m\n")
        f = Fener(node, mode="full", edit=reinit_only)
        lab.wait_for(lambda: "check patroni_node" in f.text(), 20, "first round")
        intent = os.path.join(f.state_dir, "intent.json")
        os.unlink(os.path.join(lab.data_dir(node), "global", "pg_control"))
        lab.kill_postmaster(node)

        def in_flight():
            if f.proc.poll() is not None:
                raise AssertionError(f"fener exited:\n{f.text()[-2000:]}")
            if not os.path.exists(intent):
                return NotYet("no intent record yet")
            st = remedies.patroni_state(node)
            # Patroni took the reinit over: fener's part is only waiting for it now (until
            # it sees "running", which a fast reinit reaches before fener's next poll).
            return st if st in ("creating replica", "starting", "running") else NotYet(st)
        state_at_kill = lab.wait_for(in_flight, 120, "patroni_reinit in flight", interval=0.02)
        killed(f)
        t_kill = time.monotonic()
        with open(intent) as fh:
            rec = json.load(fh)
        self.assertEqual((rec["rule"], rec["remedy"], rec["risk"]),
                         ("postgres_down", "patroni_reinit", "destructive"))
        self.assertEqual(rec["pid"], f.proc.pid)
        lock_key = rec["lock"]["key"]
        self.assertEqual(lock_key, "/fener/liman/lock")
        code, body = etcd_get(lock_key)
        self.assertEqual(code, 200, "the lock key is gone at once")
        self.assertEqual(body["node"]["value"], rec["lock"]["value"])
        ttl_left = body["node"].get("ttl")

        # Restarted at once, as systemd would: it must not take the reinit up again.
        again = Fener(node, mode="full", edit=reinit_only)
        interrupted = again.wait_record(10, "interrupted audited", event="interrupted")
        self.assertEqual(interrupted[0]["remedy"], "patroni_reinit")
        self.assertEqual(interrupted[0]["pid"], f.proc.pid)
        self.assertIn("fener rules reset postgres_down", interrupted[0]["reason"])
        again.wait_record(5, "gave_up audited", rule="postgres_down", event="gave_up")
        self.assertFalse(os.path.exists(intent), "the intent record was not dealt with")
        self.assertTrue(os.path.exists(os.path.join(f.state_dir, "held.json")))
        shown = json.loads(again.cli("rules", "--json"))
        rule = next(r for r in shown["rules"] if r["rule"] == "postgres_down")
        held_seen = rule["phase"] == "gave_up"
        if held_seen:
            self.assertIn("interrupted", rule.get("reason", ""))
        else:
            # Patroni's reinit already finished and the check recovered: the audit says so.
            again.wait_record(5, "recovered", rule="postgres_down", event="recovered")
        self.assertIn("INTERRUPTED", again.text())

        # The lock's expiry and the replica's return, each timed on its own from the kill.
        times = {"lock_gone": None, "healthy": None}

        def lock_gone_and_healthy():
            now = time.monotonic() - t_kill
            if times["lock_gone"] is None and etcd_get(lock_key)[0] == 404:
                times["lock_gone"] = now
            if times["healthy"] is None and remedies.streaming(node) is True:
                times["healthy"] = now
            return all(v is not None for v in times.values()) or NotYet(times)
        lab.wait_for(lock_gone_and_healthy, 180, "lock expired and replica back", interval=0.1)
        expired_s, healthy_s = times["lock_gone"], times["healthy"]
        # Held until the check recovers: then the rule resumes, and the hold is forgotten.
        again.wait_record(30, "rule recovered", rule="postgres_down", event="recovered")
        lab.wait_for(lambda: not os.path.exists(os.path.join(f.state_dir, "held.json"))
                     or NotYet("held.json still there"), 10, "hold forgotten")
        self.assertFalse(again.records(remedy="patroni_reinit", event="action"), again.records())
        self.assertNotIn("RUNNING patroni_reinit", again.text())
        self.assertEqual(lab.postmaster_pid(leader), leader_pid, "the leader was touched")
        figure("crash_sigkill_reinit", lock_ttl_s=LOCK_TTL_S, ttl_left_at_kill_s=ttl_left,
               lock_expired_after_kill_s=round(expired_s, 2),
               replica_healthy_after_kill_s=round(healthy_s, 2), held_seen_in_rules=held_seen,
               patroni_state_at_kill=state_at_kill)
        self.assertLessEqual(expired_s, LOCK_TTL_S + 5)

    def test_2_sighup_with_a_bad_file_during_a_remedy(self):
        node = remedies.replica()
        slow = os.path.join(remedies.conf_dir, f"slow-restart-{node}.sh")
        with open(slow, "w") as fh:
            fh.write("#!/bin/sh\nsleep 5\nexec " + " ".join(remedies.ctl("patroni", node)) + "\n")
        os.chmod(slow, 0o755)
        slow_restart = lambda text: text.replace(  # noqa: E731
            f"    command: {json.dumps(remedies.ctl('patroni', node))}",
            f"    command: {json.dumps([slow])}")
        f = Fener(node, edit=slow_restart)
        lab.wait_for(lambda: "check listening_sockets" in f.text(), 20, "first round")
        before = fener_status(node)
        names = [c["name"] for c in before["checks"]]
        with open(f.config) as fh:
            good = fh.read()
        lab.stop_patroni(node)
        lab.wait_for(lambda: "RUNNING service_restart" in f.text() or NotYet(""), 60,
                     "service_restart running")
        t_hup = time.monotonic()
        with open(f.config, "w") as fh:
            fh.write(good.replace("defaults:\n", "defaults:\n  intervall: 3s\n"))
        f.proc.send_signal(signal.SIGHUP)
        lab.wait_for(lambda: "reload failed" in f.text() or NotYet(""), 10, "reload rejected")
        line = next(ln for ln in f.text().splitlines() if "reload failed" in ln)
        self.assertIn(f.config, line)
        self.assertIn("defaults.intervall", line)
        bad_line = good.split("\n").index("defaults:") + 2
        self.assertIn(f":{bad_line}:", line)
        st = fener_status(node)
        self.assertFalse(st["config"]["last_reload"]["ok"], st["config"])
        self.assertEqual(st["config"]["last_reload"]["line"], bad_line)
        self.assertEqual(st["config"]["reload_failures"], 1)
        self.assertIn("fener_config_reload_failures_total 1", fener_metrics(node))
        self.assertEqual([c["name"] for c in st["checks"]], names)
        # The remedy was in progress during the SIGHUP: it finishes, audited as before.
        rec = f.wait_record(90, "service_restart finished", rule="patroni_down", event="action",
                            outcome="success")
        self.assertGreater(time.monotonic() - t_hup, 0)
        self.assertEqual(rec[0]["mode"], "safe")
        remedies.wait_healthy(node, 90, f"{node} back after the slow restart")
        # The old configuration still runs its checks every second.
        runs = {c["name"]: c["last_run"] for c in fener_status(node)["checks"]}
        lab.wait_for(lambda: all(c["last_run"] != runs[c["name"]]
                                 for c in fener_status(node)["checks"]
                                 if c["name"] in ("patroni_node", "etcd_health"))
                     or NotYet("no fresh results"), 5, "checks keep running")
        # A valid file applies.
        with open(f.config, "w") as fh:
            fh.write(good.replace("mode: safe", "mode: observe"))
        f.proc.send_signal(signal.SIGHUP)
        lab.wait_for(lambda: fener_status(node)["mode"] == "observe" or NotYet(""), 10,
                     "valid reload applied")
        st = fener_status(node)
        self.assertTrue(st["config"]["last_reload"]["ok"], st["config"])
        self.assertEqual(st["config"]["reload_failures"], 1)
        figure("sighup_bad_file", remedy_ms=rec[0]["duration_ms"])

    def test_3_etcd_entirely_down(self):
        node = remedies.replica()
        hook = Webhook()
        try:
            self._etcd_down(node, hook)
        finally:
            hook.close()
            for n in ("ha", "kaptan1", "kaptan2"):
                if not lab.etcd_pid(n):
                    lab.start_etcd(n, wait=False)

    def _etcd_down(self, node, hook):
        extra = f"""fleet: {{interval: 1s}}
alerts:
  group_wait: 200ms
  webhooks:
    - name: test
      url: {hook.url}
"""
        f = Fener(node, extra=extra)
        lab.wait_for(lambda: check_status(node, "etcd_health") == "passing"
                     or NotYet(check_status(node, "etcd_health")), 20, "etcd_health passing")
        fleet_key = f"/fener/liman/nodes/{node}"
        lab.wait_for(lambda: etcd_get(fleet_key)[0] == 200 or NotYet(""), 10, "fleet published")
        lab.wait_for(lambda: fener_status(node).get("leader_key") or NotYet(""), 10,
                     "leader watch")

        stopped = []

        def stop(n):
            lab.stop_etcd(n)
            stopped.append(time.monotonic())
        t_stop = time.monotonic()
        stoppers = [threading.Thread(target=stop, args=(n,)) for n in ("ha", "kaptan1", "kaptan2")]
        for t in stoppers:
            t.start()
        # Figures count from the loss of quorum: the second member gone.
        lab.wait_for(lambda: len(stopped) >= 2 or NotYet(stopped), 60, "quorum lost",
                     interval=0.02)
        t_down = sorted(stopped)[1]
        # Agent answers all along, from the local view: never hung, never a claim that
        # contradicts Patroni's own role.
        latencies, answers = [], []
        seen = {"critical": None, "alert": None, "refused": None, "leader_unknown": None}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for send in ("primary", "replica"):
                line, took = agent_answer(node, send)
                latencies.append(took)
                answers.append((send, line))
                role = (lab.patroni_state(node) or {}).get("role")
                if send == "primary" and role in ("replica", "standby"):
                    self.assertFalse(line.startswith("up"), f"replica answered up as primary: {line}")
            now = time.monotonic() - t_down
            if seen["critical"] is None and check_status(node, "etcd_health") == "critical":
                seen["critical"] = now
            if seen["alert"] is None and any(
                    e.get("subject") == "etcd_health" and e.get("state") == "critical"
                    for e in hook.events):
                seen["alert"] = now
            if seen["refused"] is None and f.records(rule="etcd_down", outcome="refused"):
                seen["refused"] = now
            if seen["leader_unknown"] is None and fener_status(node).get("leader_key") is None:
                seen["leader_unknown"] = now
            if all(v is not None for v in seen.values()) and now > 15:
                break
            time.sleep(0.2)
        for t in stoppers:
            t.join()
        stop_s = max(stopped) - t_stop
        self.assertTrue(all(v is not None for v in seen.values()), (seen, f.records()[-5:]))
        unanswered = [(send, line) for send, line in answers if not line]
        self.assertFalse(unanswered, f"agent-check answers stopped: {len(unanswered)} of "
                                     f"{len(answers)}")
        self.assertLess(max(latencies), 3.0, "an agent answer hung")
        locked = [r for r in f.records(event="action") if r.get("lock", {}).get("acquired")]
        self.assertFalse(locked, "a remedy took the lock while etcd was down")
        refused = f.records(rule="etcd_down", outcome="refused")
        quorum = [g for g in refused[0]["guards"] if g["guard"] == "etcd_quorum"]
        self.assertEqual([g["pass"] for g in quorum], [False], refused[0]["guards"])
        self.assertFalse(f.records(rule="etcd_down", outcome="success"))

        t_up = time.monotonic()
        stamp = time.time()
        for n in ("ha", "kaptan1", "kaptan2"):
            lab.start_etcd(n, wait=False)
        # Each sign of recovery, timed on its own from the moment etcd was started again.
        back = {"etcd": None, "checks": None, "leader_watch": None, "fleet": None}

        def fleet_fresh():
            code, body = etcd_get(fleet_key)
            if code != 200:
                return False
            at = json.loads(body["node"]["value"]).get("published_at", "")
            t = time.mktime(time.strptime(at[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            return t + float("0." + (at[20:23] or "0")) >= stamp

        def resumed():
            now = time.monotonic() - t_up
            probes = {
                "etcd": lambda: all(lab.etcd_health(n) for n in ("ha", "kaptan1", "kaptan2")),
                "checks": lambda: check_status(node, "etcd_health") == "passing",
                "leader_watch": lambda: bool(fener_status(node).get("leader_key")),
                "fleet": fleet_fresh,
            }
            for k, probe in probes.items():
                if back[k] is None and probe():
                    back[k] = round(now, 2)
            return all(v is not None for v in back.values()) or NotYet(back)
        lab.wait_for(resumed, 120, "etcd, checks, leader watch and fleet back", interval=0.1)
        answered = sum(1 for _, line in answers if line)
        failed_pubs = [ln for ln in fener_metrics(node).splitlines()
                       if ln.startswith('fener_fleet_publications_total{outcome="failed"}')]
        self.assertTrue(failed_pubs, "no failed fleet publication counted during the outage")
        figure("etcd_down", stopping_all_three_s=round(stop_s, 2), agent_answers=len(answers),
               agent_answered=answered, agent_latency_max_ms=round(max(latencies) * 1000, 1),
               agent_latency_median_ms=round(sorted(latencies)[len(latencies) // 2] * 1000, 1),
               etcd_critical_s=round(seen["critical"], 2), alert_s=round(seen["alert"], 2),
               refused_s=round(seen["refused"], 2),
               leader_unknown_s=round(seen["leader_unknown"], 2),
               fleet_failed=failed_pubs[0].split()[-1], etcd_healthy_after_start_s=back["etcd"],
               checks_passing_after_start_s=back["checks"],
               leader_watch_back_after_start_s=back["leader_watch"],
               fleet_back_after_start_s=back["fleet"])
        lab.wait_cluster_healthy(180)


if __name__ == "__main__":
    unittest.main(verbosity=2)
