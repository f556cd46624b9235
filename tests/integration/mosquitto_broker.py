"""A real Mosquitto broker (Debian's `mosquitto`) for the bridge tests: started on free
loopback ports with its own config file and temp dir, stopped and removed by stop()."""
import os
import shutil
import socket
import subprocess
import tempfile
import uuid

from joule_harness import metric_sum, parse_prometheus, poll


def find_program(name):
    """A program from PATH or /usr/sbin, /usr/bin (mosquitto lives in /usr/sbin)."""
    path = shutil.which(name)
    if path:
        return path
    for d in ("/usr/sbin", "/usr/bin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    raise AssertionError(f"{name} not found: install mosquitto, mosquitto-clients and openssl "
                         "(scripts/install-deps.sh --test)")


class MosquittoBroker:
    """`listeners(dir)` returns the config text of the listeners (the caller picks ports with
    free_port()); `publish_port` is the plain listener mosquitto_pub uses."""

    def __init__(self, prefix, listeners, ports, publish_port, extra_conf=""):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.ports = ports
        self.publish_port = publish_port
        conf = os.path.join(self.dir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("allow_anonymous true\nuser root\nmax_queued_messages 100000\n"
                    "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
                    + extra_conf + listeners(self.dir))
        self.log = open(os.path.join(self.dir, "mosquitto.log"), "w")
        self.proc = subprocess.Popen([find_program("mosquitto"), "-c", conf],
                                     stdout=self.log, stderr=subprocess.STDOUT)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("mosquitto exited:\n" + self.log_text())
            try:
                for port in self.ports:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        if not poll(up, timeout=10):
            raise AssertionError("mosquitto did not listen:\n" + self.log_text())

    def path(self, name):
        return os.path.join(self.dir, name)

    def log_text(self):
        self.log.flush()
        with open(self.path("mosquitto.log")) as f:
            return f.read()[-4000:]

    def publish(self, topic, lines, qos=1):
        """mosquitto_pub -l on the plain listener: one message per line, one connection."""
        proc = subprocess.run(
            [find_program("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(self.publish_port),
             "-q", str(qos), "-t", topic, "-i", f"pub-{uuid.uuid4().hex[:10]}", "-l"],
            input="".join(line + "\n" for line in lines), capture_output=True, text=True,
            timeout=120)
        if proc.returncode != 0:
            raise AssertionError(f"mosquitto_pub: {proc.stderr}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class BridgeTestMixin:
    """For a unittest.TestCase with `self.server` (a JouleServer bridged to `self.broker`),
    `self.admin` (admin headers) and `self.device_prefix`."""

    def diag(self):
        return self.server.diag() + "\n--- mosquitto ---\n" + self.broker.log_text()

    def metrics(self):
        return parse_prometheus(self.server.metrics_text())

    def bridge_connected(self):
        return metric_sum(self.metrics(), "joule_mqtt_bridge_connected") == 1

    def register(self):
        device_id = f"{self.device_prefix}-{uuid.uuid4().hex[:10]}"
        st, _, body = self.server.request(
            "POST", "/v1/devices",
            {"device_id": device_id, "owner_id": f"own-{uuid.uuid4().hex[:10]}"},
            headers=self.admin)
        self.assertEqual(st, 201, body)
        return device_id

    def count(self, device_id):
        """Events counted for the device over its last 60 windows (0 while unreadable)."""
        st, _, body = self.server.request(
            "GET", f"/v1/devices/{device_id}/metrics/realtime?windows=60", headers=self.admin)
        if st != 200 or not isinstance(body, dict):
            return 0
        return sum(int(r.get("count", 0)) for r in body.get("data", []))
