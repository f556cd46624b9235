"""Bridge mode (issue 6 point 2, docs/formats/mqtt.md section 6) against a real Mosquitto
broker (Debian's `mosquitto`, started here on a free port with its own config file and temp
dir): Joule subscribes with QoS 1 and a persistent session, and acknowledges a message to
the broker only once its events are durable.

- Events published with mosquitto_pub to the broker show up in Joule; an invalid payload
  and an unregistered device are counted (and acknowledged, so the broker drops them).
- While PostgreSQL is down, a message of a registered device the metadata cache does not
  hold stays unacknowledged and gets in once PostgreSQL is back.
- Joule is SIGKILLed while the broker streams events to it, more events are published while
  it is down, and it is restarted: the persistent session redelivers everything that was not
  acknowledged, and every event is counted exactly once (redelivered copies of events that
  were durable but not yet acknowledged are dropped by event_id).
"""
import json
import subprocess
import threading
import time
import unittest
import uuid

from joule_harness import JouleServer, fmt_ts, free_port, metric_sum, poll
from mosquitto_broker import BridgeTestMixin, MosquittoBroker, find_program
from test_outages import PrivatePostgres

ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def uid():
    return uuid.uuid4().hex[:10]


def mosquitto():
    """A broker on a free port with persistence in its temp dir (the persistent session)."""
    port = free_port()
    return MosquittoBroker(
        "joule-mosquitto-",
        lambda d: f"persistence true\npersistence_location {d}/\nlistener {port} 127.0.0.1\n",
        ports=[port], publish_port=port)


def event(seq, base, prefix):
    return json.dumps({"timestamp": fmt_ts(base + seq * 0.01),
                       "metrics": {"power_w": 100 + seq % 7}, "event_id": f"{prefix}-{seq}"})


class MqttBridge(BridgeTestMixin, unittest.TestCase):
    admin = ADMIN
    device_prefix = "br"

    def setUp(self):
        self.broker = mosquitto()
        self.client_id = f"joule-it-{uid()}"
        env = {"JOULE_INGEST_MQTT_BRIDGE_URL": f"mqtt://127.0.0.1:{self.broker.publish_port}",
               "JOULE_INGEST_MQTT_BRIDGE_CLIENT_ID": self.client_id,
               "JOULE_INGEST_MQTT_BRIDGE_TOPICS": "devices/+/telemetry, site/#",
               "JOULE_AUTH_MODE": "required", "JOULE_AUTH_ADMIN_TOKEN": ADMIN_TOKEN}
        self.server = JouleServer(env=env, name="mqtt-bridge")
        self.server.start()
        self.wait_subscribed()

    def tearDown(self):
        self.server.cleanup()
        self.broker.stop()

    def wait_subscribed(self):
        ok = poll(self.bridge_connected, timeout=20)
        self.assertTrue(ok, "the bridge connects and subscribes" + self.diag())

    def wait_count(self, device_id, want, timeout=60):
        poll(lambda: self.count(device_id) >= want, timeout=timeout, interval=0.2)
        return self.count(device_id)

    def test_events_from_the_broker_are_ingested_and_bad_ones_counted(self):
        dev = self.register()
        base = time.time() - 120
        m0 = self.metrics()
        self.broker.publish(f"devices/{dev}/telemetry", [event(i, base, "a") for i in range(3)])
        # Another topic: the payload names the device.
        self.broker.publish("site/gateway-1", [json.dumps(
            {"device_id": dev, "timestamp": fmt_ts(base + 1), "metrics": {"power_w": 5},
             "event_id": "b-0"})])
        self.broker.publish(f"devices/{dev}/telemetry", ["{not json"])
        self.broker.publish(f"devices/unregistered-{uid()}/telemetry", [event(0, base, "c")])
        self.assertEqual(self.wait_count(dev, 4), 4, "four events ingested" + self.diag())

        def counted():
            m = self.metrics()
            return (metric_sum(m, "joule_mqtt_bridge_messages_total", result="invalid_payload")
                    - metric_sum(m0, "joule_mqtt_bridge_messages_total",
                                 result="invalid_payload") >= 1 and
                    metric_sum(m, "joule_mqtt_bridge_messages_total", result="unknown_device")
                    - metric_sum(m0, "joule_mqtt_bridge_messages_total",
                                 result="unknown_device") >= 1)
        self.assertTrue(poll(counted, timeout=10), "bad messages counted" + self.diag())
        m1 = self.metrics()
        self.assertEqual(
            metric_sum(m1, "joule_mqtt_bridge_messages_total", result="accepted") -
            metric_sum(m0, "joule_mqtt_bridge_messages_total", result="accepted"), 4)
        self.assertGreaterEqual(metric_sum(m1, "joule_mqtt_bridge_publishes_total", qos="1"), 6)
        self.assertGreaterEqual(
            metric_sum(m1, "joule_mqtt_bridge_ack_latency_seconds_count"), 6)

    def test_an_oversized_message_is_skipped_and_acknowledged(self):
        """Found by a black-box test: a PUBLISH over the bridge's packet limit (here 5 MiB,
        the limit is limits.max_body_bytes + 64 KiB) ended the connection; the broker
        redelivered it on every reconnect and nothing else got in, for every device. Now its
        payload is skipped unbuffered and it is acknowledged and counted like a payload over
        limits.max_body_bytes: the next message gets in, on the same connection."""
        big_dev, dev = self.register(), self.register()
        base = time.time() - 120
        m0 = self.metrics()
        one = event(0, base, "big")
        big = "[" + ",".join([one] * (5 * 1024 * 1024 // (len(one) + 1) + 1)) + "]"  # > 5 MiB
        proc = subprocess.run(
            [find_program("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(self.broker.publish_port),
             "-q", "1", "-t", f"devices/{big_dev}/telemetry", "-i", f"pub-{uid()}", "-s"],
            input=big, capture_output=True, text=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.broker.publish(f"devices/{dev}/telemetry", [event(0, base, "small")])
        self.assertEqual(self.wait_count(dev, 1, timeout=30), 1,
                         "the small message after the big one is ingested" + self.diag())
        m = self.metrics()

        def delta(name, **labels):
            return metric_sum(m, name, **labels) - metric_sum(m0, name, **labels)
        self.assertEqual(delta("joule_mqtt_bridge_messages_total", result="invalid_payload"), 1)
        self.assertEqual(delta("joule_events_rejected_total", code="payload_too_large"), 1)
        self.assertEqual(delta("joule_mqtt_bridge_messages_total", result="accepted"), 1)
        self.assertEqual(metric_sum(m, "joule_mqtt_bridge_connects_total", result="failed"), 0,
                         self.diag())
        self.assertEqual(metric_sum(m, "joule_mqtt_bridge_connects_total", result="ok"), 1,
                         "the bridge stayed connected" + self.diag())
        self.assertEqual(self.count(big_dev), 0)
        self.assertTrue(self.server.logged("message larger than the maximum packet size skipped",
                                           f"devices/{big_dev}/telemetry"), self.diag())
        # Acknowledged: not redelivered after a reconnect (the persistent session is empty).
        self.server.stop()
        self.server.start()
        self.wait_subscribed()
        self.broker.publish(f"devices/{dev}/telemetry", [event(1, base, "small")])
        self.assertEqual(self.wait_count(dev, 2, timeout=30), 2, self.diag())
        m = self.metrics()
        self.assertEqual(metric_sum(m, "joule_mqtt_bridge_messages_total",
                                    result="invalid_payload"), 0, "no redelivery" + self.diag())

    def test_sigkill_mid_stream_then_restart_loses_nothing(self):
        dev = self.register()
        base = time.time() - 600
        first, second = 20000, 1000
        topic = f"devices/{dev}/telemetry"
        pub = subprocess.Popen(
            [find_program("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(self.broker.publish_port),
             "-q", "1", "-t", topic, "-i", f"pub-{uid()}", "-l"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        feeder = threading.Thread(target=pub.communicate, daemon=True,
                                  args=("".join(event(i, base, "k") + "\n"
                                                for i in range(first)),))
        feeder.start()
        # Kill Joule while the broker is delivering to it.
        self.assertTrue(poll(lambda: metric_sum(self.metrics(), "joule_mqtt_bridge_messages_total",
                                                result="accepted") >= 500,
                             timeout=60, interval=0.02), "the bridge ingests" + self.diag())
        self.server.kill9()
        feeder.join(120)
        self.assertEqual(pub.returncode, 0, "mosquitto_pub failed")
        # Published while Joule is down: the broker queues them for the persistent session.
        self.broker.publish(topic, [event(i, base, "k") for i in range(first, first + second)])
        self.server.start()
        self.wait_subscribed()
        got = self.wait_count(dev, first + second, timeout=120)
        acked_before = first + second - metric_sum(
            self.metrics(), "joule_mqtt_bridge_messages_total", result="accepted")
        print(f"\nbridge: {got} of {first + second} events counted after the restart; "
              f"at most {acked_before:.0f} were acknowledged before the kill", flush=True)
        self.assertEqual(got, first + second, "every event exactly once" + self.diag())
        self.assertLess(acked_before, first, "the kill came mid-stream")


class MqttBridgeMetadataOutage(BridgeTestMixin, unittest.TestCase):
    """Found while checking the outage paths of a black-box report: with PostgreSQL down,
    the events of a registered device the metadata cache did not hold were acknowledged to
    the broker and dropped as `unknown_device`. Now such a message is left unacknowledged
    (`{result="unavailable"}`) and handed over again until PostgreSQL answers: none is
    lost."""

    admin = ADMIN
    device_prefix = "pgo"
    wait_subscribed = MqttBridge.wait_subscribed
    wait_count = MqttBridge.wait_count

    def setUp(self):
        self.pg = PrivatePostgres()
        self.addCleanup(self.pg.cleanup)
        self.broker = mosquitto()
        self.addCleanup(self.broker.stop)
        env = {"JOULE_INGEST_MQTT_BRIDGE_URL": f"mqtt://127.0.0.1:{self.broker.publish_port}",
               "JOULE_INGEST_MQTT_BRIDGE_CLIENT_ID": f"joule-it-{uid()}",
               "JOULE_INGEST_MQTT_BRIDGE_TOPICS": "devices/+/telemetry",
               "JOULE_AUTH_MODE": "required", "JOULE_AUTH_ADMIN_TOKEN": ADMIN_TOKEN,
               "JOULE_METADATA_BACKEND": "postgres", "JOULE_METADATA_URL": self.pg.url}
        self.server = JouleServer(env=env, name="mqtt-bridge-pg")
        self.addCleanup(self.server.cleanup)
        self.server.start()

    def test_unverifiable_device_waits_for_the_metadata_store(self):
        dev = self.register()
        self.server.kill9()
        self.server.start()  # an empty metadata cache
        self.wait_subscribed()
        self.pg.stop()
        base = time.time() - 120
        self.broker.publish(f"devices/{dev}/telemetry", [event(i, base, "o") for i in range(3)])
        self.assertTrue(poll(lambda: metric_sum(self.metrics(), "joule_mqtt_bridge_messages_total",
                                                result="unavailable") > 0, timeout=20),
                        "the bridge could not check the device" + self.diag())
        m = self.metrics()
        self.assertEqual(metric_sum(m, "joule_mqtt_bridge_messages_total",
                                    result="unknown_device"), 0, self.diag())
        self.assertEqual(metric_sum(m, "joule_events_accepted_total"), 0)
        self.pg.start()
        self.assertEqual(self.wait_count(dev, 3, timeout=90), 3, "every event" + self.diag())


class MqttBridgeBackpressure(BridgeTestMixin, unittest.TestCase):
    """Found by a black-box test: under lasting log backpressure the bridge dropped the
    connection at the first refused message, which also dropped the PUBACKs of the stored
    messages before it; the broker redelivered the same messages for ever and nothing new
    got in. Now a refused message is handed over again after a pause (reading paused
    meanwhile), on the same connection: every message gets in, once."""

    def setUp(self):
        self.broker = mosquitto()
        self.client_id = f"joule-it-{uid()}"
        env = {"JOULE_INGEST_MQTT_BRIDGE_URL": f"mqtt://127.0.0.1:{self.broker.publish_port}",
               "JOULE_INGEST_MQTT_BRIDGE_CLIENT_ID": self.client_id,
               "JOULE_INGEST_MQTT_BRIDGE_TOPICS": "devices/+/telemetry",
               "JOULE_AUTH_MODE": "required", "JOULE_AUTH_ADMIN_TOKEN": ADMIN_TOKEN,
               # a log that takes a few messages per round: most arrivals are refused
               "JOULE_STORAGE_LOG_MAX_PENDING_BYTES": "4096",
               "JOULE_STORAGE_LOG_GROUP_COMMIT_WINDOW": "100ms"}
        self.server = JouleServer(env=env, name="mqtt-bridge-bp")
        self.server.start()
        self.wait_subscribed()

    admin = ADMIN
    device_prefix = "bp"
    tearDown = MqttBridge.tearDown
    wait_subscribed = MqttBridge.wait_subscribed
    wait_count = MqttBridge.wait_count

    def test_backpressure_delays_and_loses_nothing(self):
        dev = self.register()
        base = time.time() - 300
        n = 150

        def ev(i):
            return json.dumps({"timestamp": fmt_ts(base + i * 0.1), "metrics": {"power_w": 1.0},
                               "meta": {"pad": "z" * 300}, "event_id": f"bp-{i}"})
        self.broker.publish(f"devices/{dev}/telemetry", [ev(i) for i in range(n)])
        self.assertEqual(self.wait_count(dev, n, timeout=90), n, "every message" + self.diag())
        m = self.metrics()
        self.assertGreater(metric_sum(m, "joule_mqtt_bridge_messages_total",
                                      result="unavailable"), 0, "the log did refuse")
        self.assertEqual(metric_sum(m, "joule_mqtt_bridge_connects_total", result="ok"), 1,
                         "no reconnection" + self.diag())
        self.assertEqual(metric_sum(m, "joule_events_duplicate_total"), 0)



class MqttBridgeRateLimit(BridgeTestMixin, unittest.TestCase):
    """limits.device_events_per_second is not applied to the bridge (docs/formats/mqtt.md
    section 6, SECURITY.md "Limits"): its broker is trusted, and a refusal could only make it
    redeliver. Pinned here, against HTTP with the admin token, which is limited."""

    admin = ADMIN
    device_prefix = "rl"
    tearDown = MqttBridge.tearDown
    wait_subscribed = MqttBridge.wait_subscribed
    wait_count = MqttBridge.wait_count

    def setUp(self):
        self.broker = mosquitto()
        env = {"JOULE_INGEST_MQTT_BRIDGE_URL": f"mqtt://127.0.0.1:{self.broker.publish_port}",
               "JOULE_INGEST_MQTT_BRIDGE_CLIENT_ID": f"joule-it-{uid()}",
               "JOULE_AUTH_MODE": "required", "JOULE_AUTH_ADMIN_TOKEN": ADMIN_TOKEN,
               "JOULE_LIMITS_DEVICE_EVENTS_PER_SECOND": "10"}  # burst 20
        self.server = JouleServer(env=env, name="mqtt-bridge-rl")
        self.server.start()
        self.wait_subscribed()

    def test_the_event_rate_limit_does_not_apply_to_the_bridge(self):
        dev = self.register()
        base = time.time() - 120
        n = 200
        self.broker.publish(f"devices/{dev}/telemetry",
                            ["[" + ",".join(event(i * 10 + j, base, "rl") for j in range(10)) + "]"
                             for i in range(n // 10)])
        self.assertEqual(self.wait_count(dev, n, timeout=30), n, "every event" + self.diag())
        self.assertEqual(metric_sum(self.metrics(), "joule_rate_limited_total", kind="events"), 0)
        # The same device over HTTP with the admin token is limited.
        limited = False
        for i in range(5):
            st, _, _ = self.server.request(
                "POST", "/v1/telemetry",
                [dict(json.loads(event(1000 + i * 10 + j, base, "h")), device_id=dev)
                 for j in range(10)], headers=ADMIN)
            limited = limited or st == 429
        self.assertTrue(limited, "HTTP is limited" + self.diag())
        self.assertGreater(metric_sum(self.metrics(), "joule_rate_limited_total", kind="events"), 0)

if __name__ == "__main__":
    unittest.main()
