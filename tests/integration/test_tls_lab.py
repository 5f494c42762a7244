#!/usr/bin/python3
"""fener against a real etcd that speaks only TLS and wants client certificates
(--client-cert-auth): the right CA and client certificate pass; a wrong CA, an expired
client certificate and no client certificate each give a clear TLS finding (unknown,
never a hang), and the certificate lint reports the expired one critical. The fleet view
is published and read back over TLS.

The certificates are made here with `openssl`: a CA, etcd's server certificate (IP SAN for
the loopback address), a client certificate, an expired one (-days -1) and an unrelated CA.
Every process started is ended by pid, also on failure.

    FENER_LAB_NET=127.0.3 TMPDIR=/dev/shm FENER_BIN=build/fener \\
        PYTHONPATH=tests /usr/bin/python3 tests/integration/test_tls_lab.py
"""

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lab.lab import (ETCD_BIN, PATRONI_BIN, PG_BIN_DIR, RUNUSER, _postmaster_pid,  # noqa: E402
                     pid_alive, proc_children, proc_cmdline, terminate_pids, to_yaml)

FENER = os.environ.get("FENER_BIN", os.path.join(os.path.dirname(__file__), "../../build/fener"))
NET = os.environ.get("FENER_LAB_NET", "127.0.3")
ADDR = f"{NET}.1"
CLIENT_PORT, PEER_PORT = 2379, 2380
ENDPOINT = f"https://{ADDR}:{CLIENT_PORT}"
SCOPE = "tlslab"

# Module state: one etcd for every test.
DIR = None
ETCD = None  # Popen
PIDS = []    # every pid started here (etcd, fener run), ended by pid in tearDownModule
FIGURES = {}
PATRONI_PIDS = []  # Patroni (runuser's child)
RUNUSERS = []      # runuser Popens: never signalled (on SIGTERM runuser SIGKILLs its child)


def openssl(*args):
    r = subprocess.run(["openssl", *args], cwd=DIR, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr.strip()}")


def make_ca(name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=fener test {name}",
            "-days", "365")


def make_cert(name, ca, cn, ext, days="365"):
    with open(os.path.join(DIR, f"{name}.ext"), "w") as f:
        f.write(ext)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
    # -days -1: notAfter a day before notBefore (now), an expired certificate.
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", days, "-extfile", f"{name}.ext", "-out", f"{name}.pem")


def path(name):
    return os.path.join(DIR, name)


def etcd_ssl_context():
    ctx = ssl.create_default_context(cafile=path("ca.pem"))
    ctx.load_cert_chain(path("client.pem"), path("client.key"))
    return ctx


def etcd_healthy():
    try:
        with urllib.request.urlopen(ENDPOINT + "/health", timeout=2, context=etcd_ssl_context()) as r:
            return json.loads(r.read()).get("health") in ("true", True)
    except Exception:  # noqa: BLE001 - not up yet
        return False


def setUpModule():
    global DIR, ETCD
    DIR = tempfile.mkdtemp(prefix="fener-tls-")
    t0 = time.monotonic()
    make_ca("ca")
    make_ca("otherca")
    make_cert("server", "ca", "etcd tls1",
              f"subjectAltName=IP:{ADDR}\nextendedKeyUsage=serverAuth,clientAuth\n")
    make_cert("client", "ca", "fener", "extendedKeyUsage=clientAuth\n")
    make_cert("expired", "ca", "fener expired", "extendedKeyUsage=clientAuth\n", days="-1")
    make_cert("rest", "ca", "patroni tls2",
              f"subjectAltName=IP:{NET}.2\nextendedKeyUsage=serverAuth,clientAuth\n")
    FIGURES["certificates_s"] = time.monotonic() - t0
    argv = [ETCD_BIN, "--name=tls1", f"--data-dir={path('etcd-data')}",
            f"--listen-client-urls={ENDPOINT}", f"--advertise-client-urls={ENDPOINT}",
            f"--listen-peer-urls=http://{ADDR}:{PEER_PORT}",
            f"--initial-advertise-peer-urls=http://{ADDR}:{PEER_PORT}",
            f"--initial-cluster=tls1=http://{ADDR}:{PEER_PORT}",
            "--initial-cluster-token=fener-tls", "--initial-cluster-state=new", "--enable-v2=true",
            f"--cert-file={path('server.pem')}", f"--key-file={path('server.key')}",
            f"--trusted-ca-file={path('ca.pem')}", "--client-cert-auth=true"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")
           and not k.lower().endswith("_proxy")}
    log = open(path("etcd.log"), "ab")
    try:
        ETCD = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                start_new_session=True, close_fds=True)
    finally:
        log.close()
    PIDS.append(ETCD.pid)
    t0 = time.monotonic()
    deadline = t0 + 30
    while time.monotonic() < deadline and not etcd_healthy():
        if ETCD.poll() is not None:
            break
        time.sleep(0.2)
    if not etcd_healthy():
        with open(path("etcd.log")) as f:
            log_tail = f.read()[-3000:]
        tearDownModule()
        raise RuntimeError(f"TLS etcd did not become healthy:\n{log_tail}")
    FIGURES["etcd_up_s"] = time.monotonic() - t0


def tearDownModule():
    # Patroni first (it stops its PostgreSQL), then a postmaster it left, then etcd.
    terminate_pids([p for p in PATRONI_PIDS if pid_alive(p)], timeout=60.0)
    # runuser exits with its child; signalled only when the child was never found.
    orphans = [r.pid for r in RUNUSERS if r.poll() is None and not PATRONI_PIDS]
    terminate_pids(orphans, timeout=30.0)
    terminate_pids([r.pid for r in RUNUSERS], timeout=30.0, sig=0,
                   reap=lambda p: [r.poll() for r in RUNUSERS])
    pm = _postmaster_pid(path("pgdata")) if DIR else None
    if pm:
        kids = proc_children(pm)
        terminate_pids([pm], timeout=30.0)
        terminate_pids(kids, timeout=10.0, sig=0)
    left = terminate_pids([p for p in PIDS if pid_alive(p)], timeout=20.0,
                          reap=lambda p: ETCD.poll() if ETCD and ETCD.pid == p else None)
    if ETCD:
        ETCD.poll()
    if DIR and os.environ.get("FENER_LAB_KEEP") != "1":
        shutil.rmtree(DIR, ignore_errors=True)
    for k, v in sorted(FIGURES.items()):
        print(f"figure {k}: {v:.3f}" if isinstance(v, float) else f"figure {k}: {v}",
              file=sys.stderr)
    if left:
        raise RuntimeError(f"processes still alive after teardown: {left}")


def write_config(name, cacert=None, cert=None, key=None, fleet=False):
    lines = ["patroni:", '  config: ""', "etcd:", "  env_files: []",
             f"  endpoints: [{ENDPOINT}]"]
    for k, v in (("cacert", cacert), ("cert", cert), ("key", key)):
        if v:
            lines.append(f"  {k}: {path(v)}")
    lines += ["cluster:", f"  scope: {SCOPE}", "node:", f"  name: {name}", f"  address: {ADDR}",
              "api:", '  listen: "off"', "audit:", '  file: ""',
              "fleet:", f"  enabled: {'true' if fleet else 'false'}", "  interval: 1s",
              "defaults:", "  timeout: 3s", "  interval: 1s", "  jitter: 0s",
              "checks:", "  listening_sockets: {enabled: false}"]
    p = path(f"{name}.yaml")
    with open(p, "w") as f:
        f.write("\n".join(lines) + "\n")
    return p


def fener_check(config):
    """(exit code, {check name: result}, seconds) of `fener check --json`."""
    t0 = time.monotonic()
    r = subprocess.run([FENER, "check", "--json", "-c", config], capture_output=True, text=True,
                       timeout=60)
    took = time.monotonic() - t0
    try:
        doc = json.loads(r.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"fener check: rc {r.returncode}, not JSON: {r.stdout!r} {r.stderr!r}")
    return r.returncode, {c["name"]: c for c in doc["checks"]}, took


class TlsEtcdTest(unittest.TestCase):

    def assert_tls_finding(self, case, results, took, words):
        FIGURES[f"{case}_check_s"] = took
        h = results["etcd_health"]
        print(f"{case}: etcd_health {h['status']}: {h['message']} ({took:.2f} s)", file=sys.stderr)
        self.assertEqual(h["status"], "unknown", h)
        self.assertIn("TLS: ", h["message"])
        for w in words:
            self.assertIn(w, h["message"])
        self.assertEqual(results["etcd_members"]["status"], "unknown", results["etcd_members"])
        self.assertIn("TLS: ", results["etcd_members"]["message"])
        # Well within the 3 s check timeout plus start-up: a TLS failure never hangs.
        self.assertLess(took, 10.0)

    def test_right_ca_and_client_certificate(self):
        cfg = write_config("good", cacert="ca.pem", cert="client.pem", key="client.key")
        rc, results, took = fener_check(cfg)
        FIGURES["good_check_s"] = took
        for name in ("etcd_health", "etcd_members", "config_lint"):
            self.assertEqual(results[name]["status"], "passing", results[name])
        self.assertIn("1/1 etcd members healthy", results["etcd_health"]["message"])
        self.assertEqual(rc, 0)

    def test_wrong_ca(self):
        cfg = write_config("wrongca", cacert="otherca.pem", cert="client.pem", key="client.key")
        _, results, took = fener_check(cfg)
        self.assert_tls_finding("wrong_ca", results, took,
                                ["server certificate not trusted", path("otherca.pem")])

    def test_expired_client_certificate(self):
        cfg = write_config("expired", cacert="ca.pem", cert="expired.pem", key="expired.key")
        _, results, took = fener_check(cfg)
        self.assert_tls_finding("expired_client", results, took,
                                ["client certificate rejected by the server", path("expired.pem")])
        lint = results["config_lint"]
        print(f"expired_client: config_lint {lint['status']}: {lint['message']}", file=sys.stderr)
        self.assertEqual(lint["status"], "critical", lint)
        self.assertIn("etcd client certificate", lint["message"])
        self.assertIn("expired on", lint["message"])

    def test_no_client_certificate(self):
        cfg = write_config("nocert", cacert="ca.pem")
        _, results, took = fener_check(cfg)
        self.assert_tls_finding("no_client_cert", results, took,
                                ["requires a client certificate and none is configured"])

    def test_fleet_over_tls(self):
        """`fener run` publishes its summary to the TLS etcd; `fener status --cluster` reads
        it back over TLS."""
        cfg = write_config("fleet1", cacert="ca.pem", cert="client.pem", key="client.key",
                           fleet=True)
        log = open(path("fleet1.log"), "ab")
        try:
            proc = subprocess.Popen([FENER, "run", "-c", cfg, "--mode", "observe"],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        finally:
            log.close()
        PIDS.append(proc.pid)
        try:
            t0 = time.monotonic()
            deadline = t0 + 30
            seen = None
            while time.monotonic() < deadline:
                r = subprocess.run([FENER, "status", "--cluster", "--json", "-c", cfg],
                                   capture_output=True, text=True, timeout=30)
                if r.stdout.strip().startswith("{"):
                    doc = json.loads(r.stdout)
                    nodes = {n.get("node"): n for n in doc.get("nodes", [])}
                    if "fleet1" in nodes and nodes["fleet1"].get("state") == "fresh":
                        seen = nodes["fleet1"]
                        break
                time.sleep(0.3)
            FIGURES["fleet_visible_s"] = time.monotonic() - t0
            with open(path("fleet1.log")) as f:
                log_text = f.read()
            self.assertIsNotNone(seen, f"fleet1 not published over TLS; log:\n{log_text[-3000:]}")
        finally:
            left = terminate_pids([proc.pid], timeout=20.0, reap=lambda p: proc.poll())
            self.assertEqual(left, [])


class TlsPatroniTest(unittest.TestCase):
    """One Patroni + PostgreSQL 15 node on the TLS etcd, its REST API on https
    (restapi.certfile): fener discovers everything from that patroni.yml."""

    def test_patroni_over_https(self):
        if not os.path.exists(PATRONI_BIN) or not os.path.exists(RUNUSER):
            self.skipTest("Patroni or runuser not installed")
        addr = f"{NET}.2"
        pg = __import__("pwd").getpwnam("postgres")
        # Patroni runs as postgres: it must reach the directory and read its files.
        os.chmod(DIR, 0o755)
        for f in ("ca.pem", "client.pem", "client.key", "rest.pem", "rest.key"):
            os.chown(path(f), pg.pw_uid, pg.pw_gid)
        for d in ("pgrun", "pgdata"):
            os.makedirs(path(d), mode=0o700, exist_ok=True)
            os.chown(path(d), pg.pw_uid, pg.pw_gid)
        settings = {
            "scope": SCOPE, "namespace": "/service/", "name": "tls2",
            "restapi": {"listen": f"{addr}:8008", "connect_address": f"{addr}:8008",
                        "certfile": path("rest.pem"), "keyfile": path("rest.key"),
                        "cafile": path("ca.pem")},
            "etcd": {"protocol": "https", "hosts": f"{ADDR}:{CLIENT_PORT}",
                     "cacert": path("ca.pem"), "cert": path("client.pem"),
                     "key": path("client.key")},
            "bootstrap": {"dcs": {"ttl": 20, "loop_wait": 2, "retry_timeout": 5},
                          "initdb": [{"encoding": "UTF8"}]},
            "postgresql": {
                "listen": f"{addr}:5432", "connect_address": f"{addr}:5432",
                "data_dir": path("pgdata"), "bin_dir": PG_BIN_DIR,
                "pgpass": path("pgrun/pgpass"),
                "authentication": {
                    "replication": {"username": "replicator", "password": "r-tls"},
                    "superuser": {"username": "postgres", "password": "s-tls"}},
                "parameters": {"unix_socket_directories": path("pgrun"),
                               "shared_buffers": "32MB"},
                "pg_hba": ["local all postgres trust", "host all all 127.0.0.0/8 md5",
                           "host replication replicator 127.0.0.0/8 md5"]},
        }
        yml = path("patroni.yml")
        with open(yml, "w") as f:
            f.write(to_yaml(settings))
        os.chown(yml, pg.pw_uid, pg.pw_gid)
        os.chmod(yml, 0o600)  # it holds passwords: world-readable is a config_lint warning
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PATRONI_", "PG", "ETCD")) and not k.lower().endswith("_proxy")}
        log = open(path("patroni.log"), "ab")
        try:
            runuser = subprocess.Popen([RUNUSER, "-u", "postgres", "--", PATRONI_BIN, yml],
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                       start_new_session=True, close_fds=True)
        finally:
            log.close()
        RUNUSERS.append(runuser)
        t0 = time.monotonic()
        deadline = t0 + 10
        while time.monotonic() < deadline:  # runuser forks Patroni: signals go to the child
            kids = [k for k in proc_children(runuser.pid) if yml in (proc_cmdline(k) or [])]
            if kids:
                PATRONI_PIDS.append(kids[0])
                break
            time.sleep(0.1)
        cfg = path("patroni-fener.yaml")
        with open(cfg, "w") as f:
            f.write(f'patroni:\n  config: {yml}\netcd:\n  env_files: []\napi:\n  listen: "off"\n'
                    f'audit:\n  file: ""\nchecks:\n  listening_sockets: {{enabled: false}}\n')
        # Poll fener itself (over https with the discovered CA) until Patroni runs as leader.
        last = None
        deadline = t0 + 90
        while time.monotonic() < deadline:
            rc, results, took = fener_check(cfg)
            last = results
            # /cluster reads the member key Patroni refreshes every loop_wait: it says
            # "running" one HA loop after /patroni does.
            if all(results.get(n, {}).get("status") == "passing"
                   for n in ("patroni_node", "patroni_cluster")):
                break
            if runuser.poll() is not None:
                break
            time.sleep(0.5)
        FIGURES["patroni_running_s"] = time.monotonic() - t0
        with open(path("patroni.log")) as f:
            log_text = f.read()[-3000:]
        node = last.get("patroni_node", {}) if last else {}
        print(f"patroni_https: patroni_node {node.get('status')}: {node.get('message')}",
              file=sys.stderr)
        self.assertEqual(node.get("status"), "passing", f"{last}\nPatroni log:\n{log_text}")
        self.assertTrue(node["evidence"]["url"].startswith(f"https://{addr}:8008"), node)
        for name in ("etcd_health", "patroni_cluster", "config_lint"):
            self.assertEqual(last[name]["status"], "passing", last[name])
        checked = last["config_lint"]["evidence"]["checked"]
        self.assertIn(path("rest.pem"), checked)
        self.assertIn(path("client.pem"), checked)
        rc, results, took = fener_check(cfg)
        FIGURES["patroni_https_check_s"] = took


if __name__ == "__main__":
    unittest.main(verbosity=2)
