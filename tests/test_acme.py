"""ACME (RFC 8555): JWS (RFC 7515), the CSR (RFC 2986), the protocol flow against a
fake CA in-process, the service's schedule and backoff on a real event loop, and the
http-01 answer served by the HTTP listener.  Debian's pebble: tests/test_interop_acme.py.
"""

import datetime
import http.client
import json
import logging
import os
import shutil
import subprocess
import tempfile
import unittest

from protocols.acme import flow as acme_flow
from protocols.acme import service as acme_service
from protocols.config import Config, ConfigError
from protocols.crypto import alpn_cert, csr, der, jws, p256, rsa, x509
from protocols.loop_https import HttpsError
from store import acmefiles
from tests.acme_fake import ACCOUNT, BASE, CERT_KEY, AcmeLoopCase, FakeCA, acme_settings
from tests.helpers import ServerTestCase, wait_for

# RFC 7515 Appendix A.2: the RSA key (as p and q; n and d follow), the JWS Signing Input, the signature.
A2_P = ("4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7"
        "ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc")
A2_Q = ("uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wD"
        "mpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc")
A2_INPUT = (b"eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb2"
            b"90Ijp0cnVlfQ")
A2_SIGNATURE = ("cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9"
                "CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383Lc"
                "OLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVm"
                "tVrBp0igcN_IoypGlUPQGe77Rw")
# RFC 7515 Appendix A.3: the P-256 key and the ES256 signature of the same input.
A3_X, A3_Y = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
A3_D = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"
A3_SIGNATURE = "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
# RFC 7638 §3.1: the example key and its thumbprint.
T_N = ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3"
       "oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdA"
       "ZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-"
       "kEgU8awapJzKnqDKgw")


def _int(b64):
    return int.from_bytes(jws.b64url_decode(b64), "big")


class JwsTest(unittest.TestCase):
    def test_rfc7515_a2_rs256_signature(self):
        key = rsa.from_primes(_int(A2_P), _int(A2_Q))
        self.assertTrue(jws.jwk(key.public)["n"].startswith("ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp"))
        self.assertEqual(jws.sign_rs256(key, A2_INPUT), A2_SIGNATURE)
        self.assertEqual(A2_INPUT.split(b".")[0].decode(), jws.b64url(b'{"alg":"RS256"}'))

    def test_rfc7638_thumbprint(self):
        key = rsa.RsaPublicKey(_int(T_N), 65537)
        self.assertEqual(jws.thumbprint(key), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        self.assertEqual(jws.key_authorization("tok", key), "tok.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")

    def test_base64url_has_no_padding_and_round_trips(self):
        for data in (b"", b"\xfb", b"\xfb\xff", b"\xfb\xff\xfe"):
            text = jws.b64url(data)
            self.assertNotIn("=", text)
            self.assertNotIn("+", text)
            self.assertEqual(jws.b64url_decode(text), data)
        with self.assertRaises(ValueError):
            jws.b64url_decode("AA==")

    def test_flattened_serialization_verifies(self):
        doc = json.loads(jws.flattened(ACCOUNT, {"nonce": "n1", "url": "https://x/"}, {"a": 1}))
        self.assertEqual(set(doc), {"protected", "payload", "signature"})
        header = json.loads(jws.b64url_decode(doc["protected"]))
        self.assertEqual(header, {"nonce": "n1", "url": "https://x/", "alg": "RS256"})
        self.assertTrue(ACCOUNT.public.verify((doc["protected"] + "." + doc["payload"]).encode(),
                                              jws.b64url_decode(doc["signature"])))
        empty = json.loads(jws.flattened(ACCOUNT, {"nonce": "n2", "url": "u"}, None))
        self.assertEqual(empty["payload"], "")              # RFC 8555 §6.3 POST-as-GET


class Es256Test(unittest.TestCase):
    def test_rfc6979_a25_p256_sha256_sample(self):
        key = p256.P256PrivateKey(0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721)
        self.assertEqual((key.public.x, key.public.y),
                         (0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6,
                          0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299))
        self.assertEqual(key.sign(b"sample").hex().upper(),
                         "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
                         "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8")
        self.assertEqual(key.sign(b"test").hex().upper(),
                         "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367"
                         "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083")

    def test_rfc7515_a3_es256_signature_verifies(self):
        key = p256.P256PrivateKey(_int(A3_D))
        self.assertEqual(jws.jwk(key.public), {"crv": "P-256", "kty": "EC", "x": A3_X, "y": A3_Y})
        signing_input = b"eyJhbGciOiJFUzI1NiJ9." + A2_INPUT.split(b".")[1]
        self.assertTrue(key.public.verify(signing_input, jws.b64url_decode(A3_SIGNATURE)))
        self.assertFalse(key.public.verify(signing_input + b"x", jws.b64url_decode(A3_SIGNATURE)))
        self.assertTrue(key.public.verify(signing_input, key.sign(signing_input)))
        doc = json.loads(jws.flattened(key, {"nonce": "n", "url": "u"}, {}))
        self.assertEqual(json.loads(jws.b64url_decode(doc["protected"]))["alg"], "ES256")

    def test_key_file_round_trips_and_openssl_reads_it(self):
        key = p256.generate()
        self.assertEqual(acme_service.load_account_key(key.pem(), "k.pem"), key)
        if shutil.which("openssl"):
            out = subprocess.run(["openssl", "pkey", "-noout", "-text"], input=key.pem(), capture_output=True, timeout=30)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn(key.public.point().hex()[:20], out.stdout.replace(b":", b"").replace(b"\n", b"").replace(b" ", b"").decode())


class CsrTest(unittest.TestCase):
    def test_csr_is_signed_by_the_key_and_names_every_name(self):
        request = csr.certification_request(CERT_KEY, ["mail.example.org", "mta-sts.example.org"])
        info, alg, sig = der.children(der.read_all(request))
        self.assertTrue(CERT_KEY.public.verify(der.tlv(info.tag, info.value), der.to_bits(sig)))
        self.assertIn(b"mta-sts.example.org", request)
        with self.assertRaises(ValueError):
            csr.certification_request(CERT_KEY, [])

    @unittest.skipUnless(shutil.which("openssl"), "openssl is not installed")
    def test_openssl_req_verifies_the_csr(self):
        request = csr.certification_request(CERT_KEY, ["mail.example.org", "mta-sts.example.org"])
        out = subprocess.run(["openssl", "req", "-verify", "-noout", "-text"], input=csr.pem(request),
                             capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(b"verify OK", out.stderr + out.stdout)
        self.assertIn(b"DNS:mail.example.org, DNS:mta-sts.example.org", out.stdout)
        self.assertIn(b"CN = mail.example.org", out.stdout)


class DictAnswers(dict):
    """acme_flow.Http01Answers in memory: token -> key authorization."""

    def publish(self, token, key_authorization):
        self[token] = key_authorization

    def withdraw(self, token):
        self.pop(token, None)


class FlowTest(unittest.TestCase):
    """The protocol against the fake CA, driven synchronously (acme_flow.run_sync)."""

    def setUp(self):
        self.challenges = DictAnswers()
        self.ca = FakeCA(CERT_KEY, lambda name, token: self.challenges.get(token))
        self.waits = []

    def run_flow(self, names=("mail.example.org", "mta-sts.example.org")):
        flow = acme_flow.AcmeFlow(BASE + "/dir", "admin@example.org", names, self.ca,
                                  lambda: ACCOUNT, lambda: CERT_KEY, self.challenges)
        return acme_flow.run_sync(flow.run(), self.waits.append)

    def test_obtains_a_certificate_for_every_name(self):
        chain, key = self.run_flow()
        info = x509.read_certificate(der.pem_block(chain, "CERTIFICATE")[1])
        self.assertEqual(sorted(info.dns_names), ["mail.example.org", "mta-sts.example.org"])
        self.assertIs(key, CERT_KEY)
        self.assertEqual(self.challenges, {})               # unpublished once answered
        account = self.ca.requests.index(("POST", "/acct"))
        self.assertLess(account, self.ca.requests.index(("POST", "/order")))

    def test_es256_account_key(self):
        flow = acme_flow.AcmeFlow(BASE + "/dir", "", ["mail.example.org"], self.ca,
                                  p256.generate, lambda: CERT_KEY, self.challenges)
        chain, _ = acme_flow.run_sync(flow.run())
        self.assertTrue(der.pem_blocks(chain))
        self.assertIsInstance(next(iter(self.ca.accounts.values())), p256.P256PublicKey)

    def test_bad_nonce_is_retried_with_the_new_nonce(self):
        self.ca.bad_nonces = 3
        self.run_flow()
        self.assertEqual(self.ca.bad_nonce_sent, 3)

    def test_bad_nonce_forever_gives_up(self):
        self.ca.bad_nonces = 100
        with self.assertRaisesRegex(acme_flow.AcmeError, r"^https://ca.test/acct: badNonce: nonce refused"):
            self.run_flow()

    def test_pending_authorization_is_polled_until_valid(self):
        self.ca.pending_polls = 3
        self.run_flow(names=("mail.example.org",))
        self.assertEqual(self.waits, [1.0, 1.0, 1.0])       # Retry-After: 1 (RFC 8555 §8.2)

    def test_invalid_challenge_names_the_authorization_and_the_reason(self):
        self.ca.fail_challenge = True
        with self.assertRaisesRegex(acme_flow.AcmeError, r"/authz/\d+: authorization of mail.example.org is invalid: "
                                                         r"unauthorized: got "):
            self.run_flow()
        self.assertEqual(self.challenges, {})

    def test_unreachable_directory_is_one_line(self):
        self.ca.down = True
        with self.assertRaisesRegex(HttpsError, r"^https://ca.test/dir: .*refused"):
            self.run_flow()

    def test_retry_after_is_bounded(self):
        reply = type("R", (), {"headers": {"retry-after": "99999"}})()
        self.assertEqual(acme_flow.retry_after(reply, 2.0), acme_flow.RETRY_AFTER_MAX)
        reply.headers = {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}
        self.assertEqual(acme_flow.retry_after(reply, 2.0), 2.0)


class ServiceTest(AcmeLoopCase):
    """The service on a real event loop: first certificate, the swap, the schedule, the backoff."""
    settings = {"acme_names": "mta-sts.example.org"}
    listeners = 3

    def test_obtains_installs_and_schedules_the_renewal(self):
        self.loop.call_soon_threadsafe(self.service.start)
        wait_for(lambda: self.service.last_result, "the certificate installed")
        self.assertEqual(self.service.last_result, "obtained")
        cert, key = self.installed[0]
        self.assertEqual((cert, key), (acmefiles.path(self.data, "cert.pem"), acmefiles.path(self.data, "key.pem")))
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        self.assertEqual(acme_service.installed_pair(self.cfg, self.loop.time()), (cert, key))
        state = acmefiles.read_state(self.data)
        with open(cert, "rb") as f:
            info = x509.read_certificate(der.pem_block(f.read(), "CERTIFICATE")[1])
        self.assertAlmostEqual(state["next_attempt"], acme_service.renew_at(info), delta=1)
        self.assertEqual(state["failures"], 0)
        lines = acme_service.describe(self.cfg, self.loop.time())
        self.assertIn("names mail.example.org, mta-sts.example.org", lines)
        self.assertTrue(any(line.startswith("valid ") for line in lines), lines)
        self.assertTrue(any(line.startswith("next attempt 20") for line in lines), lines)
        self.assertIn("certificate names mail.example.org, mta-sts.example.org", self.cli("status"))
        self.assertIn("no server is running", self.cli("renew"))
        self.assertIn("next attempt now (asked for by acme renew", self.cli("status"))
        acmefiles.write_state(self.data, state)
        # a second check finds nothing due: no second order
        orders = self.ca.requests.count(("POST", "/order"))
        self.loop.call_soon_threadsafe(self.service.check)
        wait_for(lambda: not self.service._running, "the check")
        self.assertEqual(self.ca.requests.count(("POST", "/order")), orders)

    def cli(self, action):
        """`mailsrv.py acme ACTION` with this test's configuration, its output."""
        status, out = self.run_cli(acme_settings(**self.settings), "acme", action)
        self.assertEqual(status, 0)
        return out

    def test_first_account_key_is_p256_and_kept(self):
        os.unlink(acmefiles.path(self.data, acmefiles.ACCOUNT_KEY))
        self.loop.call_soon_threadsafe(self.service.start)
        wait_for(lambda: self.installed, "the certificate installed", lambda: self.service.last_result)
        pem = acmefiles.read(self.data, acmefiles.ACCOUNT_KEY)
        self.assertEqual(os.stat(acmefiles.path(self.data, acmefiles.ACCOUNT_KEY)).st_mode & 0o777, 0o600)
        key = acme_service.load_account_key(pem, "account-key.pem")
        self.assertIsInstance(key, p256.P256PrivateKey)
        self.assertEqual(list(self.ca.accounts.values()), [key.public])

    def test_renews_at_two_thirds_of_the_lifetime(self):
        self.ca.now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=61)
        self.ca.days = 90           # started 61 days ago (less the backdating hour): past day 60
        self.loop.call_soon_threadsafe(self.service.start)
        wait_for(lambda: len(self.installed) >= 2, "a renewal right after the first, old, certificate")

    def test_failure_backs_off_doubling_and_logs_one_line(self):
        self.ca.down = True
        self.service.backoff_first = 0.2
        with self.assertLogs("mailsrv.acme", logging.WARNING) as logs:
            self.loop.call_soon_threadsafe(self.service.start)
            wait_for(lambda: acmefiles.read_state(self.data).get("failures", 0) >= 2, "two failed attempts")
        self.loop.call_soon_threadsafe(self.service.close)
        first = logs.output[0]
        self.assertIn("https://ca.test/dir: ", first)
        self.assertIn("refused", first)
        self.assertIn("attempt 1 failed, next in 0 s", first)
        self.assertNotIn("\n", first)
        self.assertEqual(acme_service.backoff(1), 600)
        self.assertEqual(acme_service.backoff(2), 1200)
        self.assertEqual(acme_service.backoff(20), 86400)
        state = acmefiles.read_state(self.data)
        self.assertIn("refused", state["last_error"])
        lines = acme_service.describe(self.cfg, self.loop.time())
        self.assertTrue(any("failed attempts" in line and "refused" in line for line in lines), lines)
        self.assertEqual(self.installed, [])

    def test_backoff_survives_a_restart(self):
        acmefiles.write_state(self.data, {"failures": 3, "next_attempt": self.loop.time() + 3600})
        self.loop.call_soon_threadsafe(self.service.start)
        wait_for(lambda: self.service._timer is not None and not self.service._running, "the first check")
        self.assertEqual(self.ca.requests, [])
        acme_service.request_renewal(self.data)          # `mailsrv.py acme renew`, then SIGHUP
        self.loop.call_soon_threadsafe(self.service.reload)
        wait_for(lambda: acmefiles.read_state(self.data).get("failures") == 0, "the renewal asked for")
        self.assertEqual(len(self.installed), 1)
        self.assertNotIn("renew", acmefiles.read_state(self.data))


def alpn_fetch(port):
    """What a CA's tls-alpn-01 check sees (RFC 8737 §3): a handshake on ``port`` with SNI
    = the name and ALPN acme-tls/1; the acmeIdentifier value of the certificate (the
    32 octets), None when the handshake or the certificate is not as required."""
    import socket
    import ssl

    def fetch(name, token):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.set_alpn_protocols(["acme-tls/1"])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname=name) as tls:
                    if tls.selected_alpn_protocol() != "acme-tls/1":
                        return None
                    cert = tls.getpeercert(binary_form=True)
        except (OSError, ssl.SSLError):
            return None
        if x509.read_certificate(cert).dns_names != (name,):
            return None
        tbs = der.children(der.children(der.read_all(cert))[0])
        for ext in der.children(der.read_all(tbs[-1].value)):
            fields = der.children(ext)
            if der.to_oid(fields[0]) == alpn_cert.ID_PE_ACME_IDENTIFIER and fields[1].value == b"\xff":
                return der.read_all(fields[2].value).value
        return None
    return fetch


class TlsAlpnServiceTest(AcmeLoopCase):
    """tls-alpn-01 (RFC 8737): the service's own TLS listener answers the fake CA's handshakes."""
    settings = {"acme_names": "mta-sts.example.org", "acme_challenge": "tls-alpn-01", "acme_tls_port": "0"}

    def prepare(self):
        self.service._listen_alpn()
        port = self.service.alpn_addresses[0][1]
        self.ca = FakeCA(CERT_KEY, alpn_fetch(port))
        self.service._https = self.ca

    def test_challenge_answered_by_the_alpn_listener(self):
        self.loop.call_soon_threadsafe(lambda: self.service._schedule(0))
        wait_for(lambda: self.service.last_result, "the attempt")
        self.assertEqual(self.service.last_result, "obtained")
        self.assertEqual(self.service.alpn_certs, {})            # withdrawn once validated
        self.assertEqual(len(self.installed), 1)

    def test_unknown_name_gets_no_certificate(self):
        self.assertIsNone(alpn_fetch(self.service.alpn_addresses[0][1])("other.example.org", "t"))

    def test_server_certificate_swap_leaves_the_alpn_listener_alone(self):
        from protocols.loop_tls import server_tls_context
        self.assertEqual(self.loop.set_tls_context(server_tls_context(*selfsigned_pair())), 0)


def selfsigned_pair():
    from protocols import selfsigned
    return selfsigned.self_signed("localhost", None, lambda: datetime.datetime.now().timestamp(), key_type="ed25519")


class ConfigTest(unittest.TestCase):
    def test_acme_needs_the_http_listener_and_no_tls_cert(self):
        base = {"hostname": "mail.example.org", "acme_email": "a@example.org"}
        with self.assertRaisesRegex(ConfigError, "http_port"):
            Config(base)
        with self.assertRaisesRegex(ConfigError, "tls_cert"):
            Config(dict(base, http_port="80", tls_cert="/c", tls_key="/k"))
        with self.assertRaisesRegex(ConfigError, "acme_challenge must be http-01 or tls-alpn-01"):
            Config(dict(base, http_port="80", acme_challenge="dns-01"))
        self.assertEqual(Config(dict(base, acme_challenge="tls-alpn-01")).acme_tls_port, 443)   # no HTTP needed
        self.assertEqual(Config(dict(base, http_port="80")).acme_directory, acme_service.LETS_ENCRYPT)


class OfflineQueueTest(unittest.TestCase):
    def test_queue_command_without_a_server_starts_no_acme(self):
        """`mailsrv.py queue flush` with no server runs backend.start() only: no order, no listener."""
        import mailsrv
        tmp = tempfile.mkdtemp(prefix="mailsrv-acme-")
        self.addCleanup(shutil.rmtree, tmp, True)
        server = mailsrv.MailServer(Config({"data_dir": tmp, "hostname": "mail.example.org", "http_port": "0",
                                            "acme_email": "a@example.org", "acme_challenge": "tls-alpn-01",
                                            "acme_tls_port": "0"}))
        server.backend.start()
        try:
            self.assertIsNone(server.backend.acme._timer)
            self.assertEqual(server.backend.acme.alpn_addresses, [])
        finally:
            server.backend.close()
            server.loop.close(wait=True)


class Http01ListenerTest(ServerTestCase):
    """The HTTP listener answers /.well-known/acme-challenge/<token> (RFC 8555 §8.3)."""
    tls = False
    extra_config = {"http_port": "0", "acme_email": "admin@example.test",
                    "acme_directory": "http://127.0.0.1:9/dir"}        # nothing listens: it fails and backs off

    def get(self, path, host="mx.example.test"):
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["http"], timeout=10)
        try:
            conn.request("GET", path, headers={"Host": host})
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type"), resp.read()
        finally:
            conn.close()

    def test_published_token_is_served_without_login(self):
        # the service's first check (which fails: nothing at acme_directory) sweeps the answers
        # folder first; a token written meanwhile could go with it
        wait_for(lambda: self.server.backend.acme.last_result, "the ACME service's first check to end")
        acmefiles.write_token(self.server.config.data_dir, "tok-1_A", "tok-1_A.thumb")    # as worker 0 publishes it
        wait_for(lambda: self.get("/.well-known/acme-challenge/tok-1_A")[0] == 200, "the token served")
        status, ctype, body = self.get("/.well-known/acme-challenge/tok-1_A", host="mx.example.test:80")
        self.assertEqual((status, ctype, body), (200, "application/octet-stream", b"tok-1_A.thumb"))
        acmefiles.remove_token(self.server.config.data_dir, "tok-1_A")                      # withdrawn
        self.assertEqual(self.get("/.well-known/acme-challenge/tok-1_A")[0], 404)

    def test_unknown_token_is_404(self):
        self.assertEqual(self.get("/.well-known/acme-challenge/nope")[0], 404)
        self.assertEqual(self.get("/.well-known/acme-challenge/a.b")[0], 404)


if __name__ == "__main__":
    unittest.main()
