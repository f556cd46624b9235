"""The HTTP layer of the real binary, byte by byte (raw sockets): findings of a black-box
test of the HTTP server, each checked against `joule serve` as users run it.

- What a request's head decides (no token: 401; no route: 404; another method: 405; over
  the route's own body limit: 413) is answered before its body is read, and the server's
  memory stays bounded (without a token, 50 bodies of 4 MiB took it from 32 to 228 MB).
- A chunked body's trailer section is bounded like the headers (431, then close) and the
  server's memory stays bounded (it was 300 MiB of trailers → ~1 GB RSS, unauthenticated).
- Error bodies are valid UTF-8 JSON even when they echo a percent-decoded `%ff`.
- `HEAD /v1/stream` answers the head only; SSE heads carry each field once.
- RFC 9112: absolute-form targets are served; HTTP/1.0 with Transfer-Encoding is 400 and
  closed; no `100 Continue` to an HTTP/1.0 client.
- Out of file descriptors, the log reader backs off instead of logging in a tight loop,
  and a new client gets a 503 instead of waiting unanswered.
"""

import json
import resource
import socket
import time
import unittest
import uuid

from joule_harness import JouleServer, JouleTestCase, fmt_ts, poll

ADMIN_TOKEN = "admin-" + uuid.uuid4().hex


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def read_until(sock, done, timeout=5.0):
    """Reads until done(bytes) or EOF/timeout; returns (bytes, closed)."""
    sock.settimeout(0.2)
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done(got):
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return got, True
        if not chunk:
            return got, True
        got += chunk
    return got, False


def split_response(raw):
    """(status, head text, body bytes) of the first response in raw (Content-Length body)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return status, head.decode("latin-1"), rest[:length]


def complete(raw):
    if b"\r\n\r\n" not in raw:
        return False
    head, _, rest = raw.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(rest) >= int(value.strip())
    return True


class HttpProtocolTest(JouleTestCase):
    server_env = {"JOULE_AUTH_MODE": "required", "JOULE_AUTH_ADMIN_TOKEN": ADMIN_TOKEN}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dev = f"http-{uuid.uuid4().hex[:8]}"
        st, _, body = cls.server.request(
            "POST", "/v1/devices", {"device_id": cls.dev, "owner_id": "http-owner"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        if st != 201:
            raise AssertionError(f"register: {st} {body!r}" + cls.server.diag())

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.server.port), timeout=5)

    def exchange(self, request, timeout=5.0):
        with self.connect() as s:
            s.sendall(request.encode() if isinstance(request, str) else request)
            raw, _ = read_until(s, complete, timeout)
        self.assertTrue(complete(raw), f"no complete response to {request!r}: {raw!r}"
                        + self.diag())
        return split_response(raw)

    def test_chunked_trailers_are_bounded(self):
        pid = self.server.proc.pid
        before = rss_mib(pid)
        s = self.connect()
        # The attack was unauthenticated; since session 19 a request without a token is
        # answered 401 before its body is read, so the bound is checked with one.
        s.sendall(b"POST /v1/telemetry HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n")
        block = (b"X-Trailer: " + b"v" * 1000 + b"\r\n") * 1024  # ~1 MiB of trailer fields
        sent = 0
        try:
            for _ in range(64):
                s.sendall(block)
                sent += len(block)
            s.sendall(b"\r\n")
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass  # the server answered and closed: expected
        raw, _ = read_until(s, complete, 5)
        s.close()
        peak = rss_mib(pid)
        self.assertTrue(complete(raw), f"no answer after {sent} bytes of trailers: {raw!r}"
                        + self.diag())
        status, _, body = split_response(raw)
        self.assertEqual(status, 431, body)
        self.assertEqual(json.loads(body)["error"]["code"], "request_header_fields_too_large")
        self.assertLess(peak - before, 32, f"RSS grew {before} -> {peak} MiB")
        st, _, _ = self.server.request("GET", "/healthz")
        self.assertEqual(st, 200)

    def test_the_head_is_answered_before_the_body(self):
        """Found by a black-box test: without a token, every route (also /v1/devices with its
        64 KiB limit, GET-only /healthz, unknown paths) read up to limits.max_body_bytes
        (4 MiB) per connection before answering 401 / 405 / 404; 50 such connections took
        the server from 32 to 228 MB. Now the head decides: nothing of the body is needed."""
        big = 4 << 20
        admin = f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
        cases = [("POST", "/v1/devices", "", 401), ("POST", "/v1/rules", "", 401),
                 ("POST", "/v1/telemetry", "", 401),
                 ("POST", "/v1/devices", "Authorization: Bearer jd_" + "A" * 43 + "\r\n", 401),
                 ("POST", "/healthz", "", 405), ("POST", "/no/such/route", "", 404),
                 ("GET", "/healthz", "", 413),  # a route without a body takes 4 KiB at most
                 ("POST", "/v1/devices", admin, 413),  # over its own 64 KiB
                 ("PUT", "/v1/rules/r1", admin, 413)]  # over its own 32 KiB
        for method, path, extra, status in cases:
            with self.subTest(method=method, path=path, token=bool(extra)):
                with self.connect() as s:
                    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
                              f"Content-Type: application/json\r\n{extra}"
                              f"Content-Length: {big}\r\n\r\n".encode() + b"[" * 1000)
                    raw, closed = read_until(s, lambda b: False, 2)
                self.assertTrue(complete(raw), f"no answer before the body: {raw!r}" + self.diag())
                self.assertEqual(split_response(raw)[0], status, raw)
                self.assertTrue(closed, "the connection stays open for the body")
        pid = self.server.proc.pid
        before = rss_mib(pid)
        held = []
        try:
            for _ in range(50):
                s = self.connect()
                held.append(s)
                try:
                    s.sendall(b"POST /v1/devices HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n" % big + b" " * (big - 1))
                except (BrokenPipeError, ConnectionResetError, socket.timeout):
                    pass  # answered and closed: expected
            grown = rss_mib(pid) - before
        finally:
            for s in held:
                s.close()
        self.assertLess(grown, 32, f"50 unauthenticated 4 MiB bodies: RSS +{grown} MiB")

    def test_error_bodies_are_valid_utf8(self):
        for path in ["/nope%ff", "/assets/%ff", "/v1/alerts?from=%ff",
                     f"/v1/devices/{self.dev}/metrics/history?metrics=%ff",
                     f"/v1/devices/{self.dev}/metrics/history?from=%c3%28"]:
            with self.subTest(path=path):
                status, _, body = self.exchange(
                    f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
                    "Connection: close\r\n\r\n")
                self.assertIn(status, (400, 404), body)
                text = body.decode("utf-8")  # raises on invalid UTF-8
                self.assertIn("error", json.loads(text))

    def test_a_repeated_query_parameter_is_400(self):
        # Found by a black-box test: the first of two `from`s (or `resolution`s) was taken.
        hist = f"/v1/devices/{self.dev}/metrics/history"
        for path, name in [(f"{hist}?from=2026-12-01T10:00:00Z&from=2026-11-01T10:00:00Z", "from"),
                           (f"{hist}?resolution=1m&resolution=1d", "resolution"),
                           (f"/v1/devices/{self.dev}/realtime?windows=1&windows=2", "windows"),
                           ("/healthz?a=1&b=2&a=3", "a")]:
            with self.subTest(path=path):
                status, _, body = self.server.request(
                    "GET", path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                self.assertEqual(status, 400, body)
                self.assertEqual(body["error"]["code"], "invalid_argument", body)
                self.assertIn(f"query parameter '{name}' is given more than once",
                              body["error"]["message"])
        # Distinct names (and a name only repeated in a value) are fine.
        status, _, body = self.server.request(
            "GET", f"{hist}?from=2026-12-01T10:00:00Z&to=2026-12-01T11:00:00Z&metrics=from",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        self.assertEqual(status, 200, body)

    def test_two_authorization_fields_are_400(self):
        # The first would win here, a proxy may check the last (found by a black-box test).
        status, _, body = self.exchange(
            "GET /v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nobody\r\n"
            f"Authorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 400, body)
        self.assertIn(b"Authorization must be sent once", body)

    def test_an_unimplemented_transfer_coding_is_501_and_no_error_line(self):
        status, _, body = self.exchange(
            "POST /v1/telemetry HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: gzip\r\nConnection: close\r\n\r\nx")
        self.assertEqual(status, 501, body)
        time.sleep(0.2)
        self.assertNotIn("http request answered with a server error",
                         self.server.stderr_tail(10000))

    def test_head_on_stream_sends_the_head_only(self):
        with self.connect() as s:
            s.sendall(f"HEAD /v1/stream?device_id={self.dev} HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
                      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            raw, _ = read_until(s, lambda b: b.count(b"HTTP/1.1 ") >= 2 and b.endswith(b"}"), 5)
        head, _, rest = raw.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), raw)
        self.assertIn(b"Content-Type: text/event-stream", head)
        # Nothing of a stream before the next response, which is answered.
        self.assertTrue(rest.startswith(b"HTTP/1.1 200 "), raw)
        self.assertIn(b'"status":"ok"', rest)

    def test_sse_head_has_each_field_once(self):
        with self.connect() as s:
            s.sendall(f"GET /v1/stream?device_id={self.dev} HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {ADMIN_TOKEN}\r\n\r\n".encode())
            raw, _ = read_until(s, lambda b: b"\r\n\r\n" in b, 5)
        head = raw.partition(b"\r\n\r\n")[0].decode().lower()
        self.assertTrue(head.startswith("http/1.1 200"), head)
        for field in ("cache-control:", "x-accel-buffering:", "content-type:", "connection:"):
            self.assertEqual(head.count("\r\n" + field), 1, f"{field} in {head!r}")

    def test_absolute_form_target(self):
        port = self.server.port
        status, _, body = self.exchange(f"GET http://127.0.0.1:{port}/healthz HTTP/1.1\r\n"
                                        f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["status"], "ok")

    def test_http10_with_transfer_encoding_is_400_and_closed(self):
        ev = json.dumps({"device_id": self.dev, "timestamp": fmt_ts(time.time() - 2),
                         "metrics": {"power_w": 3}})
        with self.connect() as s:
            s.sendall(f"POST /v1/telemetry HTTP/1.0\r\nConnection: keep-alive\r\n"
                      f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n"
                      f"Transfer-Encoding: chunked\r\n\r\n{len(ev):x}\r\n{ev}\r\n0\r\n\r\n"
                      "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
            raw, closed = read_until(s, lambda b: False, 4)
        self.assertTrue(closed, raw)
        self.assertEqual(split_response(raw)[0], 400, raw)
        self.assertEqual(raw.count(b"HTTP/1.1 "), 1, raw)

    def test_no_100_continue_for_http10(self):
        with self.connect() as s:
            s.sendall(f"POST /v1/telemetry HTTP/1.0\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 2\r\n"
                      "Expect: 100-continue\r\n\r\n".encode())
            early, _ = read_until(s, lambda b: bool(b), 1.0)
            self.assertEqual(early, b"", "an interim response went to an HTTP/1.0 client")
            s.sendall(b"[]")
            raw, _ = read_until(s, complete, 5)
        self.assertEqual(split_response(raw)[0], 400, raw)  # an empty batch


def low_file_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


class FileDescriptorExhaustionTest(unittest.TestCase):
    """Out of descriptors (idle clients holding them), a log read fails with EMFILE: it is
    retried with a backoff and logged once, then summarized (it was an immediate retry
    writing ~60 MB/s of log lines); the start warns that the limit is too low."""

    def start_low_limit_server(self, name, env):
        """A server under a 256-descriptor limit with one registered device; returns it, the
        device and a keep-alive connection opened while descriptors were left."""
        server = JouleServer(env={"JOULE_AUTH_MODE": "required",
                                  "JOULE_AUTH_ADMIN_TOKEN": ADMIN_TOKEN, **env},
                             name=name, preexec_fn=low_file_limit)
        self.addCleanup(server.cleanup)
        server.start()
        dev = f"{name}-{uuid.uuid4().hex[:8]}"
        st, _, body = server.request("POST", "/v1/devices", {"device_id": dev, "owner_id": "o"},
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        self.assertEqual(st, 201, body)
        ingest = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.addCleanup(ingest.close)
        return server, dev, ingest

    @staticmethod
    def hold_every_descriptor(server, idle=None, count=300):
        """Idle connections, more than the server has descriptors for (close them after);
        appended to `idle` when given."""
        idle = [] if idle is None else idle
        for _ in range(count):
            try:
                idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=1))
            except OSError:
                break
        return idle

    def assert_out_of_descriptors(self, server):
        """Waits until a new client is answered 503 by the accept loop's reserve descriptor:
        every connection before it has been accepted or shed, so the server holds every
        descriptor it may open (the idle clients connect before the server has accepted
        them: without this wait, the requests that follow could find descriptors still
        free)."""
        raw = b""
        for _ in range(20):
            probe = socket.create_connection(("127.0.0.1", server.port), timeout=2)
            try:
                probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                raw, _ = read_until(probe, complete, 3)
            finally:
                probe.close()
            if complete(raw) and split_response(raw)[0] == 503:
                return
            time.sleep(0.1)
        self.fail(f"a client over the descriptor limit is not answered 503: {raw!r}"
                  + server.diag())

    def test_log_reads_back_off_and_recover(self):
        server, dev, ingest = self.start_low_limit_server(
            "fd", {"JOULE_STORAGE_DURABILITY": "none"})
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        self.assertTrue(server.logged("open-file limit below"), server.diag())

        def post(value):
            ev = json.dumps({"device_id": dev, "timestamp": fmt_ts(time.time() - 1),
                             "metrics": {"power_w": value}}).encode()
            ingest.sendall(f"POST /v1/telemetry HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                           f"{ADMIN_TOKEN}\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(ev)}\r\n\r\n".encode() + ev)
            raw, _ = read_until(ingest, complete, 5)
            return split_response(raw)[0] if complete(raw) else None

        idle = self.hold_every_descriptor(server)
        try:
            # A client over the limit is told so (503, from the accept loop's reserve
            # descriptor) instead of waiting unanswered in the listen backlog.
            self.assert_out_of_descriptors(server)
            statuses = []
            for i in range(6):
                statuses.append(post(i))
                time.sleep(0.5)
            failed = [line for line in server.log_lines() if "log read failed" in line]
            self.assertTrue(failed, "the test did not exhaust the descriptors: "
                            f"{statuses}" + server.diag())
            self.assertLessEqual(len(failed), 3, f"{len(failed)} 'log read failed' lines in "
                                 "3 s" + server.diag(20))
        finally:
            for s in idle:
                s.close()
        # Descriptors free again: the retry reads the events.
        self.assertEqual(post(99), 202, server.diag())
        ok = poll(lambda: (lambda r: r[0] == 200 and r[2].get("data"))(
            server.realtime(dev, headers=admin)), timeout=15)
        self.assertTrue(ok, "no realtime data after the descriptors came back" + server.diag())
        self.assertTrue(server.logged("log read recovered"), server.diag())

    def test_a_segment_roll_out_of_descriptors_is_503_not_an_abort(self):
        """Out of descriptors at a log segment roll, the write round is refused like one on a
        full disk: 503 + Retry-After, nothing of the request stored, the server up; once
        descriptors free up the roll succeeds. (It was a fail-stop abort, exit 134: clients
        holding every descriptor with idle connections brought the server down.)"""
        server, dev, ingest = self.start_low_limit_server(
            "fdroll", {"JOULE_LIMITS_DEVICE_EVENTS_PER_SECOND": "0",
                       "JOULE_STORAGE_LOG_SEGMENT_BYTES": "65536"})
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        base = time.time() - 600
        seq = [0]

        def post():
            """Posts 100 events (~12 KB of log records, so a roll every few batches) on the
            keep-alive connection; returns (status, head), (None, "") if no answer."""
            k0 = seq[0]
            events = [{"device_id": dev, "event_id": f"{dev}-{k}",
                       "timestamp": fmt_ts(base + k * 0.01), "metrics": {"power_w": 1.0}}
                      for k in range(k0, k0 + 100)]
            body = json.dumps(events).encode()
            try:
                ingest.sendall(f"POST /v1/telemetry HTTP/1.1\r\nHost: x\r\nAuthorization: "
                               f"Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n"
                               f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            except OSError:
                return None, ""
            raw, _ = read_until(ingest, complete, 5)
            if not complete(raw):
                return None, ""
            status, head, _ = split_response(raw)
            if status == 202:
                seq[0] += 100
            return status, head

        self.assertEqual(post()[0], 202, server.diag())
        idle = self.hold_every_descriptor(server)
        statuses = []
        try:
            self.assert_out_of_descriptors(server)
            # A descriptor the server frees meanwhile (a file closed by the history store, a
            # shed client) lets one roll through: take it back with more idle clients, and
            # go on until a roll finds none (a roll every ~6 requests).
            for _ in range(100):
                status, head = post()
                statuses.append(status)
                if status != 202:
                    break
                self.hold_every_descriptor(server, idle, count=5)
            self.assertEqual(statuses[-1], 503, f"{statuses}" + server.diag(30))
            self.assertIn("retry-after", head.lower())
            self.assertTrue(server.running(), "the server died out of descriptors" + server.diag())
            self.assertTrue(server.logged("out of file descriptors"), server.diag(30))
        finally:
            for s in idle:
                s.close()
        # Descriptors free again: the next round rolls, and nothing refused was stored.
        status = None
        for _ in range(50):
            status, _ = post()
            if status == 202:
                break
            self.assertEqual(status, 503, server.diag(30))
            time.sleep(0.1)
        self.assertEqual(status, 202, server.diag(30))
        acked = seq[0]

        def counted():
            st, _, body = server.realtime(dev, windows=1000, headers=admin)
            return sum(int(r.get("count", 0)) for r in body.get("data", [])) if st == 200 else 0

        self.assertTrue(poll(lambda: counted() >= acked, timeout=30), server.diag(30))
        self.assertEqual(counted(), acked)
        self.assertEqual(server.stop(), 0, server.diag(30))


if __name__ == "__main__":
    unittest.main()
