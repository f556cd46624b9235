"""Bridge mode over TLS (mqtts://, docs/formats/mqtt.md section 6, docs/SECURITY.md) against a
real Mosquitto broker with TLS listeners. Certificates are made here with the `openssl`
command: a test CA signs the broker's certificate (SAN IP:127.0.0.1, DNS:localhost) and a
client certificate; a second, unrelated CA plays the wrong trust anchor.

The broker has three listeners on 127.0.0.1: plain MQTT (the test publishes there), TLS with
`require_certificate true` (mutual TLS, as AWS IoT Core) and TLS without client certificates.

- mutual TLS by IP address: events published to the broker arrive in Joule;
- server-only TLS by host name (`localhost`: SNI + DNS name check): events arrive;
- a bridge trusting another CA never connects (TLS handshake failures counted, the reason
  logged) and ingests nothing;
- a bridge without a client certificate on the mutual-TLS listener never subscribes.
"""
import json
import os
import subprocess
import time
import unittest
import uuid

from joule_harness import JouleServer, fmt_ts, free_port, metric_sum, poll
from mosquitto_broker import BridgeTestMixin, MosquittoBroker, find_program

ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def uid():
    return uuid.uuid4().hex[:10]


def openssl(*args, cwd):
    proc = subprocess.run([find_program("openssl"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)}: {proc.stderr}")


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
            "-subj", f"/CN=Joule test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_leaf(d, name, ca, extensions):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(extensions)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-sha256",
            "-extfile", f"{name}.ext", cwd=d)


def tls_mosquitto():
    """Three listeners: plain (the test publishes there), mutual TLS, server-only TLS."""
    plain, mtls, tls_port = free_port(), free_port(), free_port()

    def listeners(d):
        make_ca(d, "ca")
        make_ca(d, "other-ca")
        make_leaf(d, "server", "ca", "basicConstraints=CA:FALSE\n"
                  "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        make_leaf(d, "client", "ca", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
        tls = (f"cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n"
               "tls_version tlsv1.2\n")
        return (f"listener {plain} 127.0.0.1\n"
                f"listener {mtls} 127.0.0.1\n{tls}"
                "require_certificate true\nuse_identity_as_username false\n"
                f"listener {tls_port} 127.0.0.1\n{tls}"
                "require_certificate false\n")
    broker = MosquittoBroker("joule-mosquitto-tls-", listeners, ports=[plain, mtls, tls_port],
                             publish_port=plain)
    broker.mtls_port, broker.tls_port = mtls, tls_port
    return broker


def event(seq, base, prefix):
    return json.dumps({"timestamp": fmt_ts(base + seq * 0.01),
                       "metrics": {"power_w": 100 + seq % 7}, "event_id": f"{prefix}-{seq}"})


class MqttBridgeTls(BridgeTestMixin, unittest.TestCase):
    admin = ADMIN
    device_prefix = "tls"

    @classmethod
    def setUpClass(cls):
        cls.broker = tls_mosquitto()

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()

    def setUp(self):
        self.server = None

    def tearDown(self):
        if self.server is not None:
            self.server.cleanup()

    def start(self, url, **tls):
        env = {"JOULE_INGEST_MQTT_BRIDGE_URL": url,
               "JOULE_INGEST_MQTT_BRIDGE_CLIENT_ID": f"joule-tls-{uid()}",
               "JOULE_INGEST_MQTT_BRIDGE_TOPICS": "devices/+/telemetry",
               "JOULE_AUTH_MODE": "required", "JOULE_AUTH_ADMIN_TOKEN": ADMIN_TOKEN}
        for key, name in tls.items():
            env[f"JOULE_INGEST_MQTT_BRIDGE_{key.upper()}"] = self.broker.path(name)
        self.server = JouleServer(env=env, name="mqtt-bridge-tls")
        self.server.start()

    def assert_bridges(self):
        ok = poll(self.bridge_connected, timeout=20)
        self.assertTrue(ok, "the bridge connects over TLS and subscribes" + self.diag())
        dev = self.register()
        base = time.time() - 60
        self.broker.publish(f"devices/{dev}/telemetry", [event(i, base, "t") for i in range(5)])
        poll(lambda: self.count(dev) >= 5, timeout=30, interval=0.2)
        self.assertEqual(self.count(dev), 5, "events published to the broker arrive" + self.diag())
        m = self.metrics()
        self.assertEqual(metric_sum(m, "joule_mqtt_bridge_messages_total", result="accepted"), 5)
        self.assertEqual(metric_sum(m, "joule_mqtt_bridge_tls_handshake_failures_total"), 0)

    def test_mutual_tls_by_ip_address(self):
        self.start(f"mqtts://127.0.0.1:{self.broker.mtls_port}", ca_file="ca.pem",
                   cert_file="client.pem", key_file="client.key")
        self.assert_bridges()

    def test_server_tls_by_host_name(self):
        self.start(f"mqtts://localhost:{self.broker.tls_port}", ca_file="ca.pem")
        self.assert_bridges()

    def assert_never_subscribes(self, failures_metric):
        def failed_twice():
            return metric_sum(self.metrics(), failures_metric, **(
                {"result": "failed"} if failures_metric.endswith("connects_total") else {})) >= 2
        self.assertTrue(poll(failed_twice, timeout=20), "attempts fail" + self.diag())
        dev = self.register()
        self.broker.publish(f"devices/{dev}/telemetry", [event(0, time.time() - 60, "w")])
        before = metric_sum(self.metrics(), failures_metric)
        # A later attempt fails too, after the publish was queued for that session.
        self.assertTrue(poll(lambda: metric_sum(self.metrics(), failures_metric) > before,
                             timeout=20), "attempts keep failing" + self.diag())
        m = self.metrics()
        self.assertEqual(metric_sum(m, "joule_mqtt_bridge_connected"), 0)
        self.assertEqual(metric_sum(m, "joule_mqtt_bridge_connects_total", result="ok"), 0)
        self.assertEqual(metric_sum(m, "joule_mqtt_bridge_publishes_total"), 0)
        self.assertEqual(self.count(dev), 0, "no events")

    def test_wrong_ca_does_not_connect(self):
        self.start(f"mqtts://127.0.0.1:{self.broker.mtls_port}", ca_file="other-ca.pem",
                   cert_file="client.pem", key_file="client.key")
        self.assert_never_subscribes("joule_mqtt_bridge_tls_handshake_failures_total")
        self.assertTrue(any("certificate verify failed" in line or
                            "unable to get local issuer certificate" in line
                            for line in self.server.log_lines()),
                        "the reason is logged" + self.diag())

    def test_no_client_certificate_on_mutual_tls_listener(self):
        self.start(f"mqtts://127.0.0.1:{self.broker.mtls_port}", ca_file="ca.pem")
        # TLS 1.3 clients learn that the broker refused them only after their handshake
        # completed, so the failure may show as a read error, not as a handshake failure.
        self.assert_never_subscribes("joule_mqtt_bridge_connects_total")


if __name__ == "__main__":
    unittest.main()
