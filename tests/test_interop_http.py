"""The web page in a real browser (Debian's ``chromium --headless``) and the JSON API
driven by ``curl``.

* The page, loaded after a message was sent (swaks if installed, else smtplib), lists
  it in the DOM (``--dump-dom`` once the budget of virtual time is spent: the page
  fetches the list at once and opens its event stream only a moment later).
* A caught HTML part carrying ``<script>`` and a remote image does nothing: its script
  would set a marker in the title and fetch a URL from a listener this test runs; the
  listener sees no connection and the title is unchanged.  A control run loads the
  same HTML as a plain file and the listener does see the fetch, so the check can fail.
* curl lists, gets, deletes messages and sets and clears faults.
* A screenshot of the page (1200x800) goes to a temporary directory, and to
  tests/screenshots/test-server.png (shown in the README) when
  MAILSRV_UPDATE_SCREENSHOT=1.

With the catch-all catalog (config key ``catch_all``, protocols/backend/caught.py)
the mail goes through SMTP; without it the catalog is tests/http_fakes.py's and
messages are put in directly.  Every test is skipped when its tool is missing
(``apt-get install chromium swaks curl``) or when MAILSRV_SKIP_INTEROP is set; every
subprocess is bounded by a timeout.
"""

import json
import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from protocols.config import KEYS
from tests.helpers import ServerTestCase, wait_for
from tests.http_fakes import FakeCaught, FakeFaults
from tests.test_http_server import on_loop

SKIP = bool(os.environ.get("MAILSRV_SKIP_INTEROP"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REAL_CATALOG = "catch_all" in KEYS
TIMEOUT = 60
HERE = os.path.dirname(os.path.abspath(__file__))
SCREENSHOT = os.path.join(HERE, "screenshots", "test-server.png")


def evil_html(port: int) -> bytes:
    """An HTML part that, if its script ran, would mark the title and call home."""
    return (b"<html><body><p>Click <b>here</b></p>"
            b"<img src=\"http://127.0.0.1:%d/remote-image\">"
            b"<script>top.document.title='SCRIPT-RAN'; document.title='SCRIPT-RAN';"
            b"fetch('http://127.0.0.1:%d/script-ran');</script></body></html>" % (port, port))


def message(subject: str, html: bytes = b"", to: str = "bob@example.org") -> bytes:
    head = (b"From: Shop <shop@example.com>\r\nTo: %s\r\nSubject: %s\r\n"
            b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n" % (to.encode(), subject.encode()))
    if not html:
        return head + b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello Bob, your order shipped.\r\n"
    return (head + b"Content-Type: multipart/alternative; boundary=B\r\n\r\n--B\r\n"
            b"Content-Type: text/plain\r\n\r\nplain version\r\n--B\r\nContent-Type: text/html\r\n\r\n"
            + html + b"\r\n--B--\r\n")


class Marker:
    """A loopback listener that records every connection (a request a script made)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hits = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.hits.append(conn.recv(4096).split(b"\r\n", 1)[0])
                    conn.sendall(b"HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: *\r\n\r\n")
                except OSError:
                    pass

    def close(self):
        self._stop = True
        self._thread.join(5)
        self.sock.close()


def chromium(*args) -> str:
    """Run headless chromium; its stdout (the DOM for --dump-dom)."""
    # --no-sandbox: as root Chromium refuses to start its own process sandbox; it is the
    # browser's sandbox only -- the page's <iframe sandbox> and the CSP sandbox still apply.
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--user-data-dir=" + tempfile.mkdtemp(prefix="mailsrv-chromium-")] + list(args)
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT)
    finally:
        shutil.rmtree(cmd[5].split("=", 1)[1], ignore_errors=True)
    return proc.stdout.decode("utf-8", "replace")


@unittest.skipIf(SKIP, "MAILSRV_SKIP_INTEROP is set")
class HttpInteropCase(ServerTestCase):
    tls = False
    extra_config = dict({"http_port": "0", "imap_port": "off"}, **({"catch_all": "yes"} if REAL_CATALOG else {}))

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        backend = cls.server.backend
        if getattr(backend, "caught", None) is None:
            backend.caught = FakeCaught()
        if getattr(backend, "faults", None) is None:
            backend.faults = FakeFaults()
        cls.server.config.catch_all = True
        cls.base = "http://127.0.0.1:%d" % cls.ports["http"]

    def setUp(self):
        on_loop(self.server, lambda: self.server.backend.caught.delete_all_caught(lambda n: None))

    def api(self, path):
        import urllib.request
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            return json.loads(r.read())

    def send(self, raw: bytes, to="bob@example.org") -> str:
        """Deliver ``raw`` and return its id in the catalog."""
        if not REAL_CATALOG:
            return on_loop(self.server, lambda: self.server.backend.caught.add(raw, mailbox=to)).id
        subject = raw.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
        if shutil.which("swaks"):
            with tempfile.NamedTemporaryFile(suffix=".eml") as f:
                f.write(raw)
                f.flush()
                subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(self.ports["smtp"]),
                                "--from", "shop@example.com", "--to", to, "--data", "@" + f.name],
                               capture_output=True, timeout=TIMEOUT, check=True)
        else:
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=TIMEOUT) as s:
                s.sendmail("shop@example.com", [to], raw)
        found = []
        wait_for(lambda: found.extend(m["id"] for m in self.api("/api/messages") if m["subject"] == subject)
                 or found, "the message in the catalog")
        return found[0]


@unittest.skipIf(CHROMIUM is None, "chromium is missing (apt-get install chromium)")
class BrowserTest(HttpInteropCase):
    def dump(self, fragment=""):
        return chromium("--virtual-time-budget=700", "--dump-dom", self.base + "/" + fragment)

    def test_page_lists_a_message_sent_a_moment_before(self):
        self.send(message("Your order 4711 shipped"))
        self.send(message("<img src=x onerror=document.title='MARKUP-RAN'>"))
        dom = self.dump()
        self.assertIn("Your order 4711 shipped", dom)
        self.assertIn("Shop &lt;shop@example.com&gt;", dom)   # text, escaped by textContent
        self.assertIn("&lt;img src=x onerror=", dom)         # a subject is never markup
        self.assertNotIn("<title>MARKUP-RAN", dom)
        self.assertIn('data-loaded="2"', dom)

    def test_no_script_runs_from_a_caught_html_part(self):
        marker = Marker()
        self.addCleanup(marker.close)
        html = evil_html(marker.port)
        mid = self.send(message("Special offer", html))
        dom = self.dump("#/message/" + mid)
        self.assertIn('id="v-html" sandbox=""', dom)
        self.assertIn('src="/api/messages/%s/html"' % mid, dom)
        self.assertNotIn("allow-scripts", dom)
        self.assertIn("<title>mailsrv: caught mail</title>", dom)
        self.assertNotIn("<title>SCRIPT-RAN", dom)
        time.sleep(0.5)      # a straggling request, had one been made, arrives within this
        self.assertEqual(marker.hits, [])
        # control: the same HTML opened as a plain file does run and call home
        with tempfile.NamedTemporaryFile(suffix=".html") as f:
            f.write(html)
            f.flush()
            chromium("--virtual-time-budget=700", "--dump-dom", "file://" + f.name)
        wait_for(lambda: marker.hits, "the control run's request")
        self.assertTrue(any(b"/script-ran" in h or b"/remote-image" in h for h in marker.hits), marker.hits)

    def test_screenshot(self):
        self.send(message("Welcome to Example Shop"))
        self.send(message("Password reset", to="alice@example.org"), to="alice@example.org")
        mid = self.send(message("Your invoice", b"<h1>Invoice</h1><p>Total: <b>42 EUR</b></p>"))
        out = tempfile.mkdtemp(prefix="mailsrv-shot-")
        self.addCleanup(shutil.rmtree, out, True)
        path = os.path.join(out, "test-server.png")
        chromium("--virtual-time-budget=700", "--window-size=1200,800", "--hide-scrollbars",
                 "--screenshot=" + path, self.base + "/#/message/" + mid)
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        if os.environ.get("MAILSRV_UPDATE_SCREENSHOT"):
            os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
            shutil.copyfile(path, SCREENSHOT)


@unittest.skipIf(shutil.which("curl") is None, "curl is missing (apt-get install curl)")
class CurlTest(HttpInteropCase):
    def curl(self, *args):
        proc = subprocess.run(["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}"] + list(args),
                              capture_output=True, timeout=TIMEOUT)
        body, _, code = proc.stdout.decode().rpartition("\n")
        return int(code), json.loads(body) if body.strip() else None

    def test_curl_drives_the_api(self):
        mid = self.send(message("Hello from curl"))
        code, listed = self.curl(self.base + "/api/messages?subject=curl")
        self.assertEqual((code, [m["id"] for m in listed]), (200, [mid]))
        code, one = self.curl(self.base + "/api/messages/" + mid)
        self.assertEqual((code, one["text"].strip()), (200, "Hello Bob, your order shipped."))
        code, rule = self.curl("-X", "POST", "-H", "Content-Type: application/json",
                               "--data", '{"protocol": "smtp", "command": "RCPT", "action": "fail", "code": 451}',
                               self.base + "/api/faults")
        self.assertEqual(code, 200, rule)
        code, rules = self.curl(self.base + "/api/faults")
        self.assertEqual([r["id"] for r in rules], [rule["id"]])
        code, bad = self.curl("-X", "POST", "-H", "Content-Type: application/json",
                              "--data", '{"protocol": "gopher"}', self.base + "/api/faults")
        self.assertEqual(code, 400)
        self.assertEqual(list(bad), ["error"])
        self.assertEqual(self.curl("-X", "DELETE", self.base + "/api/faults/" + rule["id"])[0], 200)
        self.assertEqual(self.curl("-X", "DELETE", self.base + "/api/faults")[0], 200)
        self.assertEqual(self.curl("-X", "DELETE", self.base + "/api/messages/" + mid)[0], 200)
        self.assertEqual(self.curl(self.base + "/api/messages/" + mid)[0], 404)
        self.send(message("one more"))
        code, deleted = self.curl("-X", "DELETE", self.base + "/api/messages")
        self.assertEqual((code, deleted), (200, {"deleted": 1}))
