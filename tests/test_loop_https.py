"""protocols/loop_https.py: the blocking HTTP(S) client run on workers (MTA-STS, ACME)."""

import http.server
import ssl
import threading
import time
import unittest

from protocols import loop_https
from protocols.selfsigned import self_signed


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/big":
            body = b"x" * 5000
        else:
            body = ("path=%s host=%s" % (self.path, self.headers.get("Host"))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Twice", "a")
        self.send_header("X-Twice", "b")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)[::-1]
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class HttpsClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cert, key = self_signed("mta-sts.example.org", None, time.time, key_type="ed25519")
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cls.cert, key)
        cls.server.socket = ctx.wrap_socket(cls.server.socket, server_side=True)
        cls.port = cls.server.server_address[1]
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def url(self, path):
        return "https://mta-sts.example.org:%d%s" % (self.port, path)

    def test_get_through_connect_to_with_the_names_certificate(self):
        reply = loop_https.request(self.url("/.well-known/mta-sts.txt"), cafile=self.cert,
                                   connect_to=("127.0.0.1", self.port), timeout=10)
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.body, b"path=/.well-known/mta-sts.txt host=mta-sts.example.org:%d" % self.port)
        self.assertEqual(reply.headers["x-twice"], "a, b")

    def test_post_body(self):
        reply = loop_https.request(self.url("/new"), "POST", b"abc", {"Content-Type": "application/jose+json"},
                                   cafile=self.cert, connect_to=("127.0.0.1", self.port), timeout=10)
        self.assertEqual((reply.status, reply.body), (201, b"cba"))

    def test_untrusted_certificate_is_one_line_naming_the_url(self):
        with self.assertRaises(loop_https.HttpsError) as cm:
            loop_https.request(self.url("/"), connect_to=("127.0.0.1", self.port), timeout=10)
        self.assertIn(self.url("/"), str(cm.exception))
        self.assertIn("certificate", str(cm.exception))
        self.assertNotIn("\n", str(cm.exception))

    def test_wrong_host_name_is_refused(self):
        url = "https://other.example.org:%d/" % self.port
        with self.assertRaises(loop_https.HttpsError):
            loop_https.request(url, cafile=self.cert, connect_to=("127.0.0.1", self.port), timeout=10)

    def test_body_over_the_limit(self):
        with self.assertRaises(loop_https.HttpsError) as cm:
            loop_https.request(self.url("/big"), cafile=self.cert, connect_to=("127.0.0.1", self.port),
                               timeout=10, max_body=4096)
        self.assertIn("limit", str(cm.exception))

    def test_not_a_url(self):
        with self.assertRaises(loop_https.HttpsError):
            loop_https.request("ftp://x/")

    def test_refused_connection(self):
        with self.assertRaises(loop_https.HttpsError):
            loop_https.request("http://127.0.0.1:1/", timeout=5)


if __name__ == "__main__":
    unittest.main()
