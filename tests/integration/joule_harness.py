"""Black-box harness for the real `joule` binary (standard library only).

Starts `$JOULE_BIN serve` with no config file, configured only through
JOULE_<SECTION>_<KEY> environment variables (CONTRACT section 5), on an
ephemeral port (127.0.0.1:0) and a temporary data dir that survives restart().

The port is learned from the JSON log line {"msg": "http listening",
"address": "127.0.0.1:<port>"} on stderr; readiness from GET /readyz == 200. The MQTT
listener's port, when there is one, from "mqtt listening" (`mqtt_port`).

Every failure raised by the harness carries the tail of the server's stderr;
tests should add `server.diag()` to their own assertion messages.

Stores: JOULE_IT_STORES selects the metadata and latest stores of every server the tests
start, unless a test sets JOULE_METADATA_BACKEND / JOULE_LATEST_BACKEND itself:
  sqlite+memory   (default) the embedded defaults
  postgres+redis  metadata.url = a fresh database on the PostgreSQL of JOULE_TEST_PG_URL
                  (created per server, dropped at cleanup), latest.backend = redis on a
                  private redis-server (a fresh, empty Redis 7 per server on a free port:
                  tests reuse device ids, so servers must not share keys)
CTest registers the API tests once per mode (tests/CMakeLists.txt).
"""

import collections
import http.client
import json
import math
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "build" / "debug" / "src" / "app" / "joule"

START_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0

# Hermetic defaults: no MQTT, no auth, short stream timers, fsync durability.
BASE_ENV = {
    "JOULE_SERVER_HTTP_LISTEN": "127.0.0.1:0",
    "JOULE_SERVER_MQTT_LISTEN": "",
    "JOULE_AUTH_MODE": "disabled",
    "JOULE_STREAM_OUT_OF_ORDERNESS": "1s",
    "JOULE_STREAM_IDLE_TIMEOUT": "2s",
    "JOULE_STREAM_EARLY_FIRE_INTERVAL": "1s",
    "JOULE_STORAGE_DURABILITY": "fsync",
}


def joule_bin():
    return os.environ.get("JOULE_BIN") or str(DEFAULT_BIN)


STORES = os.environ.get("JOULE_IT_STORES", "sqlite+memory")
if STORES not in ("sqlite+memory", "postgres+redis"):
    raise RuntimeError(f"JOULE_IT_STORES={STORES!r}: expected sqlite+memory or postgres+redis")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------- PostgreSQL, Redis


def pg_base_url():
    url = os.environ.get("JOULE_TEST_PG_URL")
    if not url:
        raise AssertionError(
            "JOULE_TEST_PG_URL is not set: the PostgreSQL cases need the test services; run "
            "`eval \"$(scripts/test-services.sh start)\"` first (they are required, not "
            "optional)")
    return url


def psql(url, *sql):
    """Runs SQL statements with psql; returns stdout (unaligned, tuples only)."""
    args = ["psql", url, "-v", "ON_ERROR_STOP=1", "-qAt"]
    for s in sql:
        args += ["-c", s]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"psql {sql!r} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def with_database(url, dbname):
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + dbname))


class FreshPostgresDatabase:
    """CREATE DATABASE on start, DROP DATABASE (FORCE) on cleanup."""

    def __init__(self, prefix, base=None):
        self.base = base or pg_base_url()
        self.name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        psql(self.base, f"CREATE DATABASE {self.name}")
        self.url = with_database(self.base, self.name)

    def drop(self):
        psql(self.base, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


class PrivateRedis:
    """A redis-server of our own (127.0.0.1, free port, temp dir) that a test may stop and
    start again. `persistent`: append-only file, so the data survives stop()/start()."""

    def __init__(self, persistent=False):
        self.dir = tempfile.mkdtemp(prefix="joule-redis-")
        self.port = free_port()
        self.persistent = persistent
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--dir", self.dir, "--logfile", os.path.join(self.dir, "log")]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else [
            "--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                if self.cli("PING").strip() == "PONG":
                    return self
            except AssertionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server on port {self.port} did not start: "
                                     + self._log_tail())
            time.sleep(0.05)

    def pause(self):
        """SIGSTOP: the server keeps its sockets and data but answers nothing (timeouts)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        """SIGTERM (redis-server writes its append-only file and exits) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args):
        proc = subprocess.run(["redis-cli", "-p", str(self.port), *args],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0 or proc.stdout.startswith("Could not connect"):
            raise AssertionError(f"redis-cli {args!r}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _log_tail(self):
        try:
            with open(os.path.join(self.dir, "log")) as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"


class ServerError(AssertionError):
    """A harness-level failure; its message includes the server's stderr tail."""


class JouleServer:
    """One `joule serve` process (and its successors after restart()).

    env: overrides of BASE_ENV (a value of None removes the variable).
    data_dir: use this directory (kept); default a fresh temp dir, removed by cleanup()
    unless JOULE_KEEP_DATA=1.
    """

    def __init__(self, env=None, data_dir=None, name="joule", ssl_context=None,
                 preexec_fn=None):
        self.name = name
        self.preexec_fn = preexec_fn  # run in the child before exec (e.g. setrlimit)
        self.ssl_context = ssl_context  # set: the server speaks HTTPS (server.tls_*)
        self.overrides = dict(env or {})
        self.serve_args = []  # after `joule serve` (e.g. --accept-partial-rebuild)
        if data_dir is None:
            self.data_dir = tempfile.mkdtemp(prefix="joule-it-")
            self._owns_dir = True
        else:
            self.data_dir = str(data_dir)
            self._owns_dir = False
        self.proc = None
        self.port = None
        # The current run's MQTT port once its "mqtt listening" line was read, else None
        # (safe to read from other threads while the server restarts).
        self.mqtt_port = None
        self.runs = 0
        self.exit_codes = []
        self._lines = collections.deque(maxlen=4000)
        self._lines_lock = threading.Lock()
        self._listening = threading.Event()
        self._readers = []
        # The stores of JOULE_IT_STORES, created on first start, kept across restarts.
        self.database = None
        self.redis = None

    # ---------------------------------------------------------------- process

    @property
    def latest_backend(self):
        """"memory" or "redis": what realtime answers say as their source (else "history")."""
        return self.environment().get("JOULE_LATEST_BACKEND") or "memory"

    @property
    def metadata_backend(self):
        return self.environment().get("JOULE_METADATA_BACKEND") or "sqlite"

    def _provision_stores(self):
        if STORES != "postgres+redis":
            return
        if "JOULE_METADATA_BACKEND" not in self.overrides and self.database is None:
            self.database = FreshPostgresDatabase("joule_it")
        if "JOULE_LATEST_BACKEND" not in self.overrides and self.redis is None:
            self.redis = PrivateRedis().start()

    def environment(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOULE_")}
        env.update(BASE_ENV)
        env["JOULE_STORAGE_DATA_DIR"] = self.data_dir
        if self.database is not None:
            env["JOULE_METADATA_BACKEND"] = "postgres"
            env["JOULE_METADATA_URL"] = self.database.url
        if self.redis is not None:
            env["JOULE_LATEST_BACKEND"] = "redis"
            env["JOULE_LATEST_URL"] = self.redis.url
        for k, v in self.overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    def start(self, wait_ready=True):
        """Starts `joule serve` and waits for its 'http listening' line, then (wait_ready)
        for /readyz 200."""
        if self.running():
            raise ServerError("server already running" + self.diag())
        binary = joule_bin()
        if not os.access(binary, os.X_OK):
            raise unittest.SkipTest(f"joule binary not found or not executable: {binary} "
                                    "(set JOULE_BIN)")
        self._provision_stores()
        self.runs += 1
        self.port = None
        self.mqtt_port = None
        self._listening = threading.Event()
        self._append(f"----- {self.name} run {self.runs}: {binary} serve "
                     f"(data_dir={self.data_dir}) -----")
        self.proc = subprocess.Popen(
            [binary, "serve", *self.serve_args], env=self.environment(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.data_dir,
            preexec_fn=self.preexec_fn)
        self._readers = [
            threading.Thread(target=self._read_stream, args=(self.proc, self.proc.stderr, "err"),
                             daemon=True),
            threading.Thread(target=self._read_stream, args=(self.proc, self.proc.stdout, "out"),
                             daemon=True),
        ]
        for t in self._readers:
            t.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                self._join_readers()
                raise ServerError(f"joule exited with {self.proc.returncode} before listening"
                                  + self.diag())
            if time.monotonic() > deadline:
                self._force_kill()
                raise ServerError(f"no 'http listening' log line within {START_TIMEOUT_S}s"
                                  + self.diag())
        if wait_ready:
            self.wait_ready(deadline=time.monotonic() + READY_TIMEOUT_S)
        return self

    def wait_ready(self, deadline):
        last = None
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"joule exited with {self.proc.returncode} before ready"
                                  + self.diag())
            try:
                status, _, _ = self.request("GET", "/readyz", timeout=2, raw_errors=True)
                if status == 200:
                    return
                last = f"status {status}"
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            if time.monotonic() > deadline:
                raise ServerError(f"/readyz not 200 within {READY_TIMEOUT_S}s (last: {last})"
                                  + self.diag())
            time.sleep(0.05)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT_S):
        """Send `sig` and wait for exit; returns the exit code (negative = killed by signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._force_kill()
                raise ServerError(f"joule did not exit within {timeout}s of signal {sig}"
                                  + self.diag())
        self._join_readers()
        code = self.proc.returncode
        self.exit_codes.append(code)
        self._append(f"----- {self.name} run {self.runs} exited with {code} -----")
        return code

    def kill9(self):
        return self.stop(sig=signal.SIGKILL)

    def restart(self, sig=signal.SIGTERM):
        """Stop (if running) and start again on the same data dir; returns the stop exit code."""
        code = self.stop(sig) if self.running() else None
        self.start()
        return code

    def cleanup(self):
        if self.running():
            try:
                self.stop(timeout=10)
            except ServerError:
                pass
        if self._owns_dir and os.environ.get("JOULE_KEEP_DATA") != "1":
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.redis is not None:
            self.redis.cleanup()
            self.redis = None
        if self.database is not None:
            try:
                self.database.drop()
            except AssertionError:
                pass
            self.database = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def _force_kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._join_readers()

    def _join_readers(self):
        for t in self._readers:
            t.join(timeout=5)

    # ------------------------------------------------------------------- logs

    def _append(self, line):
        with self._lines_lock:
            self._lines.append(line)

    def _read_stream(self, proc, stream, tag):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._append(line if tag == "err" else "[stdout] " + line)
            if tag != "err" or "listening" not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or proc is not self.proc:
                continue
            _, _, port = str(rec.get("address", "")).rpartition(":")
            if not port.isdigit() or int(port) == 0:
                continue
            if rec.get("msg") == "http listening" and not self._listening.is_set():
                self.port = int(port)
                self._listening.set()
            elif rec.get("msg") == "mqtt listening":
                self.mqtt_port = int(port)
        stream.close()

    def log_lines(self):
        with self._lines_lock:
            return list(self._lines)

    def logged(self, *texts, timeout=10.0):
        """Whether a stderr line holding every one of `texts` arrives within `timeout` s.
        A line the server wrote before it answered may still be in the pipe when the answer
        is read (a reader thread collects stderr): assertions on a running server's log wait
        for it here instead of reading log_lines() once."""
        deadline = time.monotonic() + timeout
        while True:
            if any(all(t in line for t in texts) for line in self.log_lines()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def log_records(self):
        """stderr lines of all runs that parse as JSON objects."""
        out = []
        for line in self.log_lines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def stderr_tail(self, n=60):
        lines = self.log_lines()[-n:]
        return "\n".join(lines)

    def diag(self, n=60):
        state = "running" if self.running() else (
            f"exited {self.proc.returncode}" if self.proc else "never started")
        return (f"\n--- joule ({state}, port={self.port}, data_dir={self.data_dir}) "
                f"stderr tail ---\n{self.stderr_tail(n)}\n--- end of stderr ---")

    # ------------------------------------------------------------------- HTTP

    @property
    def url(self):
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def request(self, method, path, body=None, headers=None, content_type=None, timeout=30,
                raw_errors=False):
        """Returns (status, headers with lower-case names, body).

        A connection failure raises ServerError (an AssertionError carrying the stderr tail),
        or the original exception when raw_errors is set.

        body: bytes/str are sent as is; anything else is JSON-encoded. content_type defaults
        to application/json when there is a body; content_type=False sends none. The
        response body is parsed as JSON when it parses, else returned as text.
        """
        if self.port is None:
            raise ServerError("server is not listening" + self.diag())
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            if isinstance(body, bytes):
                data = body
            elif isinstance(body, str):
                data = body.encode("utf-8")
            else:
                data = json.dumps(body).encode("utf-8")
            if content_type is None:
                content_type = "application/json"
        if content_type is not None and content_type is not False:
            hdrs["Content-Type"] = content_type
        if self.ssl_context is not None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            try:
                conn.request(method, path, body=data, headers=hdrs)
            except (BrokenPipeError, ConnectionResetError):
                # The server may answer (e.g. 413) and close before reading the whole body.
                # A reset while connecting (a server killed mid-handshake) leaves no socket
                # to read an answer from: that is a connection failure.
                if conn.sock is None:
                    raise
            resp = conn.getresponse()
            raw = resp.read()
            rheaders = {k.lower(): v for k, v in resp.getheaders()}
            return resp.status, rheaders, decode_body(raw)
        except (OSError, http.client.HTTPException) as e:
            if raw_errors:
                raise
            raise ServerError(f"{method} {path}: no HTTP response ({e!r})" + self.diag()) from e
        finally:
            conn.close()

    def get_json(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def post_events(self, events, headers=None, ndjson=False):
        if ndjson:
            body = "".join(json.dumps(e) + "\n" for e in events)
            return self.request("POST", "/v1/telemetry", body, headers,
                                content_type="application/x-ndjson")
        return self.request("POST", "/v1/telemetry", events, headers)

    def realtime(self, device_id, windows=60, headers=None):
        path = (f"/v1/devices/{urllib.parse.quote(device_id, safe='')}/metrics/realtime"
                f"?windows={windows}")
        return self.request("GET", path, headers=headers)

    def metrics_text(self):
        status, _, body = self.request("GET", "/metrics")
        if status != 200:
            raise ServerError(f"GET /metrics -> {status}: {body!r}" + self.diag())
        return body if isinstance(body, str) else json.dumps(body)


def read_stream(conn, resp, until, timeout):
    """Reads an open streaming response (SSE) of `conn` until until(bytes read so far) is
    true, the stream ends, or `timeout` seconds have passed; returns the bytes read.

    Each read waits for at most the time left. A shorter socket timeout does not work as a
    poll: after one read timed out, http.client's reader answers every later read with
    OSError("cannot read from timed out object"), so a stream that was quiet for longer
    than the connection's timeout was dead for the rest of the test.
    """
    sock = conn.sock if conn.sock is not None else resp.fp.raw._sock
    seen = b""
    deadline = time.monotonic() + timeout
    while not until(seen):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = resp.read1(65536)
        except OSError:  # the deadline (TimeoutError), or the server closed it
            break
        if not chunk:
            break
        seen += chunk
    return seen


def decode_body(raw):
    text = raw.decode("utf-8", "replace")
    if not text:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


# ------------------------------------------------------------------ Prometheus


def parse_prometheus(text):
    """Returns {metric_name: [(labels_dict, value), ...]} from the text exposition format."""
    out = collections.defaultdict(list)
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        labels = {}
        if "{" in line:
            name, rest = line.split("{", 1)
            label_text, _, value_part = _split_labels(rest)
            labels = label_text
        else:
            name, _, value_part = line.partition(" ")
        fields = value_part.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        out[name.strip()].append((labels, value))
    return out


def _split_labels(rest):
    """Parses `a="x",b="y"} 12` -> ({a: x, b: y}, '}', ' 12')."""
    labels = {}
    i = 0
    n = len(rest)
    while i < n:
        while i < n and rest[i] in " ,":
            i += 1
        if i < n and rest[i] == "}":
            return labels, "}", rest[i + 1:]
        eq = rest.index("=", i)
        key = rest[i:eq].strip()
        i = eq + 1
        if rest[i] != '"':
            raise ValueError("bad label value in " + rest)
        i += 1
        val = []
        while rest[i] != '"':
            if rest[i] == "\\" and i + 1 < n:
                nxt = rest[i + 1]
                val.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, nxt))
                i += 2
            else:
                val.append(rest[i])
                i += 1
        labels[key] = "".join(val)
        i += 1
    return labels, "}", ""


def metric_sum(parsed, name, **label_filter):
    """Sum of all series of `name` whose labels include label_filter (0 if absent)."""
    total = 0.0
    for labels, value in parsed.get(name, []):
        if all(labels.get(k) == v for k, v in label_filter.items()):
            total += value
    return total


# ------------------------------------------------------------------------ time


def fmt_ts(epoch_s):
    """RFC 3339 UTC with millisecond precision, as Joule outputs it."""
    ms = int(round(epoch_s * 1000))
    sec, msec = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{msec:03d}Z"


def fmt_ts_offset(epoch_s, offset_minutes):
    """RFC 3339 in a fixed offset, e.g. +01:00 (input side only)."""
    ms = int(round((epoch_s + offset_minutes * 60) * 1000))
    sec, msec = divmod(ms, 1000)
    sign = "+" if offset_minutes >= 0 else "-"
    off = abs(offset_minutes)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) +
            f".{msec:03d}{sign}{off // 60:02d}:{off % 60:02d}")


def parse_ts(text):
    """Parses Joule's output format YYYY-MM-DDTHH:MM:SS.mmmZ to epoch seconds (float)."""
    import calendar
    if not isinstance(text, str) or not text.endswith("Z"):
        raise ValueError(f"not a UTC RFC 3339 timestamp: {text!r}")
    main, _, frac = text[:-1].partition(".")
    sec = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return sec + (float("0." + frac) if frac else 0.0)


def minute_base(minutes_back=3, now=None):
    """A minute boundary `minutes_back` minutes before the current minute."""
    now = time.time() if now is None else now
    return (math.floor(now / 60) - minutes_back) * 60


def poll(fn, timeout=10.0, interval=0.1):
    """Calls fn() until it returns a truthy value or timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


class JouleTestCase(unittest.TestCase):
    """A test class sharing one server; set `server_env` on subclasses."""

    server_env = {}
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = JouleServer(env=cls.server_env, name=cls.__name__)
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.cleanup()

    def diag(self):
        return self.server.diag() if self.server else ""

    def assertStatus(self, resp, expected, what=""):
        status, _, body = resp
        expected_set = expected if isinstance(expected, (set, tuple, list)) else {expected}
        if status not in expected_set:
            self.fail(f"{what}: expected HTTP {expected}, got {status} body={body!r}"
                      + self.diag())
