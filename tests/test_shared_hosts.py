"""Two mailsrv "hosts" on one data folder (issue 14, shared_data): servers on
127.0.0.2 and 127.0.0.3 with different host names share DATA as two machines
share an NFS export.

- 32 senders spread over both for 20 seconds (MAILSRV_SHARED_SECONDS), while
  an IMAP client of each host keeps selecting INBOX: every accepted message
  is in the mailbox exactly once, with unique UIDs, the same through both.
- 200 queue entries for a relay that is down, both hosts running their queue:
  when it comes back, exactly one delivery per entry.
- one host killed with SIGKILL in the middle of its deliveries: the other
  delivers its entries once their leases (queue_lease) run out.
"""

import imaplib
import os
import re
import select
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from tests.helpers import wait_for
from tests.smtpsink import SmtpSink

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALICE, ALICE_PW = "alice@example.test", "alice-secret"
WAIT = 30
SECONDS = float(os.environ.get("MAILSRV_SHARED_SECONDS", "20"))
SENDERS = 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Host:
    """`python3 mailsrv.py` on one loopback address, shared_data on."""

    def __init__(self, data, address, name, relay_port):
        conf = os.path.join(data, "..", "%s.ini" % name)
        with open(conf, "w") as f:
            f.write("[mailsrv]\nshared_data = yes\nqueue_lease = 3\nqueue_interval = 0.5\n"
                    "retry_schedule = 1\nrelayhost = 127.0.0.1:%d\nrelay_tls = never\n" % relay_port)
        self.proc = subprocess.Popen(
            [sys.executable, "mailsrv.py", "--config", conf, "--data", data, "--listen", address,
             "--hostname", name, "--domain", "example.test", "--log-level", "WARNING",
             "--smtp-port", "0", "--imap-port", "0", "--submission-port", "off", "--smtps-port", "off",
             "--pop3-port", "off", "--pop3s-port", "off", "--imaps-port", "off", "--trusted-networks", "127.0.0.0/8"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.address, self.ports = address, {}
        deadline, buf = time.monotonic() + WAIT, b""
        while "imap" not in self.ports:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.proc.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                self.kill()
                raise AssertionError("%s did not start; printed %r %r" % (name, buf, self.proc.stderr.read()))
            buf += chunk
            for m in re.finditer(rb"^listening (\w+) \S+:(\d+)$", buf, re.M):
                self.ports[m.group(1).decode()] = int(m.group(2))

    def kill(self, sig=signal.SIGKILL):
        """SIGKILL: every process of the host at once (its supervisor and workers: a
        crash); SIGTERM: the supervisor, which stops its workers gracefully."""
        try:
            if sig == signal.SIGKILL:
                os.killpg(self.proc.pid, sig)
            elif self.proc.poll() is None:
                self.proc.send_signal(sig)
        except ProcessLookupError:
            pass
        self.proc.wait(WAIT)
        self.proc.stdout.close()
        self.proc.stderr.close()


class SharedHostsTest(unittest.TestCase):
    def setUp(self):
        self.top = tempfile.mkdtemp(prefix="mailsrv-shared-")
        self.addCleanup(shutil.rmtree, self.top, True)
        self.data = os.path.join(self.top, "data")
        p = subprocess.run([sys.executable, "mailsrv.py", "user", "add", ALICE, "--data", self.data], cwd=ROOT,
                           input=ALICE_PW.encode() + b"\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=WAIT)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.relay_port = free_port()
        self.hosts = [self.start("127.0.0.2", "mx1.example.test"), self.start("127.0.0.3", "mx2.example.test")]

    def start(self, address, name):
        host = Host(self.data, address, name, self.relay_port)
        self.addCleanup(host.kill, signal.SIGTERM)
        return host

    def queue_entries(self):
        return [n for n in os.listdir(os.path.join(self.data, "queue")) if n.endswith(".env")]

    # -- mail in, read through both ------------------------------------------
    def test_senders_on_both_hosts_every_message_once_with_unique_uids(self):
        accepted, stop = [], threading.Event()
        errors = []

        def sender(n):
            host = self.hosts[n % 2]
            try:
                with smtplib.SMTP(host.address, host.ports["smtp"], timeout=WAIT) as s:
                    i = 0
                    while not stop.is_set():
                        tag = "s%d-%d" % (n, i)
                        s.sendmail("bob@elsewhere.test", [ALICE], ("Subject: %s\r\n\r\nhi\r\n" % tag).encode())
                        accepted.append(tag)
                        i += 1
            except Exception as exc:       # reported below
                errors.append("sender %d: %r" % (n, exc))

        def reader(host):
            m = imaplib.IMAP4(host.address, host.ports["imap"], timeout=WAIT)
            m.login(ALICE, ALICE_PW)
            while not stop.is_set():       # each SELECT gives UIDs to what arrived meanwhile
                m.select("INBOX")
                m.noop()
            m.logout()
        threads = [threading.Thread(target=sender, args=(n,)) for n in range(SENDERS)]
        threads += [threading.Thread(target=reader, args=(h,)) for h in self.hosts]
        for t in threads:
            t.start()
        time.sleep(SECONDS)                # the load's duration (not synchronisation)
        stop.set()
        for t in threads:
            t.join(WAIT)
        self.assertEqual(errors, [])
        self.assertGreater(len(accepted), SENDERS)
        inbox = os.path.join(self.data, "mail", "example.test", "alice")
        on_disk = []
        for sub in ("new", "cur"):
            for name in os.listdir(os.path.join(inbox, sub)):
                with open(os.path.join(inbox, sub, name), "rb") as f:
                    on_disk.append(re.search(rb"^Subject: (\S+)", f.read(), re.M).group(1).decode())
        self.assertEqual(sorted(on_disk), sorted(accepted))      # each exactly once
        views = []
        for host in self.hosts:
            m = imaplib.IMAP4(host.address, host.ports["imap"], timeout=WAIT)
            m.login(ALICE, ALICE_PW)
            m.select("INBOX")
            typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            self.assertEqual(typ, "OK")
            pairs = {}
            for item in data:
                if isinstance(item, tuple):
                    uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
                    pairs[uid] = item[1].split(b":", 1)[1].strip().decode()
            m.logout()
            views.append(pairs)
        self.assertEqual(views[0], views[1])                    # both hosts serve the same UIDs
        self.assertEqual(sorted(views[0].values()), sorted(accepted))   # unique UIDs, every message

    # -- the queue --------------------------------------------------------------
    def queue_for_remote(self, count):
        for n in range(count):
            host = self.hosts[n % 2]
            with smtplib.SMTP(host.address, host.ports["smtp"], timeout=WAIT) as s:
                s.sendmail(ALICE, ["carol@remote.test"], ("Subject: q%d\r\n\r\nhi\r\n" % n).encode())

    def sink_on_relay_port(self):
        """The relay comes back: a sink on the port both hosts relay to (the
        backlog above both hosts' connection limits together)."""
        sink = SmtpSink(port=self.relay_port, backlog=64)
        self.addCleanup(sink.close)
        return sink

    def subjects(self, sink):
        return sorted(re.search(rb"^(Subject: \S+)", m[2], re.M).group(1).decode() for m in sink.messages)

    def test_a_downed_relay_comes_back_one_delivery_per_entry(self):
        self.queue_for_remote(200)
        wait_for(lambda: len(self.queue_entries()) == 200, "200 entries queued")
        sink = self.sink_on_relay_port()
        wait_for(lambda: not self.queue_entries(), "the queue to empty", timeout=90)
        self.assertEqual(self.subjects(sink), sorted("Subject: q%d" % n for n in range(200)))

    def test_sigkill_mid_delivery_the_other_host_takes_over(self):
        self.queue_for_remote(40)
        wait_for(lambda: len(self.queue_entries()) == 40, "40 entries queued")
        sink = self.sink_on_relay_port()
        sink.gate = threading.Event()      # every delivery holds at MAIL
        wait_for(lambda: sink.connections >= 2, "both hosts delivering")
        self.hosts[0].kill()               # mx1 dies with its deliveries open
        sink.gate.set()
        wait_for(lambda: not self.queue_entries(), "mx2 to deliver mx1's entries too", timeout=90)
        self.assertEqual(self.subjects(sink), sorted("Subject: q%d" % n for n in range(40)))


if __name__ == "__main__":
    unittest.main()
