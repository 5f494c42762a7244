#!/usr/bin/python3
"""No secret fener holds ever leaves it. Every secret in the configuration carries a
distinctive marker: Patroni's REST password (fener.yaml and patroni.yml), the API token,
the webhook HMAC secret, a webhook URL's password, path and query, extra webhook headers.
`fener run` (observe mode, debug log) talks to a fake Patroni that wants Basic auth for
unsafe methods, to a webhook receiver that at first answers 400 echoing the request it
got (as some proxies do), and to a webhook that is down. Then no marker may appear in
fener's log, GET /status, /metrics, /healthz, /v1/rules, the peer listing, the audit file,
`fener status --json`, `fener rules --json`, `fener check` (table and JSON), nor in the
messages of configurations that fail to load. Needs no cluster; uses FENER_LAB_NET.

    FENER_LAB_NET=127.0.7 FENER_BIN=build/fener /usr/bin/python3 tests/integration/test_secrets.py
"""

import http.server
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

FENER = os.environ.get("FENER_BIN", os.path.join(os.path.dirname(__file__), "../../build/fener"))
NET = os.environ.get("FENER_LAB_NET", "127.0.1")
NODE = f"{NET}.21"      # fener's API
PATRONI = f"{NET}.22"   # the fake Patroni
HOOK = f"{NET}.23"      # the webhook receiver
DEAD = f"{NET}.24"      # nothing listens here

MARKERS = {
    "patroni_password": "PATRONI-PW-MARKER-7d41",
    "patroni_yml_password": "PATRONI-YML-MARKER-0c93",
    "replication_password": "REPLICATION-MARKER-55aa",
    "token": "API-TOKEN-MARKER-9e27f0",
    "hmac": "HMAC-SECRET-MARKER-31b8c",
    "url_password": "URL-PW-MARKER-4411",
    "url_path": "URL-PATH-MARKER-8a02",
    "url_query": "URL-QUERY-MARKER-e5d6",
    "header": "HEADER-MARKER-2f7c",
    "dead_password": "DEAD-PW-MARKER-6b19",
    "dead_header": "DEAD-HEADER-MARKER-d3e0",
}


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Fake(http.server.ThreadingHTTPServer):
    daemon_threads = True


def patroni_handler(seen):
    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            seen.append(("GET", self.path, self.headers.get("Authorization")))
            if self.path.startswith("/cluster"):
                self.reply(200, {"members": [{"name": "kaptan1", "role": "replica",
                                              "state": "streaming", "host": NET + ".21",
                                              "port": 5432, "lag": 0}]})
            else:
                self.reply(200, {"state": "running", "role": "replica", "server_version": 150004,
                                 "patroni": {"version": "3.0.2", "scope": "liman"}})

        def do_POST(self):
            # Patroni's unsafe endpoints want Basic auth; fener must send it, and only here.
            seen.append(("POST", self.path, self.headers.get("Authorization")))
            self.reply(401, {"error": "authentication required"})

    return H


def hook_handler(seen):
    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            seen.append((self.path, dict(self.headers), body))
            if len(seen) == 1:
                # An echoing proxy: the request line and headers in a 400 answer.
                echo = (f"bad request {self.path} " +
                        " ".join(f"{k}: {v}" for k, v in self.headers.items())).encode()
                self.send_response(400)
            else:
                echo = b"ok"
                self.send_response(200)
            self.send_header("Content-Length", str(len(echo)))
            self.end_headers()
            self.wfile.write(echo)

    return H


class SecretsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="fener-secrets-")
        cls.proc = None
        cls.servers = []
        cls.patroni_seen, cls.hook_seen = [], []
        for host, handler, seen in ((PATRONI, patroni_handler, cls.patroni_seen),
                                    (HOOK, hook_handler, cls.hook_seen)):
            srv = Fake((host, 0), handler(seen))
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            cls.servers.append(srv)
        cls.patroni_port = cls.servers[0].server_address[1]
        cls.hook_port = cls.servers[1].server_address[1]
        cls.api_port = free_port(NODE)
        m = MARKERS
        me = pwd.getpwuid(os.getuid()).pw_name
        cls.data = os.path.join(cls.dir, "data")
        os.mkdir(cls.data, 0o700)
        os.chmod(cls.data, 0o755)  # wrong: datadir critical, datadir_permissions would run
        with open(os.path.join(cls.data, ".a.swp"), "w") as f:
            f.write("swap")
        cls.write("hmac", m["hmac"] + "\n", 0o600)
        # Patroni's own file stays readable by everyone: a warning, not a refusal.
        cls.write("patroni.yml", f"""scope: liman
name: kaptan1
restapi:
  listen: {PATRONI}:{cls.patroni_port}
  connect_address: {PATRONI}:{cls.patroni_port}
  authentication:
    username: patroni
    password: {m["patroni_yml_password"]}
etcd:
  hosts: {DEAD}:2379
postgresql:
  listen: {NODE}:5432
  connect_address: {NODE}:5432
  data_dir: {cls.data}
  authentication:
    replication:
      username: replicator
      password: {m["replication_password"]}
""", 0o644)
        cls.config = cls.write("fener.yaml", f"""node:
  name: kaptan1
  address: {NODE}
patroni:
  config: {cls.dir}/patroni.yml
  url: http://{PATRONI}:{cls.patroni_port}
  username: patroni
  password: {m["patroni_password"]}
etcd:
  env_files: []
postgresql:
  owner: {me}
defaults:
  interval: 1s
  unhealthy_interval: 1s
  timeout: 1s
  jitter: 0s
  rise: 1
  fall: 1
api:
  listen: {NODE}:{cls.api_port}
  token: {m["token"]}
agent:
  listen: "off"
audit:
  file: {cls.dir}/audit.jsonl
fleet:
  interval: 1s
alerts:
  group_wait: 0s
  retry: {{initial: 100ms, max: 200ms, attempts: 2}}
  webhooks:
    - name: hook
      url: http://fener:{m["url_password"]}@{HOOK}:{cls.hook_port}/hooks/{m["url_path"]}?key={m["url_query"]}
      secret_file: {cls.dir}/hmac
      headers: {{Authorization: "Bearer {m["header"]}"}}
    - name: dead
      url: http://fener:{m["dead_password"]}@{DEAD}:1/x
      headers: {{X-Api-Key: "{m["dead_header"]}"}}
      timeout: 1s
""", 0o600)
        cls.log_path = os.path.join(cls.dir, "fener.log")
        cls.log = open(cls.log_path, "wb")
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        env.pop("NOTIFY_SOCKET", None)
        cls.started = time.monotonic()
        cls.proc = subprocess.Popen([FENER, "run", "-c", cls.config, "--mode", "observe",
                                     "--log-level", "debug"], env=env, stdin=subprocess.DEVNULL,
                                    stdout=cls.log, stderr=cls.log)

    @classmethod
    def tearDownClass(cls):
        # Ended by pid, also when a test failed half-way.
        if cls.proc and cls.proc.poll() is None:
            cls.proc.terminate()
            try:
                cls.proc.wait(20)
            except subprocess.TimeoutExpired:
                cls.proc.kill()
                cls.proc.wait(10)
        cls.log.close()
        for s in cls.servers:
            s.shutdown()
            s.server_close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def write(cls, name, text, mode):
        path = os.path.join(cls.dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def read_log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def get(self, path, headers=None):
        req = urllib.request.Request(f"http://{NODE}:{self.api_port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def fener(self, *args, config=None):
        r = subprocess.run([FENER, *args, "-c", config or self.config], capture_output=True,
                           text=True, errors="replace", timeout=60, stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout + r.stderr

    def wait_for(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail(f"fener exited {self.proc.returncode}\n{self.read_log()[-3000:]}")
            if pred():
                return time.monotonic() - self.started
            time.sleep(0.2)
        self.fail(f"no {what} within {timeout}s\n{self.read_log()[-3000:]}")

    def assert_clean(self, where, text):
        for name, marker in MARKERS.items():
            self.assertNotIn(marker, text, f"{name} leaked into {where}")

    def audit_text(self):
        try:
            with open(os.path.join(self.dir, "audit.jsonl"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def test_1_running_daemon_leaks_nothing(self):
        # Everything that can happen happened: the echoing answer and a delivery to the
        # receiver, the dead webhook's failures, a remedy decision in the audit file.
        t_hook = self.wait_for(lambda: len(self.hook_seen) >= 2, 60, "second webhook delivery")
        t_audit = self.wait_for(lambda: "datadir_permissions" in self.audit_text(), 60,
                                "audit record of datadir_permissions")
        t_dead = self.wait_for(lambda: "alert webhook dead" in self.read_log(), 30,
                               "a failure of the dead webhook in the log")
        t_lint = self.wait_for(lambda: "readable by everyone" in self.get("/status")[1], 30,
                               "the patroni.yml warning in /status")
        print(f"\n  figures: 2 webhook deliveries after {t_hook:.1f}s, audit record after "
              f"{t_audit:.1f}s, dead webhook logged after {t_dead:.1f}s, patroni.yml warning "
              f"after {t_lint:.1f}s (from fener's start)")

        # The receiver did get the secrets meant for it: the markers are really in use.
        path, headers, _ = self.hook_seen[0]
        self.assertIn(MARKERS["url_path"], path)
        self.assertEqual(headers.get("Authorization"), "Bearer " + MARKERS["header"])
        self.assertIn("X-Fener-Signature", headers)
        self.assertFalse([s for s in self.patroni_seen if s[0] == "POST"],
                         "observe mode sent an unsafe request to Patroni")

        outputs = {}
        for p in ("/status", "/metrics", "/healthz", "/v1/rules"):
            outputs["GET " + p] = self.get(p)
        outputs["GET /v1/peer/files"] = self.get("/v1/peer/files",
                                                 {"Authorization": "Bearer " + MARKERS["token"]})
        outputs["POST reset, wrong token"] = (0, "")
        req = urllib.request.Request(f"http://{NODE}:{self.api_port}/v1/rules/x/reset",
                                     method="POST", data=b"",
                                     headers={"Authorization": "Bearer " + MARKERS["token"] + "x"})
        try:
            urllib.request.urlopen(req, timeout=5)
        except urllib.error.HTTPError as e:
            outputs["POST reset, wrong token"] = (e.code, e.read().decode(errors="replace"))
        self.assertEqual(outputs["GET /status"][0], 200)
        self.assertEqual(outputs["GET /v1/peer/files"][0], 200)
        self.assertIn(".a.swp", outputs["GET /v1/peer/files"][1])
        self.assertEqual(outputs["POST reset, wrong token"][0], 401)
        status = json.loads(outputs["GET /status"][1])
        self.assertTrue(status["events"], "no events to look at")
        outputs["fener status --json"] = self.fener("status", "--json")
        outputs["fener rules --json"] = self.fener("rules", "--json")
        outputs["fener check --json"] = self.fener("check", "--json")
        outputs["fener check"] = self.fener("check", "--no-color")
        self.assertIn("kaptan1", outputs["fener status --json"][1])
        self.assertIn("datadir_permissions", outputs["fener rules --json"][1])
        self.assertIn("datadir", outputs["fener check"][1])
        self.assertIn("readable by everyone", outputs["fener check"][1] +
                      outputs["fener check --json"][1])
        for where, (_, text) in outputs.items():
            self.assert_clean(where, text)
        audit = self.audit_text()
        self.assertRegex(audit, "would_run|refused")  # a decision, with its facts and guards
        self.assert_clean("the audit file", audit)
        log = self.read_log()
        self.assertIn("alert webhook hook", log)  # the echoing 400 was logged...
        self.assertIn("(redacted)", log)          # ...with the echoed secrets replaced
        self.assert_clean("fener's log (debug level)", log)
        print(f"  checked {len(outputs)} answers and outputs, the audit file "
              f"({len(audit.splitlines())} records) and {len(log.splitlines())} log lines")

    def test_2_configuration_errors_name_no_secret(self):
        m = MARKERS
        base = f"node: {{name: k, address: {NODE}}}\netcd: {{env_files: []}}\n"
        bad = {
            "a bad key next to the token": f"api:\n  token: {m['token']}\n  listen: nowhere\n",
            "patroni.url with credentials":
                f"patroni:\n  url: ftp://u:{m['patroni_password']}@h/{m['url_path']}\n",
            "an etcd endpoint with credentials":
                f"etcd:\n  env_files: []\n  endpoints: [\"u:{m['patroni_password']}@h:2379\"]\n",
            "a webhook URL that is not http":
                f"alerts:\n  webhooks:\n    - name: a\n      url: ftp://u:{m['url_password']}@h/"
                f"{m['url_path']}?k={m['url_query']}\n",
            "a header fener sets itself":
                f"alerts:\n  webhooks:\n    - name: a\n      url: http://h/\n      headers: "
                f"{{Content-Type: {m['header']}}}\n",
            "a header on two lines":
                f"alerts:\n  webhooks:\n    - name: a\n      url: http://h/\n      headers:\n"
                f"        X-Key: \"a\\n{m['header']}\"\n",
            "a YAML syntax error on the token's line": f"api: {{token: {m['token']}\n",
            "a token that is a list": f"api:\n  token: [{m['token']}]\n",
            "the Patroni password in the wrong place": f"patroni:\n  pasword: {m['patroni_password']}\n",
        }
        base_no_etcd = f"node: {{name: k, address: {NODE}}}\n"
        for what, text in bad.items():
            head = base_no_etcd if text.startswith("etcd:") else base
            if "patroni:" not in text:
                head += "patroni:\n  config: \"\"\n"
            path = self.write("bad.yaml", head + text, 0o600)
            code, out = self.fener("check", config=path)
            self.assertEqual(code, 78, f"{what}: expected a configuration error, got {out}")
            self.assert_clean(f"the error for {what}: {out}", out)
        # World-readable files holding secrets: refused, naming file, mode and fix only.
        self.write("token", m["token"] + "\n", 0o644)
        path = self.write("bad.yaml", base + f"api:\n  token_file: {self.dir}/token\n", 0o600)
        code, out = self.fener("check", config=path)
        self.assertEqual(code, 78, out)
        self.assertIn(f"chmod 600 {self.dir}/token", out)
        self.assert_clean("the world-readable token file error", out)
        path = self.write("bad.yaml", base + f"api:\n  token: {m['token']}\n", 0o644)
        code, out = self.fener("check", config=path)
        self.assertEqual(code, 78, out)
        self.assertIn("(mode 0644)", out)
        self.assertIn("api.token", out)
        self.assert_clean("the world-readable fener.yaml error", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
