"""The HTTP listener over real loopback sockets (http.client, urllib), against a
whole MailServer.

The catalog of caught mail and the faults are the fakes of tests/http_fakes.py, put in
the place of the server's own (``backend.caught``, ``backend.faults``, where the test
server keeps them) for the test and put back before the server stops: this tests the
HTTP side against the contracts; tests/test_interop_http.py sends real mail through
the real catalog.  Messages are added on the loop thread, as the real catalog reports
them.
"""

import base64
import http.client
import json
import re
import socket
import threading
import urllib.error
import urllib.request
from unittest import mock

from protocols.config import Config
from tests.helpers import ServerTestCase, wait_for
from tests.http_fakes import MULTI, PLAIN, FakeCaught, FakeFaults


def on_loop(server, fn):
    """Run ``fn()`` on the server's loop thread and return its result."""
    box, done = [], threading.Event()
    server.loop.call_soon_threadsafe(lambda: (box.append(fn()), done.set()))
    assert done.wait(10), "the loop did not run the call"
    return box[0]


class HttpServerCase(ServerTestCase):
    tls = False
    catch_all = True
    extra_config = {"http_port": "0", "imap_port": "off"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        backend = cls.server.backend
        cls.own = {name: getattr(backend, name, None) for name in ("caught", "faults")}
        backend.caught, backend.faults = FakeCaught(), FakeFaults()
        cls.server.config.catch_all = cls.catch_all

    @classmethod
    def tearDownClass(cls):
        for name, value in cls.own.items():
            setattr(cls.server.backend, name, value)
        super().tearDownClass()

    def setUp(self):
        on_loop(self.server, lambda: self.server.backend.caught.delete_all_caught(lambda n: None))
        self.port = self.ports["http"]

    def add(self, raw, **kw):
        return on_loop(self.server, lambda: self.server.backend.caught.add(raw, **kw))

    def conn(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self.addCleanup(c.close)
        return c

    def request(self, c, method, path, body=None, headers=None):
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r, r.read()


class CatchAllHttpTest(HttpServerCase):
    def test_one_keep_alive_connection_serves_the_api(self):
        plain, multi = self.add(PLAIN), self.add(MULTI, mailbox="dave@example.net")
        c = self.conn()
        status, r, body = self.request(c, "GET", "/api/messages")
        self.assertEqual([m["id"] for m in json.loads(body)], [multi.id, plain.id])
        status, r, body = self.request(c, "GET", "/api/messages/%s" % multi.id)
        self.assertEqual(json.loads(body)["attachments"][0]["safe_filename"], "pa_ss_wd.pdf")
        status, r, body = self.request(c, "GET", "/api/messages/%s/html" % multi.id)
        self.assertTrue(r.getheader("Content-Security-Policy").startswith("sandbox; default-src 'none'"))
        status, r, body = self.request(c, "GET", "/api/messages/%s/raw" % plain.id)
        self.assertEqual(body, PLAIN)
        status, r, body = self.request(c, "DELETE", "/api/messages/%s" % plain.id)
        self.assertEqual(status, 200)
        status, r, body = self.request(c, "GET", "/api/messages")
        self.assertEqual([m["id"] for m in json.loads(body)], [multi.id])

    def test_page_and_its_security_fields(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/" % self.port, timeout=10) as r:
            page = r.read()
            self.assertIn(b"EventSource", page)
            self.assertEqual(r.headers["X-Frame-Options"], "DENY")
            self.assertIn("script-src 'sha256-", r.headers["Content-Security-Policy"])
            self.assertEqual(r.headers["X-Content-Type-Options"], "nosniff")

    def test_faults_over_http(self):
        c = self.conn()
        rule = json.dumps({"protocol": "smtp", "command": "RCPT", "code": 451}).encode()
        status, r, body = self.request(c, "POST", "/api/faults", rule, {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        rid = json.loads(body)["id"]
        status, r, body = self.request(c, "GET", "/api/faults")
        self.assertEqual([x["id"] for x in json.loads(body)], [rid])
        status, r, body = self.request(c, "POST", "/api/faults", b'{"protocol": "x"}',
                                       {"Content-Type": "application/json"})
        self.assertEqual(status, 400)
        self.assertIn("protocol", json.loads(body)["error"])
        status, r, body = self.request(c, "DELETE", "/api/faults/" + rid)
        self.assertEqual(status, 200)
        status, r, body = self.request(c, "DELETE", "/api/faults")
        self.assertEqual(status, 200)

    def test_pipelined_requests_over_a_socket(self):
        req = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(req * 3 + b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
        self.assertEqual(statuses, [b"200", b"200", b"200", b"404"])

    def test_events_arrive_as_mail_is_caught(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
            data = b""
            while b"retry:" not in data:
                data += s.recv(65536)
            self.assertIn(b"Content-Type: text/event-stream", data)
            m = self.add(PLAIN)
            while b"\n\n" not in data.split(b"retry: 3000\n\n", 1)[1]:
                data += s.recv(65536)
            event = data.split(b"retry: 3000\n\n", 1)[1]
            self.assertTrue(event.startswith(b"event: message\ndata: "))
            self.assertEqual(json.loads(event.split(b"data: ", 1)[1])["id"], m.id)
        wait_for(lambda: not self.server.backend.caught.watchers, "the closed stream to stop watching")

    def test_the_loop_sends_heartbeats_on_a_quiet_stream(self):
        with mock.patch("protocols.http.session.HEARTBEAT_S", 0.2), \
                socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            data = b""
            while data.count(b": heartbeat\n\n") < 2:
                data += s.recv(65536)
            self.assertIn(b"retry: 3000\n\n", data)

    def test_bad_request_gets_400_and_close(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n")
            data = s.recv(65536)
            self.assertTrue(data.startswith(b"HTTP/1.1 400 "))
            while s.recv(65536):
                pass        # the server closes


class LoginHttpTest(HttpServerCase):
    """Normal mode: the same login as IMAP, each user their own mailbox."""

    catch_all = False

    def open(self, path, user=None, password=None):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path))
        if user:
            token = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
            req.add_header("Authorization", "Basic " + token)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def test_basic_login_with_the_users_password(self):
        self.add(PLAIN, mailbox="bob@example.test")
        self.add(PLAIN, mailbox="alice@example.test")
        self.assertEqual(self.open("/api/messages")[0], 401)
        self.assertEqual(self.open("/api/messages", "bob@example.test", "wrong")[0], 401)
        status, body = self.open("/api/messages", "bob@example.test", "bob-secret")
        self.assertEqual(status, 200)
        self.assertEqual([m["mailbox"] for m in json.loads(body)], ["bob@example.test"])
        self.assertEqual(self.open("/api/faults", "bob@example.test", "bob-secret")[0], 403)


class HttpListenerTest(ServerTestCase):
    tls = False
    extra_config = {"listen": "127.0.0.2", "http_port": "0", "imap_port": "off"}

    def test_http_binds_http_address_not_listen(self):
        self.assertEqual([a[0] for a in self.server.addresses["http"]], ["127.0.0.1"])
        self.assertEqual(self.server.addresses["smtp"][0][0], "127.0.0.2")

    def test_off_by_default(self):
        self.assertIsNone(Config({}).http_port)
        self.assertEqual(Config({}).http_address, ["127.0.0.1"])

    def test_without_a_catalog_the_api_answers_503(self):
        own = getattr(self.server.backend, "caught", None)
        self.server.backend.caught = None
        self.addCleanup(setattr, self.server.backend, "caught", own)
        c = http.client.HTTPConnection("127.0.0.1", self.server.ports["http"], timeout=10)
        self.addCleanup(c.close)
        c.request("GET", "/api/messages", headers={
            "Authorization": "Basic " + base64.b64encode(b"bob@example.test:bob-secret").decode()})
        r = c.getresponse()
        body = r.read()
        self.assertEqual(r.status, 503)
        self.assertEqual(body.count(b"\n"), 1)
        self.assertIn("test-server", json.loads(body)["error"])
