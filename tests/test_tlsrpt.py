"""TLS-RPT (RFC 8460): the ``_smtp._tls`` record (§3), the daily counts kept
under DATA, the JSON report (§4.4), its file name (§5.1), gzip (§5.2), the
mail that carries it (§5.3), and the reporter sending it once per day per
domain (mailto: into our queue, https: POST)."""

import email
import email.policy
import gzip
import json
import queue as stdqueue
import tempfile
import threading
import unittest

from protocols.crypto import ed25519
from protocols.dns import codec as dns
from protocols.dns.resolver import Answer, DnsError
from protocols.loop import EventLoop
from protocols.loop_https import HttpsReply
from protocols.outbound import tlsrpt
from protocols.outbound.mtasts import parse_policy
from protocols.outbound.mtasts_fetch import StsOutcome
from protocols.outbound.tlsrpt import RecordError, TlsRptCounter, parse_record
from protocols.outbound.tlsrpt_send import TlsReporter
from store.queue import MemoryQueue
from store.dkimkeys import write_key
from store.stscache import TlsRptStore
from tests.dnsfake import FakeDnsServer
from tests.helpers import ServerTestCase, wait_for

WAIT = 10.0
DAY = "2027-01-14"
T = 1_800_000_000.0          # 2027-01-15 08:00 UTC
POLICY = parse_policy(b"version: STSv1\nmode: enforce\nmx: mx.example.net\nmx: *.example.net\nmax_age: 86400\n")


class RecordTest(unittest.TestCase):
    def test_rfc_forms(self):
        self.assertEqual(parse_record(["v=TLSRPTv1; rua=mailto:reports@example.com"]), ["mailto:reports@example.com"])
        self.assertEqual(parse_record(["v=spf1 -all", "v=TLSRPTv1;rua=https://reporting.example.com/v1/tlsrpt"]),
                         ["https://reporting.example.com/v1/tlsrpt"])
        self.assertEqual(parse_record(["v=TLSRPTv1; rua=mailto:a@x.example, https://r.example/p ;"]),
                         ["mailto:a@x.example", "https://r.example/p"])

    def test_bad_records(self):
        for texts in ([], ["v=TLSRPTv1"], ["v=TLSRPTv1; rua=ftp://x"], ["v=TLSRPTv1; rua=mailto:a@b", "v=TLSRPTv1; rua=mailto:c@d"],
                      ["v=TLSRPTv1; bad field; rua=mailto:a@b"]):
            with self.assertRaises(RecordError, msg=texts):
                parse_record(texts)


class FakeLoop:
    def __init__(self, now):
        self.now = now

    def time(self):
        return self.now

    def call_later(self, delay, fn):
        return None


class ReportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.store = TlsRptStore(self.tmp.name)

    def count(self):
        loop = FakeLoop(T - 86400)          # during DAY
        c = TlsRptCounter(loop, self.store)
        sts = StsOutcome(POLICY, "id1", "fetched")
        for _ in range(3):
            c.success("example.net", sts)
        c.record("example.net", sts, "mx.example.net", "validation-failure", "certificate not trusted")
        c.record("example.net", sts, "mx.example.net", "validation-failure", "certificate not trusted")
        c.record("example.net", sts, "bad.other.example", "starttls-not-supported", "no STARTTLS")
        c.success("plain.example", StsOutcome())
        c.close()        # to disk
        c2 = TlsRptCounter(loop, self.store)      # a second run of the day adds to the file
        c2.success("example.net", sts)
        c2.close()

    def test_counts_are_durable_and_add_up(self):
        self.count()
        day = TlsRptStore(self.tmp.name).day(DAY)
        self.assertEqual(sorted(day), ["example.net", "plain.example"])
        d = day["example.net"]
        self.assertEqual(d["success"], 4)
        self.assertEqual(d["failure"], {"validation-failure": 2, "starttls-not-supported": 1})
        self.assertEqual(day["plain.example"]["policy"], {"policy-type": "no-policy-found",
                                                          "policy-domain": "plain.example"})

    def test_report_json_of_section_4_4(self):
        self.count()
        report = tlsrpt.build_report(DAY, "example.net", self.store.day(DAY)["example.net"], "mx.example.org",
                                     "postmaster@example.org", "2027-01-14.abc@mx.example.org")
        self.assertEqual(report["organization-name"], "mx.example.org")
        self.assertEqual(report["date-range"], {"start-datetime": "2027-01-14T00:00:00Z",
                                                "end-datetime": "2027-01-15T00:00:00Z"})
        self.assertEqual(report["contact-info"], "postmaster@example.org")
        self.assertEqual(report["report-id"], "2027-01-14.abc@mx.example.org")
        (pol,) = report["policies"]
        self.assertEqual(pol["policy"], {
            "policy-type": "sts", "policy-domain": "example.net", "mx-host": ["mx.example.net", "*.example.net"],
            "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.example.net", "mx: *.example.net",
                              "max_age: 86400"]})         # §4.5: one string per line, each mx apart
        self.assertEqual(pol["summary"], {"total-successful-session-count": 4, "total-failure-session-count": 3})
        details = {(f["result-type"], f["receiving-mx-hostname"]): f for f in pol["failure-details"]}
        self.assertEqual(details[("validation-failure", "mx.example.net")]["failed-session-count"], 2)
        self.assertEqual(details[("validation-failure", "mx.example.net")]["failure-reason-code"],
                         "certificate not trusted")
        self.assertEqual(details[("starttls-not-supported", "bad.other.example")]["failed-session-count"], 1)

    def test_mail_of_section_5_3(self):
        self.count()
        report = tlsrpt.build_report(DAY, "example.net", self.store.day(DAY)["example.net"], "mx.example.org",
                                     "postmaster@example.org", "rid@mx.example.org")
        gz = tlsrpt.compress(report)
        name = tlsrpt.report_file_name("mx.example.org", "example.net", DAY, "001")
        self.assertEqual(name, "mx.example.org!example.net!1799884800!1799971200!001.json.gz")     # §5.1
        raw = tlsrpt.report_message(report, gz, "example.net", "mx.example.org", "postmaster@example.org",
                                    "tls@example.net", "Fri, 15 Jan 2027 08:00:00 +0000", "m1@mx.example.org",
                                    "b0undary", name)
        self.assertNotIn(b"\n", raw.replace(b"\r\n", b""))
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(msg["TLS-Report-Domain"], "example.net")
        self.assertEqual(msg["TLS-Report-Submitter"], "mx.example.org")
        self.assertEqual(str(msg["Subject"]),
                         "Report Domain: example.net Submitter: mx.example.org Report-ID: <rid@mx.example.org>")
        self.assertEqual(msg.get_content_type(), "multipart/report")
        self.assertEqual(msg.get_param("report-type"), "tlsrpt")
        text, attachment = msg.iter_parts()
        self.assertEqual(text.get_content_type(), "text/plain")
        self.assertEqual(attachment.get_content_type(), "application/tlsrpt+gzip")
        self.assertEqual(attachment.get_filename(), name)
        self.assertEqual(json.loads(gzip.decompress(attachment.get_content())), report)


class Resolver:
    def __init__(self, loop, txt):
        self.loop, self.txt, self.asked = loop, txt, []

    def resolve(self, name, qtype, done):
        self.asked.append(name)
        recs = self.txt.get(name)
        result = Answer([(r.encode(),) for r in recs], 300) if recs else DnsError("nxdomain", "NXDOMAIN")
        self.loop.call_soon(lambda: done(result))


class ReporterTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.now = T
        self.loop = EventLoop(clock=lambda: self.now)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()
        self.store = TlsRptStore(self.tmp.name)
        self.store.add(DAY, {"example.net": {"policy": {"policy-type": "no-policy-found", "policy-domain": "example.net"},
                                             "success": 5, "failure": {}},
                             "quiet.example": {"success": 1, "failure": {}}})
        self.store.add("2027-01-15", {"example.net": {"success": 1, "failure": {}}})     # today: not yet
        self.queue = MemoryQueue()
        self.posts = []
        self.resolver = Resolver(self.loop, {"_smtp._tls.example.net": [
            "v=TLSRPTv1; rua=mailto:tls@example.net,https://reports.example.net/tlsrpt"]})
        self.signed = []
        self.reporter = TlsReporter(self.loop, self.resolver, TlsRptStore(self.tmp.name), self.queue,
                                    "mx.example.org", "postmaster@example.org", sign=self.sign,
                                    post=lambda uri, gz: self.posts.append((uri, gz)) or HttpsReply(201))

    def sign(self, data):
        self.signed.append(data)
        return b"DKIM-Signature: v=1; test\r\n" + data

    def tearDown(self):
        self.loop.stop()
        self.thread.join(WAIT)
        self.reporter.close()
        self.loop.close()
        self.tmp.cleanup()

    def run_reporter(self):
        done = stdqueue.Queue()
        self.loop.call_soon_threadsafe(lambda: self.reporter.run(lambda: done.put(True)))
        done.get(timeout=WAIT)

    def test_once_per_day_per_domain_by_mail_and_https(self):
        self.run_reporter()
        entries = self.queue.list()
        self.assertEqual(len(entries), 1)
        self.assertEqual((entries[0].sender, entries[0].recipients[0].address),
                         ("postmaster@example.org", "tls@example.net"))
        data = self.queue.read_message(entries[0].id)
        self.assertTrue(data.startswith(b"DKIM-Signature:"))        # RFC 8460 §3: signed
        msg = email.message_from_bytes(data, policy=email.policy.default)
        report = json.loads(gzip.decompress(list(msg.iter_parts())[1].get_content()))
        self.assertEqual(report["policies"][0]["summary"]["total-successful-session-count"], 5)
        self.assertEqual(report["date-range"]["start-datetime"], DAY + "T00:00:00Z")
        (uri, gz), = self.posts
        self.assertEqual(uri, "https://reports.example.net/tlsrpt")
        self.assertEqual(json.loads(gzip.decompress(gz))["report-id"], report["report-id"])
        self.assertEqual(sorted(self.store.sent(DAY)), ["example.net", "quiet.example"])
        self.assertIn("_smtp._tls.quiet.example", self.resolver.asked)
        self.assertNotIn("2027-01-15", [d for d in self.store.days() if self.store.sent(d)])
        # a second run the same day sends nothing more
        self.run_reporter()
        self.assertEqual(len(self.queue.list()), 1)
        self.assertEqual(len(self.posts), 1)

    def test_no_report_posts_to_our_own_network(self):
        self.resolver.txt["_smtp._tls.example.net"] = ["v=TLSRPTv1; rua=https://127.0.0.1:8080/x,https://[::1]/y,"
                                                       "https://localhost/z,https://10.1.2.3/w"]
        with self.assertLogs("mailsrv.tlsrpt", "WARNING") as logs:
            self.run_reporter()
        self.assertEqual(self.posts, [])
        self.assertEqual(len(logs.output), 4)
        self.assertIn("rua=https://127.0.0.1:8080/x: not a public https host", logs.output[0])

    def test_failed_post_is_tried_again_later(self):
        self.reporter.post = lambda uri, gz: HttpsReply(503)
        self.run_reporter()
        self.assertEqual(self.store.sent(DAY), ["quiet.example"])
        self.reporter.post = lambda uri, gz: self.posts.append(uri) or HttpsReply(200)
        self.run_reporter()
        self.assertEqual(self.posts, ["https://reports.example.net/tlsrpt"])
        self.assertIn("example.net", self.store.sent(DAY))


if __name__ == "__main__":
    unittest.main()


class ServerReportTest(ServerTestCase):
    """The whole server with tls_rpt = yes: yesterday's counts become a signed report
    mail through our own queue (here to a local mailbox, as rua= asks)."""
    extra_config = {"tls_rpt": "yes"}

    @classmethod
    def setUpClass(cls):
        cls.dns = FakeDnsServer().start()
        cls.dns.add("_smtp._tls.example.net", dns.TYPE_TXT, (b"v=TLSRPTv1; rua=mailto:bob@example.test",))
        cls.extra_config = dict(cls.extra_config, dns_servers="%s:%d" % cls.dns.address)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.dns.stop()

    def test_daily_report_reaches_the_rua_mailbox_signed(self):
        write_key(self.tmp, "example.test", "s1", "ed25519", ed25519.generate().pem())
        self.server.backend.delivery.load_dkim_keys()
        out = self.server.backend.outbound
        yesterday = tlsrpt.utc_day(self.server.loop.time() - 86400)
        TlsRptStore(self.tmp).add(yesterday, {"example.net": {"success": 7, "failure": {"starttls-not-supported": 2}}})
        done = stdqueue.Queue()
        self.server.loop.call_soon_threadsafe(lambda: out.tls_reporter.run(lambda: done.put(True)))
        done.get(timeout=WAIT)
        msgs = wait_for(lambda: self.new_messages("bob@example.test"), "the report in bob's mailbox")
        msg = email.message_from_bytes(msgs[0], policy=email.policy.default)
        self.assertEqual((msg["TLS-Report-Domain"], msg["TLS-Report-Submitter"]), ("example.net", "example.test"))
        self.assertEqual(msg["From"], "postmaster@example.test")
        self.assertIn("d=example.test", str(msg["DKIM-Signature"]))
        report = json.loads(gzip.decompress(list(msg.iter_parts())[1].get_content()))
        self.assertEqual(report["policies"][0]["summary"], {"total-successful-session-count": 7,
                                                            "total-failure-session-count": 2})
        self.assertEqual(report["contact-info"], "postmaster@example.test")
        self.assertEqual(TlsRptStore(self.tmp).sent(yesterday), ["example.net"])
