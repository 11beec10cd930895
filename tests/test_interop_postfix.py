"""Interop: Debian's Postfix (a real, independent MTA) exchanging mail with us on loopback.

A throwaway Postfix instance lives in a temporary directory: its own main.cf
and master.cf (``postfix -c DIR``), queue_directory and data_directory inside
it, smtpd on 127.0.0.1:<free port>, the virtual delivery agent writing
Maildirs for the domain ``pf.test`` under the same directory, and
``transport_maps`` sending mail for our domain ``example.test`` to our smtp
port as ``smtp:[127.0.0.1]:<port>`` (no DNS, RFC 5321 §5.1 does not apply to
a bracketed next hop).  Of /etc/postfix only Debian's shipped files are read
(postfix-files, dynamicmaps.cf, as meta_directory); the system's instance is
never configured, started or stopped.

Cases:
* our relay client (protocols/outbound/relay.py + smtp_client.py, relayhost =
  Postfix) delivers a submitted message into Postfix's Maildir, with STARTTLS
  (RFC 3207) because the instance offers it with the test certificate;
* Postfix's smtp client delivers to our server (STARTTLS too): the message
  lands in our Maildir, our Received: prepended above Postfix's (RFC 5321
  §4.4);
* SMTPUTF8 (RFC 6531) both ways: a UTF-8 envelope sender from Postfix to
  us, a UTF-8 recipient from our relay to Postfix;
* a ~2 MB message with dot-leading lines both ways, byte-exact (Postfix
  stores LF line ends; we store CRLF) — SMTP transparency, RFC 5321 §4.5.2;
* a recipient Postfix refuses at RCPT (550 5.1.1) turns into a DSN
  (RFC 3464) in the sender's mailbox on our side.

Waits are bounded polls of the Maildir.  Skipped, with the reason printed by
`make test`, when Postfix is not installed (Debian: ``postfix`` with
debconf ``postfix/main_mailer_type`` = "No configuration"), when
MAILSRV_SKIP_INTEROP is set, or when not running as root (Postfix's master
must start as root).
"""

import glob
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import tempfile
import unittest

from tests import helpers
from tests.helpers import CERT, KEY, ServerTestCase

POSTFIX = shutil.which("postfix") or ("/usr/sbin/postfix" if os.path.exists("/usr/sbin/postfix") else None)
POSTCONF = shutil.which("postconf") or ("/usr/sbin/postconf" if os.path.exists("/usr/sbin/postconf") else None)


def _skip_reason():
    if os.environ.get("MAILSRV_SKIP_INTEROP"):
        return "MAILSRV_SKIP_INTEROP is set"
    if not POSTFIX or not POSTCONF:
        return "postfix not installed (apt-get install postfix, 'No configuration')"
    if os.geteuid() != 0:
        return "postfix interop needs root (Postfix's master starts as root)"
    return None


SKIP = _skip_reason()
WAIT = 30.0          # bound on every wait (seconds); Postfix delivers in well under one

# master.cf: every service in the foreground of this instance, none chrooted
# (the Debian default chroots smtpd into the system queue directory).
MASTER_CF = """\
{listen}  inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
myhostname = mx.pf.test
mydomain = pf.test
myorigin = pf.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtputf8_enable = yes
biff = no
append_dot_mydomain = no
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
virtual_mailbox_domains = pf.test
virtual_mailbox_base = {dir}/vmail
virtual_mailbox_maps = texthash:{dir}/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
transport_maps = texthash:{dir}/transport
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtp_tls_security_level = may
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtp_tls_loglevel = 1
smtpd_tls_loglevel = 1
"""


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (Postfix binds it itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what, log=lambda: "", timeout=WAIT):
    return helpers.wait_for(predicate, what, log, timeout)


class PostfixInstance:
    """One throwaway Postfix: ``start()``, ``stop()``, ``maildir(local)``."""

    def __init__(self, port: int, our_smtp_port: int):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-postfix-")
        os.chmod(self.dir, 0o755)          # Postfix daemons run as mail_owner / the virtual uid
        self.port = port
        vuser = pwd.getpwnam("nobody")
        self.vmail = os.path.join(self.dir, "vmail")
        os.makedirs(self.vmail)
        os.chown(self.vmail, vuser.pw_uid, vuser.pw_gid)
        os.makedirs(os.path.join(self.dir, "queue"))      # postfix check creates its subdirectories
        owner = pwd.getpwnam("postfix")                     # data_directory belongs to mail_owner
        os.makedirs(os.path.join(self.dir, "data"))
        os.chown(os.path.join(self.dir, "data"), owner.pw_uid, owner.pw_gid)
        self._write("main.cf", MAIN_CF.format(dir=self.dir, uid=vuser.pw_uid, gid=vuser.pw_gid,
                                              cert=CERT, key=KEY))
        self._write("master.cf", MASTER_CF.format(listen="127.0.0.1:%d" % self.port))
        self._write("vmailbox", "user@pf.test pf.test/user/\njörg@pf.test pf.test/joerg/\n")
        self._write("transport", "example.test smtp:[127.0.0.1]:%d\n" % our_smtp_port)
        self.started = False

    def _write(self, name, text):
        with open(os.path.join(self.dir, name), "w", encoding="utf-8") as f:
            f.write(text)

    def run(self, *args, check=True):
        proc = subprocess.run([POSTFIX, "-c", self.dir] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=WAIT, text=True)
        if check and proc.returncode != 0:
            raise AssertionError("postfix %s failed (%d):\n%s\n%s" % (" ".join(args), proc.returncode,
                                                                     proc.stdout, self.log()))
        return proc

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "maillog"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return "(no maillog)"

    def start(self):
        self.run("check")
        self.started = True
        self.run("start")
        wait_for(self._accepting, "postfix smtpd on 127.0.0.1:%d" % self.port, self.log)

    def _accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=WAIT):
                return True
        except OSError:
            return False

    def stop(self):
        """Stop this instance (bounded), then remove its directory."""
        try:
            if self.started:
                self.run("stop", check=False)
                wait_for(lambda: self.run("status", check=False).returncode != 0, "postfix to stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def maildir_files(self, local: str):
        base = os.path.join(self.vmail, "pf.test", local)
        return sorted(glob.glob(os.path.join(base, "new", "*")) + glob.glob(os.path.join(base, "cur", "*")))


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@unittest.skipIf(SKIP, SKIP or "")
class PostfixInterop(ServerTestCase):
    """Our server (TLS on, relayhost = the Postfix instance) and one Postfix."""

    @classmethod
    def setUpClass(cls):
        cls.postfix = None
        # Our smtp port must be known for Postfix's transport map, and Postfix's
        # port for our relayhost: pick Postfix's port first, start us, then Postfix.
        port = free_port()
        cls.extra_config = {"relayhost": "127.0.0.1:%d" % port, "relay_tls": "may"}
        super().setUpClass()
        try:
            cls.postfix = PostfixInstance(port, cls.ports["smtp"])
            cls.postfix.start()
        except BaseException:
            if cls.postfix is not None:
                cls.postfix.stop()
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.postfix is not None:
                cls.postfix.stop()
        finally:
            super().tearDownClass()

    def submit(self, rcpt: str, subject: str, user="alice@example.test", password="alice-secret") -> bytes:
        body = ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.test>\r\n\r\n"
                "Hello Postfix.\r\n.a line with a leading dot\r\n" % (user, rcpt, subject, subject)).encode()
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=WAIT) as s:
            s.starttls()
            s.login(user, password)
            s.sendmail(user, [rcpt], body)
        return body

    def test_our_relay_delivers_into_postfix_maildir(self):
        body = self.submit("user@pf.test", "to-postfix")
        files = wait_for(lambda: [p for p in self.postfix.maildir_files("user")
                                  if b"Subject: to-postfix" in read(p)],
                         "the message in Postfix's Maildir", self.postfix.log)
        stored = read(files[0])
        # Postfix's virtual agent stores LF line ends; it adds its own trace
        # headers (Return-Path, Delivered-To, Received) above ours.
        self.assertIn(b"Return-Path: <alice@example.test>", stored)
        self.assertIn(b"by mx.pf.test (Postfix)", stored)
        self.assertIn(b"from mx.example.test", stored)          # our EHLO name, as Postfix saw it
        self.assertTrue(stored.endswith(body.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")))
        # Our client used STARTTLS (RFC 3207), as Postfix's smtpd logged it.
        self.assertIn("TLS connection established from localhost[127.0.0.1]", self.postfix.log())

    def test_postfix_delivers_to_our_maildir(self):
        self.clear_mailbox("bob@example.test")
        body = (b"From: sender@pf.test\r\nTo: bob@example.test\r\nSubject: from-postfix\r\n"
                b"Message-ID: <from-postfix@pf.test>\r\n\r\nHello mailsrv.\r\n.leading dot\r\n")
        with smtplib.SMTP("127.0.0.1", self.postfix.port, timeout=WAIT) as s:
            s.sendmail("sender@pf.test", ["bob@example.test"], body)
        msgs = wait_for(lambda: self.new_messages("bob@example.test"),
                        "the message in our Maildir", self.postfix.log)
        stored = msgs[0]
        self.assertTrue(stored.startswith(b"Return-Path: <sender@pf.test>\r\n"))
        self.assertIn(b"by mx.pf.test (Postfix)", stored)        # Postfix's Received: survives
        self.assertIn(b"Subject: from-postfix", stored)
        self.assertTrue(stored.endswith(b"\r\n\r\nHello mailsrv.\r\n.leading dot\r\n"))
        # Our Received: comes first and says Postfix used STARTTLS (RFC 3848 "ESMTPS").
        ours = stored.split(b"\r\nReceived: ", 2)[1]
        self.assertIn(b"from mx.pf.test", ours)
        self.assertIn(b"by mx.example.test with ESMTPS", ours)

    def test_smtputf8_from_postfix_to_us(self):
        """RFC 6531: a UTF-8 envelope sender relayed by Postfix with SMTPUTF8."""
        self.clear_mailbox("bob@example.test")
        body = ("From: Jörg <jörg@pf.test>\r\nTo: bob@example.test\r\nSubject: grüße\r\n"
                "Message-ID: <utf8-in@pf.test>\r\n\r\nÄpfel und Bücher.\r\n").encode("utf-8")
        with smtplib.SMTP("127.0.0.1", self.postfix.port, timeout=WAIT) as s:
            s.sendmail("jörg@pf.test", ["bob@example.test"], body, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        msgs = wait_for(lambda: self.new_messages("bob@example.test"),
                        "the UTF-8 message in our Maildir", self.postfix.log)
        stored = msgs[0]
        self.assertTrue(stored.startswith("Return-Path: <jörg@pf.test>\r\n".encode("utf-8")), stored[:80])
        self.assertTrue(stored.endswith(body.split(b"\r\n\r\n", 1)[1]))
        self.assertIn("Subject: grüße".encode("utf-8"), stored)

    def test_smtputf8_from_us_to_postfix(self):
        """RFC 6531: our relay passes SMTPUTF8 on to Postfix for a UTF-8 recipient."""
        body = ("From: alice@example.test\r\nTo: jörg@pf.test\r\nSubject: grüße\r\n"
                "Message-ID: <utf8-out@example.test>\r\n\r\nÄpfel.\r\n").encode("utf-8")
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=WAIT) as s:
            s.starttls()
            s.login("alice@example.test", "alice-secret")
            s.sendmail("alice@example.test", ["jörg@pf.test"], body, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        files = wait_for(lambda: self.postfix.maildir_files("joerg"),
                         "the UTF-8 message in Postfix's Maildir", self.postfix.log)
        stored = read(files[0])
        self.assertIn("Delivered-To: jörg@pf.test".encode("utf-8"), stored)
        self.assertTrue(stored.endswith("Äpfel.\n".encode("utf-8")))

    def big_body(self, tag: str) -> bytes:
        """~2 MB of 76-character lines, every 7th starting with "." (RFC 5321 §4.5.2)."""
        lines = [(("." if i % 7 == 0 else "") + ("%s %07d " % (tag, i)) * 6)[:76] for i in range(27000)]
        return ("\r\n".join(lines) + "\r\n").encode()

    def test_big_message_both_ways_byte_exact(self):
        self.clear_mailbox("bob@example.test")
        body_in = self.big_body("in")
        with smtplib.SMTP("127.0.0.1", self.postfix.port, timeout=WAIT) as s:
            s.sendmail("sender@pf.test", ["bob@example.test"],
                       b"From: sender@pf.test\r\nSubject: big-in\r\n\r\n" + body_in)
        msgs = wait_for(lambda: self.new_messages("bob@example.test"), "the big message in our Maildir",
                        self.postfix.log)
        self.assertTrue(msgs[0].endswith(b"\r\n\r\n" + body_in))

        body_out = self.big_body("out")
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=WAIT) as s:
            s.login("alice@example.test", "alice-secret")
            s.sendmail("alice@example.test", ["user@pf.test"],
                       b"From: alice@example.test\r\nSubject: big-out\r\n\r\n" + body_out)
        files = wait_for(lambda: [p for p in self.postfix.maildir_files("user") if b"Subject: big-out" in read(p)],
                         "the big message in Postfix's Maildir", self.postfix.log)
        self.assertTrue(read(files[0]).endswith(b"\n\n" + body_out.replace(b"\r\n", b"\n")))

    def test_postfix_refusal_becomes_a_bounce_in_our_maildir(self):
        self.clear_mailbox("alice@example.test")
        self.submit("nobody-here@pf.test", "to-unknown")
        msgs = wait_for(lambda: [m for m in self.new_messages("alice@example.test")
                                 if b"multipart/report" in m],
                        "a DSN in alice's Maildir", self.postfix.log)
        dsn = msgs[0]
        self.assertIn(b"report-type=delivery-status", dsn)       # RFC 3464 §2
        self.assertIn(b"nobody-here@pf.test", dsn)
        self.assertIn(b"5.1.1", dsn)


if __name__ == "__main__":
    unittest.main()
