"""Shared fixtures for the loopback tests: an in-process server on free ports."""

import contextlib
import glob
import os
import shutil
import ssl
import tempfile
import time
import unittest

from mailsrv import Config, MailServer

HERE = os.path.dirname(os.path.abspath(__file__))
CERT = os.path.join(HERE, "certs", "cert.pem")
KEY = os.path.join(HERE, "certs", "key.pem")
ROOT = os.path.dirname(HERE)


def client_tls():
    """A client TLS context that accepts the self-signed test certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wait_for(predicate, what, log=lambda: "", timeout=20.0):
    """Bounded poll of an effect in another process or thread (a file, a port,
    a queue entry) that sends no event we could wait on; returns the first true
    value of ``predicate()``.  On timeout the failure names ``what`` and shows
    ``log()`` as it is then."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s\n%s" % (timeout, what, log()))
        time.sleep(0.05)      # polling interval, not synchronisation


# scrypt N for password hashes made by tests' setup: 2**10 costs about 3 ms where
# the product's 2**14 (store/passwords.py) costs about 60 ms, a few hundred times a run.
TEST_SCRYPT_N = 2 ** 10


@contextlib.contextmanager
def cheap_scrypt():
    """Password hashes made meanwhile (in this process) use scrypt N=TEST_SCRYPT_N.
    The parameters are stored with each hash, so checking it later, here or in a
    server process, is as cheap; the product's default stays for all else."""
    from store import passwords
    saved, passwords.SCRYPT_N = passwords.SCRYPT_N, TEST_SCRYPT_N
    try:
        yield
    finally:
        passwords.SCRYPT_N = saved


def mailsrv_cli(*argv, stdin=""):
    """`python3 mailsrv.py ARGV` run inside this process (mailsrv.main, the
    same code) for a test's setup: a subprocess costs about half a second of
    CPU, several hundred times a run.  Returns (exit status, stdout, stderr);
    the root logger is left as it was (`user` and `alias` configure it).
    Passwords set this way are hashed with cheap_scrypt()."""
    import io
    import logging
    import sys
    import mailsrv
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    saved_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), cheap_scrypt():
            rc = mailsrv.main(list(argv))
    finally:
        sys.stdin = saved_stdin
        root.setLevel(before[0])
        root.handlers[:] = before[1]
    return rc, out.getvalue(), err.getvalue()


def add_user_cli(data, address, password="pw", *options):
    """`mailsrv.py user add ADDRESS --data DATA` (as mailsrv_cli); fails the test if it fails."""
    rc, out, err = mailsrv_cli("user", "add", address, "--data", data, *options, stdin=password + "\n")
    if rc != 0:
        raise AssertionError(f"user add {address} failed: {err}")
    return out


def free_ports(**overrides):
    values = {k: "0" for k in ("smtp_port", "submission_port", "smtps_port", "pop3_port", "pop3s_port")}
    values.update({"imap_port": "off", "imaps_port": "off"})
    values.update(overrides)
    return values


class ServerTestCase(unittest.TestCase):
    """Starts one MailServer per test class with TLS and two users."""

    tls = True
    extra_config: dict = {}
    users = {"alice@example.test": "alice-secret", "bob@example.test": "bob-secret"}

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="mailsrv-test-")
        values = free_ports(data_dir=cls.tmp, hostname="mx.example.test", domains="example.test",
                            log_level="WARNING", auth_failure_delay="0.05",
                            max_connections_per_ip="500", trusted_networks="none",
                            dns_servers="127.0.0.1:9")
        if cls.tls:
            values.update(tls_cert=CERT, tls_key=KEY)
        else:
            values.update(tls_self_signed="no")     # tls = False: no TLS at all, as the class asks
        values.update(cls.extra_config)
        cls.server = MailServer(Config(values))
        with cheap_scrypt():
            for address, password in cls.users.items():
                cls.server.add_user(address, password)
        cls.server.start()
        cls.ports = cls.server.ports

    @classmethod
    def tearDownClass(cls):
        cls.server.stop(grace=2)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def maildir(self, user, folder=""):
        local, domain = user.split("@")
        return os.path.join(self.tmp, "mail", domain, local, folder)

    def new_messages(self, user):
        """The files in the user's new/ (and cur/), oldest first, as bytes."""
        base = self.maildir(user)
        paths = sorted(glob.glob(os.path.join(base, "new", "*")) + glob.glob(os.path.join(base, "cur", "*")),
                       key=os.path.getmtime)
        return [read_stored(p) for p in paths]

    def clear_mailbox(self, user):
        """Empty new/ and cur/.  The server may still be moving a file from new/ to
        cur/ for a session of the test before (a CI run saw the new/ name gone under
        3.13): a name already gone is skipped, and the folders are listed again
        until a listing finds nothing."""
        base = self.maildir(user)
        for _ in range(10):
            paths = glob.glob(os.path.join(base, "new", "*")) + glob.glob(os.path.join(base, "cur", "*"))
            if not paths:
                return
            for p in paths:
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass


def read_stored(path) -> bytes:
    """A stored message as it goes on the wire: CRLF line ends, whatever the
    stored form (README "Storage layout")."""
    with open(path, "rb") as f:
        return f.read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _take_header(lines, i, name):
    """If lines[i] starts header ``name``, return the index after it (and its folds)."""
    if i < len(lines) and lines[i].lower().startswith(name + b":"):
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    return i


def strip_trace(stored: bytes) -> bytes:
    """The message as the client sent it: drop exactly the trace headers the
    server added in front (Return-Path, an optional Delivered-To, one Received)."""
    lines = stored.split(b"\r\n")
    i = _take_header(lines, 0, b"return-path")
    assert i == 1, "Return-Path must come first"
    i = _take_header(lines, i, b"delivered-to")
    j = _take_header(lines, i, b"received")
    assert j > i, "our Received: must follow"
    return b"\r\n".join(lines[j:])
