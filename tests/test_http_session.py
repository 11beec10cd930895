"""HttpSession (protocols/http/session.py) fed bytes: no sockets, no disk.

Each request block is fed whole, one byte at a time and split at random points, and
the answer must be the same octets each way (the clock is fixed, so ``Date`` is too).
The catalog and the faults are the fakes of tests/http_fakes.py (the contracts of
protocols/backend/contracts.py).
"""

import base64
import json
import random
import unittest

from protocols.base import SessionContext
from protocols.http import page
from protocols.http.parse import MAX_BODY, MAX_HEADER_FIELDS, MAX_REQUEST_LINE
from protocols.http.response import SANDBOX_CSP
from protocols.http.session import HEARTBEAT_S, HttpConfig, HttpSession
from tests.http_fakes import MULTI, PLAIN, FakeCaught, FakeFaults, FakeService

CLOCK = 1796000000.0
DATE = "Mon, 30 Nov 2026 00:53:20 GMT"
SECURITY = ("content-security-policy", "x-content-type-options", "referrer-policy", "x-frame-options")


def get(path, *headers, method="GET", version="HTTP/1.1", body=b""):
    lines = ["%s %s %s" % (method, path, version), "Host: 127.0.0.1"] + list(headers)
    if body:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_responses(data: bytes):
    """[(status, {lower name: value}, body)] from the octets a session sent."""
    out = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, head
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(": ")
            headers[k.lower()] = v
        if "content-length" in headers:
            n = int(headers["content-length"])
            body, data = data[:n], data[n:]
        else:
            body, data = data, b""
        out.append((status, headers, body))
    return out


class FakesFollowTheContractsTest(unittest.TestCase):
    def test_fakes_have_every_method_of_the_contracts_with_its_parameters(self):
        import inspect
        from protocols.backend import contracts
        for contract, fake in ((contracts.CaughtMail, FakeCaught), (contracts.FaultControl, FakeFaults)):
            for name, fn in vars(contract).items():
                if name.startswith("_") or not callable(fn):
                    continue
                self.assertEqual(list(inspect.signature(getattr(fake, name)).parameters),
                                 list(inspect.signature(fn).parameters), (fake.__name__, name))


class HttpSessionCase(unittest.TestCase):
    def setUp(self):
        self.caught = FakeCaught()
        self.faults = FakeFaults()
        self.plain = self.caught.add(PLAIN, tls=True, auth_user="alice@example.org", helo="client.test",
                                     peer_ip="127.0.0.1", listener="submission")
        self.multi = self.caught.add(MULTI, mailbox="dave@example.net", mail_from="carol@example.org",
                                     rcpt_to=("dave@example.net",))
        self.service = FakeService(self.caught, self.faults, users={"bob@example.org": "pw"})
        self.config = HttpConfig(require_login=False)
        self.peer = ("127.0.0.1", 40000)

    def session(self, config=None, service=None, head=None):
        ctx = SessionContext(peer=self.peer, listener="http", clock=lambda: CLOCK)
        return HttpSession(ctx, config or self.config, service or self.service)

    def feed(self, data: bytes, mode="whole", session=None):
        s = session or self.session()
        if mode == "whole":
            s.receive_data(data)
        elif mode == "bytes":
            for i in range(len(data)):
                s.receive_data(data[i:i + 1])
        else:
            rnd = random.Random(mode)
            i = 0
            while i < len(data):
                n = rnd.randint(1, 40)
                s.receive_data(data[i:i + n])
                i += n
        return s, s.data_to_send()

    def exchange(self, data: bytes, **kw):
        """The answer, checked to be the same fed whole, byte by byte and at random splits."""
        items, rules = list(self.caught.items), self.faults.rules()
        _, whole = self.feed(data, **kw)
        for mode in ("bytes", 1, 2, 3):
            self.caught.items, self.faults._rules = list(items), [dict(r) for r in rules]
            _, other = self.feed(data, mode=mode, **kw)
            self.assertEqual(whole, other, "mode %r" % (mode,))
        return parse_responses(whole)

    def one(self, data: bytes, **kw):
        responses = self.exchange(data, **kw)
        self.assertEqual(len(responses), 1, responses)
        return responses[0]


class RoutesTest(HttpSessionCase):
    def test_every_response_has_date_length_and_the_security_fields(self):
        for path in ("/", "/api/health", "/api/messages", "/nope", "/api/messages/m0001/raw"):
            status, h, body = self.one(get(path))
            self.assertEqual(h["date"], DATE)
            self.assertEqual(int(h["content-length"]), len(body))
            for name in SECURITY:
                self.assertIn(name, h, path)
            self.assertEqual(h["x-content-type-options"], "nosniff")
            self.assertEqual(h["referrer-policy"], "no-referrer")

    def test_page_is_served_with_a_csp_allowing_only_its_own_script_by_hash(self):
        status, h, body = self.one(get("/"))
        self.assertEqual(status, 200)
        self.assertTrue(h["content-type"].startswith("text/html"))
        self.assertEqual(h["x-frame-options"], "DENY")
        csp = h["content-security-policy"]
        self.assertIn("default-src 'none'", csp)
        self.assertIn(page._hash(page.SCRIPT), csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertNotIn(b"innerHTML", body)
        self.assertIn(b"<iframe id=\"v-html\" sandbox ", body)
        self.assertNotIn(b"allow-scripts", body)

    def test_list_is_newest_first_and_filters(self):
        status, h, body = self.one(get("/api/messages"))
        self.assertEqual(status, 200)
        self.assertEqual([m["id"] for m in json.loads(body)], [self.multi.id, self.plain.id])
        cases = {"?to=dave": [self.multi.id], "?from=alice": [self.plain.id], "?subject=hello": [self.plain.id],
                 "?q=DAVE": [self.multi.id], "?limit=1": [self.multi.id], "?to=nobody": []}
        for query, ids in cases.items():
            status, h, body = self.one(get("/api/messages" + query))
            self.assertEqual([m["id"] for m in json.loads(body)], ids, query)
        for bad in ("?limit=0", "?limit=x", "?limit=100000"):
            status, h, body = self.one(get("/api/messages" + bad))
            self.assertEqual(status, 400, bad)
            self.assertEqual(body.count(b"\n"), 1)
            self.assertIn("limit", json.loads(body)["error"])

    def test_get_one_message_parsed_with_envelope(self):
        status, h, body = self.one(get("/api/messages/" + self.plain.id))
        m = json.loads(body)
        self.assertEqual((m["tls"], m["auth_user"], m["helo"], m["listener"]),
                         (True, "alice@example.org", "client.test", "submission"))
        self.assertEqual(m["text"], "Hi Bob\n")
        self.assertFalse(m["has_html"])
        self.assertIn(["Subject", "Hello"], m["headers"])
        status, h, body = self.one(get("/api/messages/" + self.multi.id))
        m = json.loads(body)
        self.assertEqual(m["subject"], "Résumé")
        self.assertTrue(m["has_html"])
        self.assertEqual(m["html"], "<p>html body</p><script>document.title='PWNED'</script>")
        self.assertEqual(m["attachments"], [{"index": 0, "filename": '../../etc/pa ss"wd.pdf',
                                             "safe_filename": "pa_ss_wd.pdf", "type": "application/pdf",
                                             "size": 9}])

    def test_raw_html_and_attachment(self):
        status, h, body = self.one(get("/api/messages/%s/raw" % self.plain.id))
        self.assertEqual((status, body), (200, PLAIN))
        self.assertTrue(h["content-type"].startswith("text/plain"))
        self.assertIn("attachment", h["content-disposition"])
        status, h, body = self.one(get("/api/messages/%s/html" % self.multi.id))
        self.assertEqual(status, 200)
        self.assertTrue(h["content-security-policy"].startswith(
            "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"))
        self.assertEqual(h["content-security-policy"], SANDBOX_CSP)
        self.assertIn(b"<script>", body)            # served as sent, disarmed by the sandbox
        status, h, body = self.one(get("/api/messages/%s/html" % self.plain.id))
        self.assertEqual(status, 404)
        status, h, body = self.one(get("/api/messages/%s/attachments/0" % self.multi.id))
        self.assertEqual((status, body), (200, b"%PDF-1.4\n"))
        self.assertEqual(h["content-disposition"], 'attachment; filename="pa_ss_wd.pdf"')
        self.assertEqual(h["content-type"], "application/octet-stream")
        status, h, body = self.one(get("/api/messages/%s/attachments/1" % self.multi.id))
        self.assertEqual(status, 404)

    def test_unknown_message_is_404_with_one_line(self):
        for path in ("/api/messages/nope", "/api/messages/nope/raw", "/api/messages/nope/html",
                     "/api/messages/nope/attachments/0"):
            status, h, body = self.one(get(path))
            self.assertEqual(status, 404, path)
            self.assertEqual(json.loads(body), {"error": "no message nope"})

    def test_delete_one_and_all(self):
        status, h, body = self.one(get("/api/messages/" + self.plain.id, method="DELETE"))
        self.assertEqual((status, json.loads(body)), (200, {"deleted": self.plain.id}))
        self.assertEqual([m.id for m, _ in self.caught.items], [self.multi.id])
        s, out = self.feed(get("/api/messages", method="DELETE"))
        self.assertEqual(json.loads(parse_responses(out)[0][2]), {"deleted": 1})
        self.assertEqual(self.caught.items, [])

    def test_faults_list_add_remove_reset(self):
        rule = json.dumps({"protocol": "smtp", "command": "rcpt", "code": 451, "times": 2}).encode()
        s, out = self.feed(get("/api/faults", "Content-Type: application/json", method="POST", body=rule)
                           + get("/api/faults"))
        (st1, _, added), (st2, _, listed) = parse_responses(out)
        added = json.loads(added)
        self.assertEqual((st1, st2, added["command"], added["code"]), (200, 200, "RCPT", 451))
        self.assertEqual(json.loads(listed), [added])
        s, out = self.feed(get("/api/faults/" + added["id"], method="DELETE") + get("/api/faults/nope", method="DELETE"))
        self.assertEqual([r[0] for r in parse_responses(out)], [200, 404])
        self.faults.add_rule({"protocol": "pop3", "command": "RETR"})
        s, out = self.feed(get("/api/faults", method="DELETE"))
        self.assertEqual(self.faults.rules(), [])

    def test_bad_fault_rules(self):
        cases = [(b'{"protocol": "gopher"}', "application/json", 400, "bad fault rule: protocol"),
                 (b'not json', "application/json", 400, "not JSON"),
                 (b'[1, 2]', "application/json", 400, "one JSON object"),
                 (b'{"protocol": "smtp"}', "text/plain", 415, "application/json")]
        for body, ctype, status, text in cases:
            st, h, out = self.one(get("/api/faults", "Content-Type: " + ctype, method="POST", body=body))
            self.assertEqual(st, status, body)
            self.assertIn(text, json.loads(out)["error"])
            self.assertEqual(out.count(b"\n"), 1)
        st, h, out = self.one(get("/api/faults", "Content-Type: application/json", method="POST"))
        self.assertEqual(st, 411)

    def test_without_a_catalog_or_faults_the_api_answers_503(self):
        service = FakeService(None, None)
        for request in (get("/api/messages"), get("/api/messages/x"), get("/api/events"), get("/api/faults")):
            s, out = self.feed(request, session=self.session(service=service))
            status, h, body = parse_responses(out)[0]
            self.assertEqual(status, 503)
            self.assertEqual(body.count(b"\n"), 1)
            self.assertIn("error", json.loads(body))
        s, out = self.feed(get("/api/health"), session=self.session(service=service))
        self.assertEqual(json.loads(parse_responses(out)[0][2]), {"status": "ok", "catalog": False, "faults": False})

    def test_foreign_host_names_are_refused_without_a_login(self):
        for host in ("127.0.0.1:8025", "localhost:8025", "[::1]:8025", "mail.localhost", "LOCALHOST"):
            st, h, body = self.one(get("/api/messages").replace(b"Host: 127.0.0.1", b"Host: " + host.encode()))
            self.assertEqual(st, 200, host)
        st, h, body = self.one(get("/api/messages").replace(b"Host: 127.0.0.1", b"Host: evil.example:8025"))
        self.assertEqual(st, 403)
        self.assertIn("DNS rebinding", json.loads(body)["error"])
        self.config.host_names = ("mx.example.test",)
        st, h, body = self.one(get("/api/messages").replace(b"Host: 127.0.0.1", b"Host: MX.example.test:80"))
        self.assertEqual(st, 200)

    def test_cross_site_state_changes_are_refused(self):
        st, h, body = self.one(get("/api/messages", "Origin: http://evil.example", method="DELETE"))
        self.assertEqual(st, 403)
        self.assertEqual(len(self.caught.items), 2)
        st, h, body = self.one(get("/api/messages/" + self.plain.id, "Origin: http://127.0.0.1", method="DELETE"))
        self.assertEqual(st, 200)


class ProtocolTest(HttpSessionCase):
    def test_pipelined_requests_are_answered_in_order(self):
        data = get("/api/health") + get("/api/messages/" + self.plain.id) + get("/nope") + get("/api/faults")
        self.assertEqual([r[0] for r in self.exchange(data)], [200, 200, 404, 200])

    def test_pipelining_waits_for_a_slow_backend(self):
        self.caught.deferred = True
        s = self.session()
        s.receive_data(get("/api/messages") + get("/api/health"))
        self.assertEqual(s.data_to_send(), b"")      # the health answer waits behind the list
        self.assertTrue(s.busy)
        self.caught.run_pending()
        statuses = [r[0] for r in parse_responses(s.data_to_send())]
        self.assertEqual(statuses, [200, 200])

    def test_head_has_the_fields_of_get_without_the_body(self):
        (_, gh, gbody), = self.exchange(get("/api/messages"))
        (st, hh, hbody), = self.exchange(get("/api/messages", method="HEAD"))
        self.assertEqual((st, hbody), (200, b""))
        self.assertEqual(hh["content-length"], gh["content-length"])

    def test_connection_close_and_http10(self):
        for request in (get("/api/health", "Connection: close"), get("/api/health", version="HTTP/1.0")):
            s, out = self.feed(request + get("/api/health"))
            responses = parse_responses(out)
            self.assertEqual(len(responses), 1)
            self.assertEqual(responses[0][1]["connection"], "close")
            self.assertTrue(s.closed)
        s, out = self.feed(get("/api/health", "Connection: keep-alive", version="HTTP/1.0") + get("/api/health"))
        responses = parse_responses(out)
        self.assertEqual(len(responses), 2)
        self.assertEqual(responses[0][1]["connection"], "keep-alive")

    def test_bad_requests(self):
        cases = [(b"GARBAGE\r\n\r\n", 400), (b"GET /\r\n\r\n", 400), (b"GET / HTTP/1.1\r\n\r\n", 400),
                 (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
                 (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
                 (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  folded\r\n\r\n", 400),
                 (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
                 (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505), (b"GET nohost HTTP/1.1\r\nHost: a\r\n\r\n", 400),
                 (b"GET /%ff HTTP/1.1\r\nHost: a\r\n\r\n", 400),
                 (b"POST /api/faults HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
                 (b"POST /api/faults HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
                 (b"POST /api/faults HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n", 400),
                 (b"POST /api/faults HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
                 (b"\r\n" * 20 + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400)]
        for data, status in cases:
            s, out = self.feed(data + get("/api/health"))
            responses = parse_responses(out)
            self.assertEqual([r[0] for r in responses], [status], data)
            self.assertEqual(responses[0][1]["connection"], "close", data)
            self.assertTrue(s.closed, data)
            self.assertEqual(responses[0][2].count(b"\n"), 1)

    def test_lenient_where_the_rfc_allows(self):
        data = b"\r\nGET /api/health HTTP/1.1\nHost: 127.0.0.1\n\n" + b"GET http://127.0.0.1/api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        self.assertEqual([r[0] for r in self.exchange(data)], [200, 200])

    def test_methods_405_with_allow_and_501(self):
        st, h, body = self.one(get("/api/messages", method="PUT"))
        self.assertEqual((st, h["allow"]), (405, "DELETE, GET, HEAD"))
        st, h, body = self.one(get("/api/faults/x", method="GET"))
        self.assertEqual((st, h["allow"]), (405, "DELETE"))
        st, h, body = self.one(get("/", method="BREW"))
        self.assertEqual(st, 501)

    def test_limits(self):
        long_line = get("/" + "a" * MAX_REQUEST_LINE)
        many = get("/api/health", *["X-%d: y" % i for i in range(MAX_HEADER_FIELDS + 1)])
        big = get("/api/health", "X: " + "y" * 70000)
        body = b"POST /api/faults HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)
        for data, status in ((long_line, 414), (many, 431), (big, 431), (body, 413)):
            s, out = self.feed(data)
            responses = parse_responses(out)
            self.assertEqual([r[0] for r in responses], [status])
            self.assertTrue(s.closed)
        ok = get("/api/health", *["X-%d: y" % i for i in range(MAX_HEADER_FIELDS - 1)])
        self.assertEqual(self.one(ok)[0], 200)

    def test_a_request_line_without_end_is_refused_before_it_grows(self):
        s = self.session()
        for _ in range(MAX_REQUEST_LINE // 1000 + 1):
            s.receive_data(b"G" * 1000)
        self.assertEqual(parse_responses(s.data_to_send())[0][0], 414)
        self.assertTrue(s.closed)

    def test_requests_before_end_of_input_are_answered(self):
        s = self.session()
        s.receive_data(get("/api/health") + get("/api/messages"))
        s.receive_data(b"")
        self.assertEqual([r[0] for r in parse_responses(s.data_to_send())], [200, 200])
        self.assertTrue(s.closed)
        self.caught.deferred = True
        s = self.session()
        s.receive_data(get("/api/messages"))
        s.receive_data(b"")
        self.assertFalse(s.closed)          # the answer is still to come
        self.caught.run_pending()
        responses = parse_responses(s.data_to_send())
        self.assertEqual([(r[0], r[1]["connection"]) for r in responses], [(200, "close")])
        self.assertTrue(s.closed)

    def test_idle_timeout_closes_quietly(self):
        s = self.session()
        self.assertEqual(s.idle_timeout, self.config.idle_timeout)
        s.timeout()
        self.assertTrue(s.closed)
        self.assertEqual(s.data_to_send(), b"")

    def test_progress_counts_lines(self):
        s = self.session()
        s.receive_data(b"GET / HT")
        p = s.progress
        s.receive_data(b"TP/1.1\r\n")
        self.assertGreater(s.progress, p)

    def test_random_input_never_raises(self):
        rnd = random.Random(11)
        alphabet = [b"GET ", b"POST ", b"/api/messages", b" HTTP/1.1", b"\r\n", b"Host: a", b":", b" ",
                    b"Content-Length: 3", b"Transfer-Encoding: x", b"\x00", b"\xff", b"%", b"?q=", b"\n"]
        for _ in range(300):
            s = self.session()
            for _ in range(rnd.randint(1, 30)):
                s.receive_data(rnd.choice(alphabet))
            s.data_to_send()
            s.receive_data(b"")


class EventsTest(HttpSessionCase):
    def test_events_are_pushed_and_heartbeats_sent(self):
        s, out = self.feed(get("/api/events") + get("/api/health"))
        status, h, body = parse_responses(out)[0]
        self.assertEqual(status, 200)
        self.assertTrue(h["content-type"].startswith("text/event-stream"))
        self.assertNotIn("content-length", h)
        self.assertEqual(body, b"retry: 3000\n\n")   # the pipelined request is not answered
        self.assertEqual(s.idle_timeout, HEARTBEAT_S)
        m = self.caught.add(PLAIN, mailbox="eve@example.org")
        pushed = s.data_to_send()
        self.assertTrue(pushed.startswith(b"event: message\ndata: {"))
        self.assertTrue(pushed.endswith(b"}\n\n"))
        self.assertEqual(json.loads(pushed.split(b"data: ", 1)[1])["id"], m.id)
        self.assertTrue(s.keepalive())
        self.assertEqual(s.data_to_send(), b": heartbeat\n\n")
        self.assertEqual(len(self.caught.watchers), 1)
        s.receive_data(b"")
        self.assertEqual(self.caught.watchers, [])
        self.assertTrue(s.closed)

    def test_shutdown_ends_the_stream(self):
        s, out = self.feed(get("/api/events"))
        s.shutdown()
        self.assertTrue(s.closed)
        self.assertEqual(self.caught.watchers, [])

    def test_head_of_events_does_not_stream(self):
        s, out = self.feed(get("/api/events", method="HEAD"))
        self.assertEqual(parse_responses(out)[0][2], b"")
        self.assertEqual(self.caught.watchers, [])
        self.assertTrue(s.closed)


def basic(user, password):
    return "Authorization: Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


class LoginTest(HttpSessionCase):
    def setUp(self):
        super().setUp()
        self.config = HttpConfig(require_login=True)

    def test_login_needed_except_for_health(self):
        st, h, body = self.one(get("/api/messages"))
        self.assertEqual(st, 401)
        self.assertEqual(h["www-authenticate"], 'Basic realm="mailsrv", charset="UTF-8"')
        self.assertEqual(self.one(get("/"))[0], 401)
        self.assertEqual(self.one(get("/api/health"))[0], 200)
        self.assertEqual(self.one(get("/api/messages", basic("bob@example.org", "wrong")))[0], 401)
        self.assertEqual(self.one(get("/api/messages", "Authorization: Basic !!!"))[0], 401)

    def test_a_user_sees_and_deletes_only_their_own_mailbox(self):
        auth = basic("bob@example.org", "pw")
        st, h, body = self.one(get("/api/messages", auth))
        self.assertEqual([m["id"] for m in json.loads(body)], [self.plain.id])
        self.assertEqual(self.one(get("/api/messages/" + self.multi.id, auth))[0], 404)
        self.assertEqual(self.one(get("/api/messages/%s/raw" % self.multi.id, auth))[0], 404)
        self.assertEqual(self.one(get("/api/messages/" + self.multi.id, auth, method="DELETE"))[0], 404)
        s, out = self.feed(get("/api/messages", auth, method="DELETE"))
        self.assertEqual(json.loads(parse_responses(out)[0][2]), {"deleted": 1})
        self.assertEqual([m.id for m, _ in self.caught.items], [self.multi.id])

    def test_faults_are_refused_in_normal_mode(self):
        st, h, body = self.one(get("/api/faults", basic("bob@example.org", "pw")))
        self.assertEqual(st, 403)

    def test_events_only_for_the_users_mailbox(self):
        s, out = self.feed(get("/api/events", basic("bob@example.org", "pw")))
        self.caught.add(PLAIN, mailbox="eve@example.org")
        self.assertEqual(s.data_to_send(), b"")
        self.caught.add(PLAIN, mailbox="bob@example.org")
        self.assertIn(b"event: message", s.data_to_send())

    def test_plaintext_login_from_afar_is_refused(self):
        self.peer = ("192.0.2.7", 40000)
        st, h, body = self.one(get("/api/messages", basic("bob@example.org", "pw")))
        self.assertEqual(st, 403)
        self.assertEqual(self.service.logins, [])     # the password was never checked
        self.config.allow_plaintext_auth = True
        self.assertEqual(self.one(get("/api/messages", basic("bob@example.org", "pw")))[0], 200)

    def test_temporary_refusal_is_503(self):
        self.service.temporary = True
        st, h, body = self.one(get("/api/messages", basic("bob@example.org", "pw")))
        self.assertEqual((st, h["retry-after"]), (503, "60"))


if __name__ == "__main__":
    unittest.main()
