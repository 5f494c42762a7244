#!/usr/bin/python3
"""fener among hostile and broken peers: one `fener run` whose checks point at HTTP peers
that never answer, drip one byte per second, send 100 MB, send bodies that are not JSON
or JSON of the wrong shape, reset the connection or never end their headers; whose
webhooks point at a closed port and at a receiver that never answers while a check flaps;
and whose agent-check port takes 10,000 connections at once, most of them silent.

It asserts that every hostile check gives its result within its timeout (+ a margin),
with a clear message and never as passing; that the control checks (a well-behaved
Patroni and etcd, a data directory) keep their schedule; that the alert queues stay
within queue_size and count their drops; that well-behaved agent clients keep getting
the right answer; and that fener's memory stays bounded. No lab: the peers are threads
of this process on FENER_LAB_NET (default 127.0.5).

    FENER_LAB_NET=127.0.5 FENER_BIN=build/fener FENER_LOAD=build/fener-load \\
        PYTHONPATH=tests /usr/bin/python3 tests/integration/test_hostile_peers.py

FENER_FIGURES=FILE appends the measured figures as JSON lines.
"""

import json
import os
import pwd
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request
from datetime import datetime

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lab import hostile  # noqa: E402
from lab.lab import NotYet, agent_query, terminate_pids  # noqa: E402

FENER = os.environ.get("FENER_BIN", os.path.join(os.path.dirname(__file__), "../../build/fener"))
LOAD = os.environ.get("FENER_LOAD", os.path.join(os.path.dirname(__file__), "../../build/fener-load"))
NET = os.environ.get("FENER_LAB_NET", "127.0.5").rstrip(".")
FENER_ADDR, PEER_ADDR, GOOD_ADDR, HOOK_ADDR = (f"{NET}.{i}" for i in (1, 2, 3, 4))

INTERVAL_S, TIMEOUT_S = 1.0, 2.0  # defaults: for the control checks' schedule bound
MARGIN_S = 1.0                     # scheduling slack on a loaded 2-core machine
QUEUE_SIZE = 16
RSS_BOUND_KB = 150 * 1024          # 100 MB bodies must not be buffered
KINDS = ["silent", "drip", "big_length", "big_chunked", "not_json", "shape_list",
         "shape_string", "shape_types", "reset", "loris"]
# What each kind's message must say (any of these words), for every check type.
WORDS = {
    # Which deadline ends a hung exchange first (the request's or the check's) is a race,
    # so either wording passes: "no answer from URL within N ms", "no result within the
    # 2s timeout".
    "silent": r"no answer (from \S+ )?within|no result within|timeout|timed out",
    "drip": r"no answer (from \S+ )?within|no result within|timeout|timed out",
    "loris": r"no answer (from \S+ )?within|no result within|timeout|timed out",
    "big_length": r"larger than",
    "big_chunked": r"larger than",
    "not_json": r"non-JSON|not JSON|not an? |malformed|garbage",
    "shape_list": r"JSON array|not an? |malformed|unexpected|garbage",
    "shape_string": r"JSON string|not an? |malformed|unexpected|garbage",
    "shape_types": r"not an? |malformed|unexpected|wrong|no |JSON that is not|garbage",
    "reset": r"reset|Recv failure|Connection|connection",
}
TYPES = {"etcd_health": "endpoints", "etcd_members": "endpoints",
         "patroni_node": "url", "patroni_cluster": "urls"}
CONTROL = ["etcd_health", "patroni_node", "patroni_cluster", "datadir"]

peers = {}
good = {}
fener = None
tmp = None


def figure(name, **values):
    path = os.environ.get("FENER_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"scenario": name, **values}) + "\n")
    print(f"\n  {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()), file=sys.stderr)


def wait_for(probe, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = probe()
        except (OSError, ValueError) as e:
            value = NotYet(f"{type(e).__name__}: {e}")
        if value:
            return value
        last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def hostile_name(ctype, kind):
    return f"{ctype}__{kind}"


def url_value(ctype, url):
    return f"[{url}]" if TYPES[ctype] in ("endpoints", "urls") else url


class Fener:
    """`fener run` with a soft descriptor limit of 1024 by default (fener raises it to the
    hard one)."""

    def __init__(self, config_text, name, nofile=(1024, None)):
        self.config = os.path.join(tmp, f"{name}.yaml")
        self.log = os.path.join(tmp, f"{name}.log")
        with open(self.config, "w") as f:
            f.write(config_text)
        self.logf = open(self.log, "ab")
        self.proc = None

        def limits():
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            hard = min(hard, nofile[1] or hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile[0], hard), hard))

        self.proc = subprocess.Popen([FENER, "run", "-c", self.config], stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=self.logf, preexec_fn=limits,
                                     start_new_session=True)
        try:
            wait_for(self._started, 20, "fener run started")
        except BaseException:
            self.stop(check=False)
            raise

    def _started(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"fener exited {self.proc.returncode}:\n{self.text()[-3000:]}")
        return "running on node" in self.text() or NotYet(self.text()[-300:])

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def proc_status(self, key):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {key} for fener")

    def alive(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"fener ended with {self.proc.returncode}:\n{self.text()[-3000:]}")

    def stop(self, check=True):
        if self.proc.poll() is None:
            terminate_pids([self.proc.pid], timeout=20, reap=lambda p: self.proc.poll())
            self.proc.wait(5)
        self.logf.close()
        rc = self.proc.returncode
        if check and rc != 0:
            raise AssertionError(f"fener ended with {rc}:\n{self.text()[-3000:]}")


def get(path, timeout=3.0):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{FENER_ADDR}:{API_PORT}{path}", timeout=timeout) as r:
        return r.read().decode()


def status():
    return json.loads(get("/status"))


def checks_by_name(doc):
    return {c["name"]: c for c in doc["checks"]}


def metric(text, name, **labels):
    total = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^(\w+)(\{[^}]*\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
            found = True
    return total if found else None


API_PORT = AGENT_PORT = None


def setUpModule():
    global tmp, fener, API_PORT, AGENT_PORT
    tmp = tempfile.mkdtemp(prefix="fener-hostile-")
    peers.update(hostile.start(KINDS, PEER_ADDR))
    good.update(hostile.start(["good", "flap"], GOOD_ADDR))
    closed = hostile.closed_port(HOOK_ADDR)
    API_PORT = hostile.closed_port(FENER_ADDR)
    AGENT_PORT = hostile.closed_port(FENER_ADDR)
    data = os.path.join(tmp, "data")
    os.mkdir(data, 0o700)
    user = pwd.getpwuid(os.getuid()).pw_name
    checks = []
    for ctype, key in TYPES.items():
        for kind in KINDS:
            checks.append(f"  {hostile_name(ctype, kind)}: {{type: {ctype}, "
                          f"{key}: {url_value(ctype, peers[kind].url)}}}")
    config = f"""# fener among hostile peers
node: {{name: kaptan1, address: {FENER_ADDR}}}
cluster: {{members: 1}}
patroni: {{url: {good['good'].url}}}
etcd: {{endpoints: [{good['good'].url}]}}
postgresql: {{data_dir: {data}, owner: {user}, listen: "{FENER_ADDR}:5432"}}
mode: observe
fleet: {{enabled: false}}
audit: {{file: ""}}
defaults: {{interval: {INTERVAL_S:g}s, unhealthy_interval: {INTERVAL_S:g}s, timeout: {TIMEOUT_S:g}s,
            jitter: 0s, rise: 1, fall: 1}}
api: {{listen: "{FENER_ADDR}:{API_PORT}"}}
agent: {{listen: "{FENER_ADDR}:{AGENT_PORT}"}}
alerts:
  webhooks:
    - {{name: closed, url: "http://{HOOK_ADDR}:{closed}/hook", timeout: 1s, min_severity: passing,
       events: [check]}}
    - {{name: silent, url: "{peers['silent'].url}/hook", timeout: 1s, min_severity: passing,
       events: [check]}}
  queue_size: {QUEUE_SIZE}
  retry: {{initial: 100ms, max: 400ms, attempts: 3}}
  group_wait: 0s
  repeat_interval: 1s
checks:
  etcd_members: {{enabled: false}}
  listening_sockets: {{enabled: false}}
  flapping: {{type: patroni_node, url: {good['flap'].url}, interval: 200ms,
              unhealthy_interval: 200ms}}
""" + "\n".join(checks) + "\n"
    try:
        fener = Fener(config, "hostile")
    except BaseException:
        tearDownModule()  # unittest skips it when setUpModule fails
        raise


def tearDownModule():
    global fener
    try:
        if fener:
            f, fener = fener, None
            f.stop()
    finally:
        for p in list(peers.values()) + list(good.values()):
            p.stop()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


class HostilePeers(unittest.TestCase):

    def test_1_hostile_checks_control_checks_and_webhooks(self):
        # Every hostile check has a result; meanwhile the control checks' runs and the
        # alert queues are sampled.
        names = [hostile_name(t, k) for t in TYPES for k in KINDS]
        runs = {n: [] for n in CONTROL}
        depth_max = {}
        window_end = time.monotonic() + 15.0

        def sample():
            doc = status()
            by = checks_by_name(doc)
            for n in CONTROL:
                lr = by[n]["last_run"]
                if lr and (not runs[n] or runs[n][-1] != lr):
                    runs[n].append(lr)
            for w in doc.get("alerts", []):
                depth_max[w["name"]] = max(depth_max.get(w["name"], 0), w["queue_depth"])
            return by

        def all_done():
            by = sample()
            missing = [n for n in names if not by[n]["last_run"]]
            if missing or time.monotonic() < window_end:
                return NotYet(f"no result yet: {missing}")
            return by

        by = wait_for(all_done, 60, "every hostile check's first result")
        fener.alive()

        # Hostile checks: a result within the timeout, never passing, a clear message.
        worst_ms = 0
        rows, problems = [], []
        for name in names:
            c = by[name]
            ctype, kind = name.split("__")
            rows.append(f"    {name:30} {c['last_status']:8} {c['duration_ms']:5} ms  {c['message'][:150]}")
            worst_ms = max(worst_ms, c["duration_ms"])
            if c["last_status"] not in ("unknown", "critical", "warning"):
                problems.append(f"{name}: {c['last_status']}")
            if c["duration_ms"] > TIMEOUT_S * 1000 + 500:
                problems.append(f"{name}: took {c['duration_ms']} ms")
            if not re.search(WORDS[kind], c["message"]):
                problems.append(f"{name}: unclear message")
            if "check failed:" in c["message"]:
                problems.append(f"{name}: threw")
        print("\n" + "\n".join(rows), file=sys.stderr)
        self.assertEqual(problems, [])

        # Control checks: on schedule all along.
        gaps = {}
        for n, stamps in runs.items():
            t = [datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps]
            self.assertGreaterEqual(len(t), 8, f"{n} ran only {len(t)} times in the window")
            gaps[n] = max(b - a for a, b in zip(t, t[1:]))
            self.assertLessEqual(gaps[n], INTERVAL_S + TIMEOUT_S + MARGIN_S, f"{n}: {stamps}")
            self.assertEqual(by[n]["last_status"], "passing", by[n])

        # Webhooks: the queue never went past queue_size, drops are counted.
        metrics = get("/metrics")
        drops = {}
        for hook in ("closed", "silent"):
            self.assertLessEqual(depth_max.get(hook, 0), QUEUE_SIZE, hook)
            self.assertLessEqual(metric(metrics, "fener_alert_queue_depth", webhook=hook), QUEUE_SIZE)
            drops[hook] = {r: int(metric(metrics, "fener_alert_dropped_total", webhook=hook, reason=r) or 0)
                           for r in ("overflow", "exhausted", "permanent")}
            self.assertGreater(sum(drops[hook].values()), 0, f"{hook}: no drop counted")
            self.assertEqual(metric(metrics, "fener_alert_deliveries_total", webhook=hook), 0)
        transitions = metric(metrics, "fener_check_transitions_total", check="flapping")
        self.assertGreater(transitions, 20, "the flapping check did not flap")

        figure("hostile_checks", checks=len(names), worst_duration_ms=worst_ms,
               timeout_ms=int(TIMEOUT_S * 1000))
        figure("control_checks", max_gap_s={n: round(g, 2) for n, g in gaps.items()},
               bound_s=INTERVAL_S + TIMEOUT_S + MARGIN_S, runs={n: len(r) for n, r in runs.items()})
        figure("webhooks_down", flapping_transitions=int(transitions), queue_depth_max=depth_max,
               queue_size=QUEUE_SIZE, drops=drops)
        hwm = fener.proc_status("VmHWM")
        figure("hostile_rss", vm_hwm_mb=round(hwm / 1024, 1), vm_rss_mb=round(fener.proc_status("VmRSS") / 1024, 1))
        self.assertLess(hwm, RSS_BOUND_KB)
        self.assertIn("file descriptor limit raised from 1024", fener.text())

    def test_2_agent_port_under_10000_connections(self):
        if not os.path.exists(LOAD):
            self.skipTest("FENER_LOAD (the fener-load client) not built")
        expected = agent_answer("primary")
        self.assertTrue(expected.startswith("up"), expected)
        before = fener.proc_status("VmHWM")
        idle, active, secs = 9000, 1000, 8
        # Control checks keep running while the agent port is flooded.
        runs = {n: [] for n in CONTROL}
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                try:
                    by = checks_by_name(status())
                    for n in CONTROL:
                        lr = by[n]["last_run"]
                        if lr and (not runs[n] or runs[n][-1] != lr):
                            runs[n].append(lr)
                except (OSError, ValueError):
                    pass
                stop.wait(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            p = subprocess.run([LOAD, "agent-idle", f"{FENER_ADDR}:{AGENT_PORT}", str(idle), str(active),
                                str(secs), "primary"], capture_output=True, text=True, timeout=secs + 60)
        finally:
            stop.set()
            watcher.join(5)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        r = json.loads(p.stdout)
        fener.alive()
        hwm = fener.proc_status("VmHWM")
        st = status()["agent"]
        gaps = {}
        for n, stamps in runs.items():
            t = [datetime.fromisoformat(x.replace("Z", "+00:00")).timestamp() for x in stamps]
            gaps[n] = round(max((b - a for a, b in zip(t, t[1:])), default=0), 2)
        figure("agent_10k", idle=idle, active=active, seconds=r["seconds"], answers=r["answers"],
               per_second=r["per_second"], success_rate=r["success_rate"], p50_ms=r["p50_ms"],
               p99_ms=r["p99_ms"], max_ms=r["max_ms"], closed_empty=r["closed_empty"],
               timed_out=r["timed_out"], connect_failed=r["connect_failed"],
               idle_connects=r["idle_connects"], idle_answered=r["idle_answered"],
               idle_closed_empty=r["idle_closed_empty"], evicted=st.get("evicted"),
               rejected=st["rejected"], control_max_gap_s=gaps)
        figure("agent_10k_rss", vm_hwm_mb_before=round(before / 1024, 1), vm_hwm_mb_after=round(hwm / 1024, 1))
        # Every answer a well-behaved client got is the right one.
        self.assertEqual(set(r["answers_by_line"]), {expected}, r["answers_by_line"])
        # The share answered depends on how soon the client writes its line after the
        # handshake, i.e. on how busy the machine is: 46-98 % in runs so far. The bound
        # catches starvation, not a slow day.
        self.assertGreater(r["success_rate"], 0.2, r)
        self.assertLess(hwm, RSS_BOUND_KB)
        self.assertEqual(agent_answer("primary"), expected)  # and afterwards
        for n, g in gaps.items():
            self.assertLessEqual(g, INTERVAL_S + TIMEOUT_S + 2 * MARGIN_S, f"{n}: {runs[n]}")

    def test_3_out_of_descriptors(self):
        # A second fener whose hard limit is 256 descriptors, agent max_connections 1024:
        # accept() fails with EMFILE; fener pauses, keeps answering what it can, and
        # recovers when the flood ends.
        if not os.path.exists(LOAD):
            self.skipTest("FENER_LOAD (the fener-load client) not built")
        api, agent = hostile.closed_port(FENER_ADDR), hostile.closed_port(FENER_ADDR)
        user = pwd.getpwuid(os.getuid()).pw_name
        config = f"""node: {{name: kaptan1, address: {FENER_ADDR}}}
postgresql: {{data_dir: {os.path.join(tmp, "data")}, owner: {user}, listen: "{FENER_ADDR}:5432"}}
patroni: {{url: {good['good'].url}}}
etcd: {{endpoints: [{good['good'].url}]}}
mode: observe
fleet: {{enabled: false}}
audit: {{file: ""}}
defaults: {{interval: 1s, timeout: 2s, jitter: 0s, rise: 1, fall: 1}}
api: {{listen: "{FENER_ADDR}:{api}"}}
agent: {{listen: "{FENER_ADDR}:{agent}"}}
checks: {{etcd_members: {{enabled: false}}, listening_sockets: {{enabled: false}}}}
"""
        small = Fener(config, "emfile", nofile=(128, 256))
        try:
            self.assertIn("file descriptor limit raised from 128 to 256", small.text())
            cpu0 = cpu_seconds(small.proc.pid)
            t0 = time.monotonic()
            p = subprocess.run([LOAD, "agent-idle", f"{FENER_ADDR}:{agent}", "2000", "50", "5", "primary"],
                               capture_output=True, text=True, timeout=70)
            cpu = cpu_seconds(small.proc.pid) - cpu0
            wall = time.monotonic() - t0
            small.alive()
            r = json.loads(p.stdout)
            doc = json.loads(get_from(api, "/status"))
            self.assertGreater(doc["agent"]["accept_errors"], 0, doc["agent"])
            self.assertGreater(r["answers"], 0, r)
            self.assertIn("accept failed", small.text())
            # After the flood: accepting again, answers right.
            self.assertTrue(wait_for(lambda: agent_answer("primary", agent).startswith("up"), 10,
                                     "the agent answers after the flood"))
            figure("agent_emfile", nofile=256, answers=r["answers"], success_rate=r["success_rate"],
                   p99_ms=r["p99_ms"], max_ms=r["max_ms"], accept_errors=doc["agent"]["accept_errors"],
                   cpu_s=round(cpu, 2), wall_s=round(wall, 2),
                   log_lines_accept_failed=small.text().count("accept failed"))
            # Logged once per episode, not once per failed accept.
            self.assertLess(small.text().count("accept failed"), 50)
        finally:
            small.stop()


def agent_answer(role, port=None):
    try:
        return agent_query(FENER_ADDR, port or AGENT_PORT, role, timeout=3)
    except OSError as e:
        return f"error: {e}"


def get_from(port, path):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{FENER_ADDR}:{port}{path}", timeout=3) as r:
        return r.read().decode()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    unittest.main(verbosity=2)
