"""MQTT ingest (CONTRACT section 1, docs/formats/mqtt.md) against the real binary with real
Mosquitto clients (`mosquitto_pub` from Debian's mosquitto-clients, installed by
scripts/install-deps.sh --test): QoS 0 and 1 over MQTT 3.1.1 and 5.0 with device tokens,
a wrong password, another device's topic, a malformed payload on a connection that stays
usable, an oversized packet, and SIGKILL right after a QoS 1 publish returned (PUBACK
means durable: the event is there after the restart). `RawMqtt5` writes MQTT 5 by hand for
what mosquitto_pub does not show (reason strings) or cannot send."""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import uuid

from joule_harness import (JouleServer, JouleTestCase, fmt_ts, metric_sum, parse_prometheus,
                           poll)

ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MQTT_ENV = {"JOULE_SERVER_MQTT_LISTEN": "127.0.0.1:0"}
AUTH_ENV = dict(MQTT_ENV, JOULE_AUTH_MODE="required", JOULE_AUTH_ADMIN_TOKEN=ADMIN_TOKEN)


def uid():
    return uuid.uuid4().hex[:10]


def event(seconds_ago=20, power=100.0, device_id=None):
    e = {"timestamp": fmt_ts(time.time() - seconds_ago), "metrics": {"power_w": power},
         "event_id": uid()}
    if device_id:
        e["device_id"] = device_id
    return e


def mosquitto_pub_path():
    path = shutil.which("mosquitto_pub")
    if not path:
        raise AssertionError("mosquitto_pub not found: install mosquitto-clients "
                             "(scripts/install-deps.sh --test)")
    return path


def mqtt_port(server):
    """The MQTT port of the current run, from {"msg":"mqtt listening","address":...}."""
    def find():
        port = None
        for line in server.log_lines():
            if line.startswith("----- ") and " run " in line and "exited" not in line:
                port = None  # a new run starts: forget the old port
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("msg") == "mqtt listening":
                port = int(str(rec["address"]).rpartition(":")[2])
        return port
    port = poll(find, timeout=10)
    if not port:
        raise AssertionError("no 'mqtt listening' log line" + server.diag())
    return port


def pub(server, topic, messages, version="mqttv311", qos=1, user=None, password=None,
        client_id=None, timeout=20):
    """Runs mosquitto_pub; `messages` is one payload (-m) or a list sent on one connection
    (-l, one per line). Returns the CompletedProcess (or None on timeout)."""
    args = [mosquitto_pub_path(), "-h", "127.0.0.1", "-p", str(mqtt_port(server)), "-V",
            version, "-q", str(qos), "-t", topic, "-i", client_id or f"it-{uid()}"]
    if user is not None:
        args += ["-u", user]
    if password is not None:
        args += ["-P", password]
    stdin = None
    if isinstance(messages, bytes):  # large payloads: from a file (-f)
        f = tempfile.NamedTemporaryFile(prefix="joule-mqtt-", delete=False)
        f.write(messages)
        f.close()
        args += ["-f", f.name]
    elif isinstance(messages, list):
        args += ["-l"]
        stdin = "".join(m + "\n" for m in messages)
    else:
        args += ["-m", messages]
    try:
        return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        if isinstance(messages, bytes):
            os.unlink(f.name)


def vbi(n):
    """An MQTT Variable Byte Integer."""
    out = b""
    while True:
        n, b = divmod(n, 128)
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def read_vbi(data, i):
    """(value, index after it) of the Variable Byte Integer at data[i]; IndexError when
    data ends first."""
    value, shift = 0, 0
    while True:
        b = data[i]
        value |= (b & 0x7F) << shift
        shift += 7
        i += 1
        if not b & 0x80:
            return value, i


def mqtt_string(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(s)) + s


class RawMqtt5:
    """MQTT 5 written by hand, for what mosquitto_pub cannot send (properties a client must
    not send) or does not show (reason codes and reason strings)."""

    def __init__(self, port, user, password):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        body = (mqtt_string("MQTT") + bytes([5, 0xC2]) + struct.pack(">H", 60) + vbi(0) +
                mqtt_string(f"raw-{uid()}") + mqtt_string(user) + mqtt_string(password))
        self.send(1, 0, body)
        ack = self.read()
        assert ack is not None and ack[0] == 2 and ack[1][1] == 0, f"CONNACK {ack!r}"

    def send(self, packet_type, flags, body):
        self.sock.sendall(bytes([packet_type << 4 | flags]) + vbi(len(body)) + body)

    def publish(self, topic_name, payload, packet_id, properties=b""):
        """A QoS 1 PUBLISH; `properties` encoded, without their length."""
        payload = payload.encode() if isinstance(payload, str) else payload
        self.send(3, 2, mqtt_string(topic_name) + struct.pack(">H", packet_id) +
                  vbi(len(properties)) + properties + payload)

    def read(self):
        """(packet type, body), or None once the server closed the connection."""
        while True:
            try:
                length, start = read_vbi(self.buf, 1)
                if len(self.buf) >= start + length:
                    packet = (self.buf[0] >> 4, self.buf[start:start + length])
                    self.buf = self.buf[start + length:]
                    return packet
            except IndexError:
                pass
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.buf += data

    @staticmethod
    def puback_reason(body):
        """(reason code, reason string or None) of a PUBACK's body. Joule's PUBACKs carry
        no property but the Reason String (0x1F)."""
        if len(body) <= 3:
            return (body[2] if len(body) == 3 else 0), None
        length, i = read_vbi(body, 3)
        if length == 0:
            return body[2], None
        assert body[i] == 0x1F, body[i:i + 16]
        n = struct.unpack(">H", body[i + 1:i + 3])[0]
        return body[2], body[i + 3:i + 3 + n].decode()

    def close(self):
        self.sock.close()


def topic(device_id):
    return f"devices/{device_id}/telemetry"


def realtime_count(server, device_id, headers=None):
    path = (f"/v1/devices/{urllib.parse.quote(device_id, safe='')}/metrics/realtime"
            f"?windows=60")
    status, _, body = server.request("GET", path, headers=headers)
    if status != 200 or not isinstance(body, dict):
        return 0
    return sum(int(r.get("count", 0)) for r in body.get("data", []))


def wait_count(server, device_id, want, headers=None, timeout=20):
    return poll(lambda: realtime_count(server, device_id, headers) >= want and
                realtime_count(server, device_id, headers), timeout=timeout) or \
        realtime_count(server, device_id, headers)


class MqttWithDeviceTokens(JouleTestCase):
    server_env = AUTH_ENV

    def metrics(self):
        return parse_prometheus(self.server.metrics_text())

    def register(self):
        device_id = f"dev-{uid()}"
        resp = self.server.request("POST", "/v1/devices",
                                   {"device_id": device_id, "owner_id": f"own-{uid()}"},
                                   headers=ADMIN)
        self.assertStatus(resp, 201, "register device")
        return device_id, resp[2]["token"]

    def assertPublished(self, proc, what):
        self.assertIsNotNone(proc, f"{what}: mosquitto_pub timed out" + self.diag())
        self.assertEqual(proc.returncode, 0, f"{what}: {proc.stderr}" + self.diag())

    def test_qos0_and_qos1_over_311_and_5_are_counted(self):
        dev, token = self.register()
        before = metric_sum(self.metrics(), "joule_events_accepted_total")
        for version in ("mqttv311", "mqttv5"):
            for qos in (0, 1):
                self.assertPublished(
                    pub(self.server, topic(dev), json.dumps(event()), version, qos, dev, token),
                    f"{version} QoS {qos}")
        # A JSON array of events with the device id present (and equal to the topic's).
        arr = json.dumps([event(device_id=dev, seconds_ago=25), event(seconds_ago=26)])
        self.assertPublished(pub(self.server, topic(dev), arr, "mqttv5", 1, dev, token), "array")
        got = wait_count(self.server, dev, 6, headers=ADMIN)
        self.assertEqual(got, 6, "all six events (QoS 0 included) show up" + self.diag())
        m = self.metrics()
        self.assertEqual(metric_sum(m, "joule_events_accepted_total") - before, 6)
        self.assertGreaterEqual(metric_sum(m, "joule_mqtt_messages_total", result="accepted"), 5)
        self.assertGreaterEqual(metric_sum(m, "joule_mqtt_publishes_total", qos="1"), 3)

    def test_wrong_password_is_refused_and_counted(self):
        dev, token = self.register()
        other, other_token = self.register()
        before = metric_sum(self.metrics(), "joule_mqtt_auth_failures_total")
        for version in ("mqttv311", "mqttv5"):
            for password in ("wrong-" + token, other_token, None):
                proc = pub(self.server, topic(dev), json.dumps(event()), version, 1, dev,
                           password)
                self.assertIsNotNone(proc, "a refused CONNECT ends mosquitto_pub")
                self.assertNotEqual(proc.returncode, 0, f"{version} {password!r} accepted")
        self.assertEqual(metric_sum(self.metrics(), "joule_mqtt_auth_failures_total") - before,
                         6, self.diag())
        self.assertEqual(realtime_count(self.server, dev, ADMIN), 0, "nothing stored")

    def test_other_devices_topic_is_refused_and_counted(self):
        dev, token = self.register()
        other, _ = self.register()
        before = metric_sum(self.metrics(), "joule_mqtt_acl_denied_total")
        # MQTT 5: PUBACK 0x87 Not authorized. 3.1.1: the server disconnects (mosquitto_pub
        # may retry by reconnecting, so a timeout is fine too).
        pub(self.server, topic(other), json.dumps(event()), "mqttv5", 1, dev, token, timeout=10)
        pub(self.server, topic(other), json.dumps(event()), "mqttv311", 1, dev, token,
            timeout=5)
        pub(self.server, "devices/" + dev + "/other", json.dumps(event()), "mqttv5", 1, dev,
            token, timeout=10)
        denied = metric_sum(self.metrics(), "joule_mqtt_acl_denied_total") - before
        self.assertGreaterEqual(denied, 3, self.diag())
        time.sleep(0.5)  # give a wrongly accepted event the chance to show up
        self.assertEqual(realtime_count(self.server, other, ADMIN), 0, "nothing stored")

    def test_malformed_payload_is_counted_and_the_connection_stays_usable(self):
        dev, token = self.register()
        m0 = self.metrics()
        # One connection (-l): bad JSON, an event with a bad timestamp, then a good event.
        good = json.dumps(event())
        proc = pub(self.server, topic(dev),
                   ["{not json", json.dumps({"timestamp": "yesterday", "metrics": {"a": 1}}),
                    good], "mqttv5", 1, dev, token)
        self.assertIsNotNone(proc, "mosquitto_pub -l timed out" + self.diag())
        self.assertEqual(wait_count(self.server, dev, 1, ADMIN), 1,
                         "the good message after two bad ones is stored" + self.diag())
        m1 = self.metrics()
        self.assertEqual(metric_sum(m1, "joule_mqtt_messages_total", result="invalid_payload") -
                         metric_sum(m0, "joule_mqtt_messages_total", result="invalid_payload"),
                         2, self.diag())
        self.assertGreaterEqual(
            metric_sum(m1, "joule_events_rejected_total", code="invalid_json") -
            metric_sum(m0, "joule_events_rejected_total", code="invalid_json"), 1)
        self.assertGreaterEqual(
            metric_sum(m1, "joule_events_rejected_total", code="invalid_timestamp") -
            metric_sum(m0, "joule_events_rejected_total", code="invalid_timestamp"), 1)
        # 3.1.1 has no negative PUBACK: the bad payload is acknowledged (and counted), so the
        # device does not resend it forever.
        self.assertPublished(pub(self.server, topic(dev), "{not json", "mqttv311", 1, dev, token),
                             "3.1.1 bad payload is acknowledged")

    def test_oversized_payload_names_the_counted_code(self):
        """An MQTT 5 payload over limits.max_body_bytes (4 MiB): PUBACK 0x99 whose reason
        string starts with the code HTTP answers and joule_events_rejected_total counts
        (found by a black-box test: it said "body_too_large", documented nowhere)."""
        dev, token = self.register()
        before = metric_sum(self.metrics(), "joule_events_rejected_total",
                            code="payload_too_large")
        payload = json.dumps(dict(event(), pad="z" * ((4 << 20) + 1000)))
        client = RawMqtt5(mqtt_port(self.server), dev, token)
        try:
            client.publish(topic(dev), payload, 1)
            ack = client.read()
            self.assertIsNotNone(ack, "closed instead of a PUBACK" + self.diag())
            self.assertEqual(ack[0], 4, ack)
            code, reason_string = RawMqtt5.puback_reason(ack[1])
            self.assertEqual(code, 0x99)
            self.assertTrue(reason_string.startswith("payload_too_large: "), reason_string)
        finally:
            client.close()
        self.assertEqual(metric_sum(self.metrics(), "joule_events_rejected_total",
                                    code="payload_too_large") - before, 1)

    def test_subscription_identifier_from_a_client_is_refused(self):
        """Only a server may put a Subscription Identifier in a PUBLISH (MQTT-3.3.4-6):
        DISCONNECT 0x82, nothing stored (found by a black-box test: it was accepted)."""
        dev, token = self.register()
        before = metric_sum(self.metrics(), "joule_mqtt_disconnects_total",
                            reason="protocol_error")
        client = RawMqtt5(mqtt_port(self.server), dev, token)
        try:
            client.publish(topic(dev), json.dumps(event()), 1, properties=b"\x0b\x05")
            packet = client.read()
            self.assertEqual(packet, (14, b"\x82"), "DISCONNECT 0x82" + self.diag())
            self.assertIsNone(client.read(), "then closed")
        finally:
            client.close()
        self.assertEqual(metric_sum(self.metrics(), "joule_mqtt_disconnects_total",
                                    reason="protocol_error") - before, 1)
        time.sleep(0.5)  # give a wrongly accepted event the chance to show up
        self.assertEqual(realtime_count(self.server, dev, ADMIN), 0, "nothing stored")

    def test_revoked_token_stops_an_open_connection(self):
        """Rotating a device's token revokes the old one for connections already open with
        it too (docs/SECURITY.md "Revocation is immediate"; found by a black-box test: the
        open connection kept publishing)."""
        for version in ("mqttv311", "mqttv5"):
            with self.subTest(version=version):
                dev, token = self.register()
                args = [mosquitto_pub_path(), "-h", "127.0.0.1", "-p",
                        str(mqtt_port(self.server)), "-V", version, "-q", "1", "-t", topic(dev),
                        "-i", f"it-{uid()}", "-u", dev, "-P", token, "-l"]
                proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
                try:
                    proc.stdin.write(json.dumps(event()) + "\n")
                    proc.stdin.flush()
                    self.assertEqual(wait_count(self.server, dev, 1, ADMIN), 1,
                                     "published on the open connection" + self.diag())
                    denied = metric_sum(self.metrics(), "joule_mqtt_messages_total",
                                        result="not_authorized")
                    resp = self.server.request("POST", f"/v1/devices/{dev}/token",
                                               headers=ADMIN)
                    self.assertStatus(resp, (200, 201), "rotate the token")
                    proc.stdin.write(json.dumps(event(power=7.0)) + "\n")
                    proc.stdin.flush()
                    self.assertTrue(poll(lambda: metric_sum(
                        self.metrics(), "joule_mqtt_messages_total",
                        result="not_authorized") > denied, timeout=10),
                        "the publish after the rotation was refused" + self.diag())
                    time.sleep(0.5)
                    self.assertEqual(realtime_count(self.server, dev, ADMIN), 1,
                                     "nothing stored after the rotation" + self.diag())
                finally:
                    try:
                        proc.stdin.close()
                    except BrokenPipeError:
                        pass
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()

    def test_oversized_and_garbage_packets_do_not_hurt_the_server(self):
        import socket
        port = mqtt_port(self.server)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")  # not MQTT
            s.settimeout(5)
            try:
                self.assertEqual(s.recv(100), b"", "closed")
            except ConnectionResetError:
                pass
        dev, token = self.register()
        # 5 MiB payload > limits.max_body_bytes (4 MiB) + headers: refused, no crash.
        # MQTT 5 clients learn the limit from CONNACK (Maximum Packet Size) and do not send it
        # (mosquitto_pub 2.0.11 drops it silently, exit 0): no PUBLISH reaches the server.
        before = metric_sum(self.metrics(), "joule_mqtt_publishes_total")
        pub(self.server, topic(dev), b"x" * (5 << 20), "mqttv5", 1, dev, token, timeout=10)
        self.assertEqual(metric_sum(self.metrics(), "joule_mqtt_publishes_total"), before,
                         "the v5 client honoured the server's Maximum Packet Size")
        # 3.1.1 clients send it; the server closes the connection from the packet's header.
        proc = pub(self.server, topic(dev), b"x" * (5 << 20), "mqttv311", 1, dev, token,
                   timeout=10)
        m = self.metrics()
        self.assertGreaterEqual(
            metric_sum(m, "joule_mqtt_disconnects_total", reason="packet_too_large"), 1)
        self.assertTrue(proc is None or proc.returncode != 0, "oversized publish refused")
        self.assertPublished(pub(self.server, topic(dev), json.dumps(event()), "mqttv5", 1, dev,
                                 token), "the server still works")


class MqttAckMeansDurable(unittest.TestCase):
    """SIGKILL right after mosquitto_pub -q 1 returned: the event survives the restart."""

    def test_sigkill_after_puback(self):
        server = JouleServer(env=MQTT_ENV, name="mqtt-kill9")  # auth disabled: data path only
        try:
            server.start()
            dev = f"dev-{uid()}"
            events = [event(seconds_ago=20 + i) for i in range(3)]
            for version, e in zip(("mqttv311", "mqttv5", "mqttv5"), events):
                proc = pub(server, topic(dev), json.dumps(e), version, 1, dev)
                self.assertIsNotNone(proc, "mosquitto_pub timed out" + server.diag())
                self.assertEqual(proc.returncode, 0, proc.stderr + server.diag())
            server.kill9()
            server.start()
            got = wait_count(server, dev, 3, timeout=30)
            self.assertEqual(got, 3, "every acknowledged event is there after kill -9"
                             + server.diag())
        finally:
            server.cleanup()


class MqttShutdownAnswersWhatItTookIn(unittest.TestCase):
    """SIGTERM while QoS 1 publishes wait for their fdatasync (held: JOULE_TEST_HOLD=log.sync):
    the server reads nothing more, sends each of them its PUBACK once durable, then
    DISCONNECT 0x8B, and exits cleanly; the events are there after the restart. (It used to
    disconnect at once, leaving them to the client's resend.)"""

    def test_publishes_in_flight_get_their_pubacks(self):
        hold = os.path.join(tempfile.mkdtemp(prefix="joule-hold-"), "log.sync")
        server = JouleServer(env=dict(MQTT_ENV, JOULE_TEST_HOLD=f"log.sync:{hold}"),
                             name="mqtt-sigterm")
        try:
            server.start()
            dev = f"dev-{uid()}"
            client = RawMqtt5(mqtt_port(server), dev, "unused")
            open(hold, "w").close()
            for packet_id in range(1, 6):
                client.publish(topic(dev), json.dumps(event(seconds_ago=20 + packet_id)),
                               packet_id)
            self.assertTrue(poll(lambda: metric_sum(parse_prometheus(server.metrics_text()),
                                                    "joule_mqtt_publishes_total", qos="1") >= 5,
                                 timeout=10), "the publishes reached the server" + server.diag())
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            self.assertTrue(server.running(), "waits for the publishes in flight" + server.diag())
            os.unlink(hold)
            packets = []
            while (packet := client.read()) is not None:
                packets.append(packet)
            client.close()
            pubacks = [(struct.unpack(">H", body[:2])[0], RawMqtt5.puback_reason(body)[0])
                       for kind, body in packets if kind == 4]
            self.assertEqual(pubacks, [(i, 0) for i in range(1, 6)],
                             f"a PUBACK for each publish in flight: {packets!r}" + server.diag())
            self.assertEqual(packets[-1][0], 14, f"then DISCONNECT: {packets!r}")
            self.assertEqual(packets[-1][1][:1], bytes([0x8B]), "server shutting down")
            self.assertEqual(server.stop(), 0, "a clean exit" + server.diag())
            server.start()
            self.assertEqual(wait_count(server, dev, 5), 5,
                             "every acknowledged event is there after the restart" + server.diag())
        finally:
            server.cleanup()
            shutil.rmtree(os.path.dirname(hold), ignore_errors=True)

if __name__ == "__main__":
    unittest.main()
