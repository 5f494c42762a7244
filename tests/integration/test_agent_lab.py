#!/usr/bin/python3
"""fener's HAProxy agent-check against a real HAProxy 2.6 in front of the real lab.

HAProxy on the ha node has the agent design (`primary` 5000, `replicas` 5001: a TCP
check plus fener's agent on NODE:8010) beside Patroni's usual httpchk design
(`primary_httpchk` 5002). fener runs on both database nodes. The tests assert where
client sessions land, and measure a switchover: leader key change -> agent answers,
promotion -> sessions through each design reach the new leader.

    FENER_BIN=build/fener PYTHONPATH=tests /usr/bin/python3 tests/integration/test_agent_lab.py

FENER_FIGURES=FILE appends the measured times as JSON lines.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lab.lab import NotYet, agent_query, http_json  # noqa: E402
import test_remedies_lab as remedies  # noqa: E402  (its Fener runner, pointed at this lab)
import urllib.request  # noqa: E402

PATRONICTL = "/usr/bin/patronictl"
UP, DOWN = 2, 0
ADMIN_MAINT = 0x01  # forced maintenance: what an agent's "maint" sets
ADMIN_DRAIN = 0x08  # forced drain

lab = None
feners = {}


def setUpModule():
    global lab
    remedies.setUpModule()
    lab = remedies.lab
    for node in ("kaptan1", "kaptan2"):
        feners[node] = remedies.Fener(node, mode="safe", extra="fleet: {interval: 1s}\n")


def tearDownModule():
    remedies.tearDownModule()


def figure(name, **values):
    remedies.figure(name, **values)


def agent_answer(node, send="primary"):
    """The agent's line on node for an agent-send word, or "" (no line / no listener)."""
    try:
        return agent_query(lab.address(node), 8010, send)
    except OSError:
        return ""


def psql(host, port, sql="select pg_is_in_recovery(), inet_server_addr()"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=lab.pg_passwords["superuser"], PGCONNECT_TIMEOUT="1")
    r = subprocess.run(["psql", f"host={host} port={port} user=postgres dbname=postgres", "-Atc", sql],
                       env=env, capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        return None
    return tuple(r.stdout.strip().split("|"))


def via_haproxy(name):
    return psql(lab.address("ha"), lab.haproxy_port(name))


def servers(backend):
    return {srv: st for (be, srv), st in lab.haproxy_servers().items() if be == backend}


def only_up(backend, node):
    try:
        st = servers(backend)
    except OSError:
        return False
    return all((v["op_state"] == UP) == (srv == node) for srv, v in st.items())


def routed_as_expected(leader, replica):
    p, r = servers("primary"), servers("replicas")
    want = (p[leader]["op_state"], p[replica]["op_state"], r[replica]["op_state"], r[leader]["op_state"])
    if want != (UP, DOWN, UP, DOWN):
        return NotYet(f"primary {p}, replicas {r}")
    return True


class AgentOnTheLab(unittest.TestCase):

    def test_01_sessions_reach_the_leader_and_the_replica(self):
        leader = lab.leader()
        replica = remedies.replica()
        self.assertTrue(agent_answer(leader).startswith("up ready"), agent_answer(leader))
        self.assertTrue(agent_answer(replica).startswith("down"), agent_answer(replica))
        self.assertTrue(agent_answer(replica, "replica").startswith("up ready"))
        lab.wait_for(lambda: routed_as_expected(leader, replica), 20, "HAProxy follows the agents",
                     logs=[lab.haproxy_log()])
        self.assertEqual(via_haproxy("primary"), ("f", lab.address(leader)))
        self.assertEqual(via_haproxy("replicas"), ("t", lab.address(replica)))
        # A client sending nothing gets the default role (primary).
        with socket.create_connection((lab.address(replica), 8010), timeout=2) as s:
            self.assertTrue(s.makefile().readline().startswith("down"))

    def test_02_switchover_timing(self):
        old = lab.leader()
        new = remedies.replica()
        lab.wait_for(lambda: routed_as_expected(old, new), 30, "HAProxy settled before the switchover")
        lab.wait_for(lambda: via_haproxy("primary_httpchk") == ("f", lab.address(old)) or NotYet("httpchk"),
                     30, "httpchk design settled")
        marks = {}
        stop = threading.Event()

        def mark(name):
            marks.setdefault(name, time.monotonic())

        def poll(name, probe, period):
            while not stop.is_set() and name not in marks:
                if probe():
                    mark(name)
                time.sleep(period)

        def key_holder():
            try:
                return http_json(lab.etcd_url("ha", "/v2/keys/service/liman/leader"), 1)["node"]["value"]
            except (OSError, ValueError, KeyError):
                return None

        probes = {
            "key": (lambda: key_holder() == new, 0.02),
            "old_agent_down": (lambda: agent_answer(old).startswith("down"), 0.02),
            "new_agent_up": (lambda: agent_answer(new).startswith("up"), 0.02),
            "promoted": (lambda: psql(lab.address(new), 5432, "select pg_is_in_recovery()") == ("f",), 0.05),
            # HAProxy's own view, polled every 20 ms: only the new leader UP in the backend.
            "agent_backend": (lambda: only_up("primary", new), 0.02),
            "httpchk_backend": (lambda: only_up("primary_httpchk", new), 0.02),
            # A client session landing on the new leader. While a backend has no server UP,
            # HAProxy queues the connection (up to timeout connect), so these are coarser.
            "agent_routes": (lambda: via_haproxy("primary") == ("f", lab.address(new)), 0.05),
            "httpchk_routes": (lambda: via_haproxy("primary_httpchk") == ("f", lab.address(new)), 0.05),
        }
        threads = [threading.Thread(target=poll, args=(n, p, t), daemon=True) for n, (p, t) in probes.items()]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        r = subprocess.run([PATRONICTL, "-c", lab.patroni_config(old), "switchover", "--leader", old,
                            "--candidate", new, "--force"], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lab.wait_for(lambda: all(n in marks for n in probes) or NotYet(sorted(marks)), 60,
                     "every switchover probe saw the new state", logs=[lab.haproxy_log()])
        stop.set()
        for t in threads:
            t.join(5)
        ms = {n: round((v - t0) * 1000) for n, v in marks.items()}
        figure("switchover", **{f"{n}_ms": v for n, v in sorted(ms.items())},
               agent_backend_after_promotion_ms=ms["agent_backend"] - ms["promoted"],
               httpchk_backend_after_promotion_ms=ms["httpchk_backend"] - ms["promoted"],
               agent_session_after_promotion_ms=ms["agent_routes"] - ms["promoted"],
               httpchk_session_after_promotion_ms=ms["httpchk_routes"] - ms["promoted"],
               old_agent_down_after_key_ms=ms["old_agent_down"] - ms["key"],
               new_agent_up_after_key_ms=ms["new_agent_up"] - ms["key"],
               new_agent_up_after_promotion_ms=ms["new_agent_up"] - ms["promoted"])
        # The agent design must not be slower than the httpchk one it replaces.
        self.assertLessEqual(ms["agent_backend"], ms["httpchk_backend"] + 200)
        lab.wait_for(lambda: routed_as_expected(new, old), 30, "HAProxy follows the agents after the switchover")

    def test_03_node_under_remedy_is_in_maintenance(self):
        replica = remedies.replica()
        seen = {"maint": False}
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                try:
                    st = servers("replicas").get(replica, {})
                    if st.get("admin_state", 0) & ADMIN_MAINT:
                        seen["maint"] = True
                except OSError:
                    pass
                time.sleep(0.05)

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        try:
            remedies.break_permissions_and_kill(replica)
            f = feners[replica]
            f.wait_record(60, "PostgreSQL restarted by a rule", remedy="patroni_restart", outcome="success")
            remedies.wait_healthy(replica, 90, "replica healed")
            lab.wait_for(lambda: seen["maint"] or NotYet(servers("replicas")), 10,
                         "HAProxy showed MAINT while the remedy ran")
            # Afterwards "ready" takes it out of maintenance and it serves again.
            lab.wait_for(lambda: (servers("replicas")[replica]["admin_state"] == 0
                                  and servers("replicas")[replica]["op_state"] == UP)
                         or NotYet(servers("replicas")), 30, "replica back in the pool")
            # Where it is down (the primary backend), it must not stay in MAINT either.
            lab.wait_for(lambda: (servers("primary")[replica]["admin_state"] == 0
                                  and servers("primary")[replica]["op_state"] == DOWN)
                         or NotYet(servers("primary")), 30, "replica out of MAINT in the primary backend")
        finally:
            stop.set()
            t.join(5)

    def test_04_agent_load_against_patroni(self):
        load = os.environ.get("FENER_LOAD")
        if not load or not os.path.exists(load):
            self.skipTest("FENER_LOAD (the fener-load client) not given")
        leader = lab.leader()
        out = {}
        for name, argv in (("agent", [load, "agent", f"{lab.address(leader)}:8010", "8", "5", "primary"]),
                           ("patroni", [load, "http", f"{lab.address(leader)}:8008", "/primary", "8", "5"])):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            out[name] = json.loads(r.stdout)
        figure("agent_load", **{f"{k}_{m}": out[k][m] for k in out for m in ("per_second", "p50_ms", "p99_ms", "errors")})
        self.assertEqual(out["agent"]["errors"], 0)
        self.assertTrue(agent_answer(leader).startswith("up"))

    def test_05_status_metrics_healthz(self):
        f = feners["kaptan1"]
        base = f"http://{lab.address('kaptan1')}:8009"
        with urllib.request.urlopen(base + "/status", timeout=5) as r:
            st = json.loads(r.read())
        self.assertEqual(st["node"], "kaptan1")
        names = {c["name"] for c in st["checks"]}
        self.assertIn("patroni_node", names)
        self.assertIn("agent", st)
        self.assertGreater(st["agent"]["connections"], 0)
        self.assertIn(st["leader_key"], ("kaptan1", "kaptan2"))
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            text = r.read().decode()
            self.assertTrue(r.headers["Content-Type"].startswith("text/plain; version=0.0.4"))
        self.assertIn('fener_check_status{check="patroni_node"', text)
        self.assertIn("fener_agent_answers_total{", text)
        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
            self.assertEqual(r.status, 200)
        out = subprocess.run([remedies.FENER, "status", "-c", f.config, "--patroni-config",
                              lab.patroni_config("kaptan1")], capture_output=True, text=True, timeout=30)
        self.assertIn("patroni_node", out.stdout)
        self.assertIn(out.returncode, (0, 1), out.stdout + out.stderr)

    def test_06_haproxy_check_on_the_ha_node_with_agents(self):
        ha = remedies.Fener("ha", mode="observe", extra=f"haproxy: {{config: {lab.haproxy_config()}}}\n")
        try:
            def passing():
                p = subprocess.run([remedies.FENER, "check", "--json", "--only", "haproxy", "-c", ha.config],
                                   capture_output=True, text=True, timeout=30)
                res = json.loads(p.stdout)["checks"][0] if p.stdout.startswith("{") else {}
                return p.returncode == 0 or NotYet((p.returncode, res.get("message"), p.stderr[-300:]))
            lab.wait_for(passing, 30, "the haproxy check passes on the agent backends")
        finally:
            ha.stop()

    def test_09_fleet_view_shows_every_node_and_a_stale_one(self):
        def cluster():
            p = subprocess.run([remedies.FENER, "status", "--cluster", "--json", "-c", feners["kaptan1"].config,
                                "--patroni-config", lab.patroni_config("kaptan1")],
                               capture_output=True, text=True, timeout=30)
            if not p.stdout.startswith("{"):
                return NotYet(p.stderr)
            return {n["node"]: n["state"] for n in json.loads(p.stdout)["nodes"]}
        lab.wait_for(lambda: (cluster().get("kaptan1") == "fresh" and cluster().get("kaptan2") == "fresh")
                     or NotYet(cluster()), 30, "both database nodes published")
        self.assertEqual(cluster().get("ha"), "missing")  # an etcd member with no fener
        feners["kaptan2"].stop()
        lab.wait_for(lambda: cluster().get("kaptan2") == "stale" or NotYet(cluster()), 30,
                     "a node that stopped publishing shows as stale")


if __name__ == "__main__":
    unittest.main(verbosity=2)
