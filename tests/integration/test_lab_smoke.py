#!/usr/bin/python3
"""Smoke test of the lab harness: a real etcd x3 + Patroni x2 cluster comes up healthy,
survives the failure injections the harness offers, and leaves no process behind.

    PYTHONPATH=tests /usr/bin/python3 tests/integration/test_lab_smoke.py
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lab.lab import (ETCD_CLIENT_PORT, ETCD_PEER_PORT, HAPROXY_NODE, HAPROXY_PORTS, LEADER_ROLES,  # noqa: E402
                     NODES, PATRONI_NODES, PATRONI_PORT, PG_PORT, Lab, NotYet, pid_alive, proc_comm,
                     proc_state)


def port_free(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((addr, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def psql_via_haproxy(lab, port):
    """(pg_is_in_recovery, server address) of a session opened through HAProxy, or NotYet."""
    # No PG* from the environment: it could redirect the connection.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=lab.pg_passwords["superuser"], PGCONNECT_TIMEOUT="2")
    r = subprocess.run(["psql", f"host={lab.address(HAPROXY_NODE)} port={port} user=postgres dbname=postgres",
                        "-Atc", "select pg_is_in_recovery(), inet_server_addr()"],
                       env=env, capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        return NotYet(f"psql via port {port}: rc {r.returncode}: {r.stderr.strip()}")
    return tuple(r.stdout.strip().split("|"))


class LabSmokeTest(unittest.TestCase):

    def test_cluster_lifecycle(self):
        lab = Lab()
        t0 = time.monotonic()
        with lab:
            t_healthy = time.monotonic() - t0

            # --- etcd: three named members, each healthy
            self.assertEqual(lab.etcd_members(), sorted(NODES))
            for node in NODES:
                self.assertTrue(lab.etcd_health(node), f"etcd on {node} not healthy")
                self.assertEqual(proc_comm(lab.etcd_pid(node)), "etcd")

            # --- Patroni: exactly one leader, the other a streaming replica
            members = lab.cluster()["members"]
            leaders = [m["name"] for m in members if m["role"] in LEADER_ROLES]
            self.assertEqual(len(leaders), 1, members)
            leader = leaders[0]
            self.assertEqual(lab.leader(), leader)
            replica = next(n for n in PATRONI_NODES if n != leader)
            rep_member = next(m for m in members if m["name"] == replica)
            self.assertEqual(rep_member["role"], "replica")
            self.assertIn(rep_member["state"], ("running", "streaming"))
            self.assertIsInstance(rep_member["lag"], int)
            lead_state = lab.patroni_state(leader)
            self.assertIn(lead_state["role"], ("master", "primary"))
            self.assertEqual(lead_state["state"], "running")
            streams = [r for r in lead_state.get("replication", []) if r["application_name"] == replica]
            self.assertEqual(len(streams), 1, lead_state)
            self.assertEqual(streams[0]["state"], "streaming")
            for node in PATRONI_NODES:
                self.assertEqual(proc_comm(lab.patroni_pid(node)), "patroni")
                pm = lab.postmaster_pid(node)
                self.assertIsNotNone(pm, f"no postmaster for {node}")
                self.assertEqual(proc_comm(pm), "postgres")

            # --- the files other programs read
            with open(os.path.join(lab.dir, "lab.json")) as f:
                summary = json.load(f)
            self.assertEqual(summary["nodes"]["kaptan1"]["patroni_config"], lab.patroni_config("kaptan1"))
            hosts = ",".join(f"{lab.addr[n]}:{ETCD_CLIENT_PORT}" for n in NODES)
            for node in PATRONI_NODES:
                with open(lab.patroni_config(node)) as f:
                    self.assertIn(f"  hosts: {hosts}\n", f.read())
            for node in NODES:
                with open(lab.etcd_env_file(node)) as f:
                    text = f.read()
                self.assertIn(f'ETCD_NAME="{node}"\n', text)
                self.assertIn('ETCD_ENABLE_V2="true"\n', text)

            # --- HAProxy on ha: the httpchk primary front end routes to the leader
            self.assertEqual(proc_comm(lab.haproxy_pid()), "haproxy")
            self.assertIn("Name: HAProxy", lab.haproxy_cmd("show info"))
            self.assertEqual(summary["haproxy"]["socket"], lab.haproxy_socket())
            self.assertEqual(lab.haproxy_port("primary_httpchk"), 5002)
            lead_addr = lab.address(leader)

            def on_leader():
                r = psql_via_haproxy(lab, lab.haproxy_port("primary_httpchk"))
                return r if r == ("f", lead_addr) else NotYet(r)
            got = lab.wait_for(on_leader, 30, "a session through HAProxy primary_httpchk on the leader",
                               logs=[lab.haproxy_log()])
            self.assertEqual(got, ("f", lead_addr))
            lab.stop_haproxy()
            with self.assertRaises(OSError):
                lab.haproxy_cmd("show info")
            lab.start_haproxy()

            # --- one etcd member down: the other two keep quorum; it rejoins
            old = lab.stop_etcd("ha")
            self.assertFalse(pid_alive(old))
            self.assertFalse(lab.etcd_health("ha"))
            lab.wait_for(lambda: lab.etcd_health("kaptan1") and lab.etcd_health("kaptan2"), 20,
                         "etcd quorum of two")
            self.assertEqual(lab.leader(), leader)
            lab.start_etcd("ha")
            self.assertNotEqual(lab.etcd_pid("ha"), old)
            lab.wait_for(lambda: all(lab.etcd_health(n) for n in NODES), 20, "3 healthy etcd members")
            self.assertEqual(lab.etcd_members("ha"), sorted(NODES))

            # --- the replica's Patroni frozen: its REST API stops answering, then resumes
            pid = lab.signal_patroni(replica, signal.SIGSTOP)
            lab.wait_for(lambda: proc_state(pid) == "T", 5, f"{replica} Patroni stopped")
            self.assertIsNone(lab.patroni_state(replica, timeout=1.0))
            lab.signal_patroni(replica, signal.SIGCONT)
            lab.wait_for(lambda: (lab.patroni_state(replica) or {}).get("state") == "running", 30,
                         f"{replica} Patroni answering again")
            self.assertEqual(lab.wait_cluster_healthy(60), leader)

            # --- graceful Patroni restart and a postmaster crash on the replica
            old_pm = lab.postmaster_pid(replica)
            lab.stop_patroni(replica)
            self.assertIsNone(lab.patroni_pid(replica))
            self.assertFalse(pid_alive(old_pm), "Patroni's stop should stop its PostgreSQL")
            lab.start_patroni(replica)
            lab.wait_cluster_healthy(90)
            crashed = lab.kill_postmaster(replica)
            self.assertFalse(pid_alive(crashed))
            lab.wait_cluster_healthy(90)
            self.assertNotEqual(lab.postmaster_pid(replica), crashed)

            started = lab.started()
        t_down = lab.timings["teardown"]

        # --- nothing the lab started survives it; its ports are free again
        alive = [(k, n, p) for k, n, p in started if pid_alive(p)]
        self.assertEqual(alive, [])
        kinds = {k for k, _, _ in started}
        self.assertTrue({"etcd", "runuser", "patroni", "postmaster", "haproxy"} <= kinds, kinds)
        if os.environ.get("FENER_LAB_KEEP") != "1":
            self.assertFalse(os.path.exists(lab.dir))
        busy = [(lab.addr[n], p) for n in NODES for p in (ETCD_CLIENT_PORT, ETCD_PEER_PORT)
                if not port_free(lab.addr[n], p)]
        busy += [(lab.addr[n], p) for n in PATRONI_NODES for p in (PATRONI_PORT, PG_PORT)
                 if not port_free(lab.addr[n], p)]
        busy += [(lab.addr[HAPROXY_NODE], p) for p in HAPROXY_PORTS.values()
                 if not port_free(lab.addr[HAPROXY_NODE], p)]
        self.assertEqual(busy, [])
        tm = lab.timings
        print(f"\nlab: healthy after {t_healthy:.1f}s (stale cleanup {tm['stale_cleanup']:.1f}s, "
              f"etcd {tm['etcd_healthy']:.1f}s, leader {tm['leader_running']:.1f}s); teardown "
              f"{t_down:.1f}s (Patroni {tm['teardown_patroni']:.1f}s, all processes "
              f"{tm['teardown_processes']:.1f}s, then dir removal); {len(started)} pids ended",
              file=sys.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
