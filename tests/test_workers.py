"""`workers = N` (issue 14, "Many processes on one machine"; protocols/supervisor.py).

`python3 mailsrv.py` with workers = 2 runs as a supervisor that binds the
listeners once and forks two serving processes on them:

- connections from many 127.0.0.x addresses are served by both (a Maildir
  file name carries the pid of the process that wrote it: ``P<pid>``), and
  every accepted message is delivered once;
- a worker killed with SIGKILL is started again, and no connection is
  refused meanwhile;
- SIGHUP to the supervisor reaches every worker (each reloads; a live key
  changed in the file shows on every connection);
- SIGTERM stops them all, exit status 0, no process left;
- workers = 1 stays one process;
- a worker takes one connection per readiness event of the shared sockets,
  so a burst is spread over the workers;
- the serve path sets the GIL's switch interval and the descriptor limit;
- bad values are refused with one line naming the key.
"""

import os
import re
import select
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

from protocols import supervisor
from protocols.config import Config, ConfigError
from store.queue import Queue
from tests.helpers import add_user_cli, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALICE = "alice@example.test"
WAIT = 30
HAS_PROC = os.path.isdir("/proc/self")


def children(pid):
    """The pids whose parent is ``pid`` (Linux /proc)."""
    out = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, "rb") as f:
                    fields = f.read().rpartition(b")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != b"Z":
                out.add(int(name))
    return out


def ended(pid):
    """Gone, or a zombie waiting for whoever reaps it."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] == b"Z"
    except OSError:
        return True


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Server:
    """`python3 mailsrv.py --config FILE` with the SMTP listener alone, on a free port."""

    def __init__(self, top, workers, extra=""):
        self.data, self.log = os.path.join(top, "data"), os.path.join(top, "mailsrv.log")
        self.conf = os.path.join(top, "mailsrv.ini")
        self.write_config(workers, extra)
        self.proc = subprocess.Popen([sys.executable, "mailsrv.py", "--config", self.conf], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = b""
        deadline = time.monotonic() + WAIT
        while b"running as pid" not in self.out:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.proc.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                self.stop(signal.SIGKILL)
                raise AssertionError("mailsrv did not start; printed %r, log %s" % (self.out, self.log_text()))
            self.out += chunk
        self.port = int(re.search(rb"^listening smtp 127\.0\.0\.1:(\d+)$", self.out, re.M).group(1))

    def write_config(self, workers, extra=""):
        with open(self.conf, "w") as f:
            f.write("[mailsrv]\ndata_dir = %s\nworkers = %s\nhostname = mx.example.test\ndomains = example.test\n"
                    "smtp_port = 0\nsubmission_port = off\nsmtps_port = off\npop3_port = off\npop3s_port = off\n"
                    "imap_port = off\nimaps_port = off\nlog_level = INFO\nlog_target = file:%s\n%s"
                    % (self.data, workers, self.log, extra))

    def log_text(self):
        try:
            with open(self.log, encoding="utf-8") as f:
                return f.read()
        except OSError:
            return ""

    def workers(self):
        return children(self.proc.pid)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(WAIT)
        finally:
            self.proc.stdout.close()
            self.proc.stderr.close()


def send(port, tag, source="127.0.0.1"):
    with smtplib.SMTP("127.0.0.1", port, timeout=WAIT, source_address=(source, 0)) as s:
        s.sendmail("bob@elsewhere.test", [ALICE], ("Subject: %s\r\n\r\nhi\r\n" % tag).encode())


@unittest.skipUnless(HAS_PROC, "reads the process tree from /proc")
class WorkersTest(unittest.TestCase):
    def setUp(self):
        self.top = tempfile.mkdtemp(prefix="mailsrv-workers-")
        self.addCleanup(shutil.rmtree, self.top, True)
        add_user_cli(os.path.join(self.top, "data"), ALICE)

    def start(self, workers=2, extra=""):
        server = Server(self.top, workers, extra)
        self.addCleanup(server.stop, signal.SIGKILL)
        return server

    def two_workers(self, server):
        return wait_for(lambda: len(server.workers()) == 2 and server.workers(), "two workers",
                        server.log_text, WAIT)

    def stored(self):
        """(subject, writer's pid) of every message in alice's Maildir."""
        inbox, out = os.path.join(self.top, "data", "mail", "example.test", "alice"), []
        for sub in ("new", "cur"):
            for name in os.listdir(os.path.join(inbox, sub)):
                with open(os.path.join(inbox, sub, name), "rb") as f:
                    subject = re.search(rb"^Subject: (\S+)", f.read(), re.M).group(1).decode()
                out.append((subject, int(re.search(r"P(\d+)Q", name).group(1))))
        return out

    def send_batch(self, port, tags):
        """One connection per tag at once, each from its own 127.0.0.x address."""
        errors = []

        def one(i, tag):
            try:
                send(port, tag, "127.0.0.%d" % (2 + i % 200))
            except Exception as exc:        # reported below
                errors.append("%s: %r" % (tag, exc))
        threads = [threading.Thread(target=one, args=(i, tag)) for i, tag in enumerate(tags)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        self.assertEqual(errors, [])

    def test_two_workers_serve_connections_and_deliver_each_message_once(self):
        server = self.start()
        workers = self.two_workers(server)
        self.assertNotIn(server.proc.pid, workers)
        sent = []
        for batch in range(10):             # until both have written mail (almost always the first batch)
            tags = ["b%d-m%d" % (batch, i) for i in range(16)]
            self.send_batch(server.port, tags)
            sent += tags
            if len({pid for _s, pid in self.stored()}) >= 2:
                break
        stored = self.stored()
        self.assertEqual(sorted(s for s, _p in stored), sorted(sent))       # each exactly once
        self.assertEqual({pid for _s, pid in stored}, workers)              # both, and only the workers
        self.assertEqual(server.stop(), 0)

    def test_a_killed_worker_is_started_again_and_no_connection_is_refused(self):
        server = self.start()
        first = self.two_workers(server)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        served, errors, stop = [], [], threading.Event()

        def client():
            i = 0
            while not stop.is_set():
                try:
                    send(server.port, "k%d" % i, "127.0.0.%d" % (2 + i % 200))
                    served.append(i)
                except Exception as exc:        # a refused connection would show here
                    errors.append(repr(exc))
                i += 1
        t = threading.Thread(target=client)
        t.start()
        try:
            again = wait_for(lambda: len(server.workers() - first) == 1 and server.workers(),
                             "a new worker in place of %d" % victim, server.log_text, WAIT)
            wait_for(lambda: len(served) >= 5, "mail served meanwhile", server.log_text, WAIT)
        finally:
            stop.set()
            t.join(WAIT)
        self.assertEqual(errors, [])
        self.assertEqual(len(again), 2)
        self.assertNotIn(victim, again)
        self.assertRegex(server.log_text(), r"worker \d \(pid %d\) killed by signal 9 \(SIGKILL\)" % victim)
        self.assertEqual(len(self.stored()), len(served))
        self.assertEqual(server.stop(), 0)

    def test_sighup_reaches_every_worker(self):
        server = self.start()
        workers = self.two_workers(server)
        with smtplib.SMTP("127.0.0.1", server.port, timeout=WAIT) as s:
            self.assertEqual(s.ehlo()[0], 250)
            self.assertEqual(s.esmtp_features["size"], "26214400")
        server.write_config(2, "max_message_size = 12345\n")
        os.kill(server.proc.pid, signal.SIGHUP)
        for pid in workers:     # each worker says it reloaded, under its own pid
            wait_for(lambda: re.search(r"\[%d\]: reloaded users" % pid, server.log_text()),
                     "worker %d reloading" % pid, server.log_text, WAIT)
        for i in range(12):     # whichever worker accepts, the new size
            with smtplib.SMTP("127.0.0.1", server.port, timeout=WAIT, source_address=("127.0.0.%d" % (2 + i), 0)) as s:
                s.ehlo()
                self.assertEqual(s.esmtp_features["size"], "12345")
        self.assertEqual(server.workers(), workers)
        self.assertEqual(server.stop(), 0)

    def test_sigterm_stops_every_process_with_exit_0(self):
        server = self.start()
        workers = self.two_workers(server)
        self.assertEqual(server.stop(signal.SIGTERM), 0)
        self.assertEqual([pid for pid in workers if alive(pid)], [])
        log = server.log_text()
        for pid in workers:
            self.assertIn("(pid %d) exited with status 0" % pid, log)
        self.assertFalse(os.path.exists(os.path.join(self.top, "data", "mailsrv.pid")))

    def test_workers_end_when_the_supervisor_is_killed(self):
        server = self.start()
        workers = self.two_workers(server)
        self.assertNotEqual(server.stop(signal.SIGKILL), 0)
        wait_for(lambda: all(ended(pid) for pid in workers), "the workers of a killed supervisor ending",
                 server.log_text, WAIT)
        self.assertEqual(server.log_text().count("stopped"), 2)      # each shut down as on SIGTERM

    def test_pid_file_holds_the_supervisor(self):
        server = self.start()
        self.two_workers(server)
        with open(os.path.join(self.top, "data", "mailsrv.pid")) as f:
            self.assertEqual(int(f.read()), server.proc.pid)
        self.assertIn(b"running as pid %d:" % server.proc.pid, server.out)
        self.assertEqual(server.out.count(b"listening smtp"), 1)       # the start-up lines, once
        self.assertEqual(server.stop(), 0)

    def test_a_worker_started_again_serves_tls_when_the_certificate_file_went_bad(self):
        certs = os.path.join(ROOT, "tests", "certs")
        cert, key = os.path.join(self.top, "cert.pem"), os.path.join(self.top, "key.pem")
        shutil.copyfile(os.path.join(certs, "cert.pem"), cert)
        shutil.copyfile(os.path.join(certs, "key.pem"), key)
        server = self.start(extra="tls_cert = %s\ntls_key = %s\n" % (cert, key))
        first = self.two_workers(server)
        with open(cert, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        os.kill(min(first), signal.SIGKILL)
        [new] = wait_for(lambda: len(server.workers() - first) == 1 and server.workers() - first,
                         "a worker in place of the killed one", server.log_text, WAIT)
        # it starts on the supervisor's context and keeps it when reading the bad file fails
        wait_for(lambda: re.search(r"\[%d\]: .*TLS certificate not reloaded" % new, server.log_text()),
                 "the new worker to refuse the bad file and keep serving", server.log_text, WAIT)
        for i in range(12):     # whichever worker accepts: STARTTLS with the certificate loaded at start
            with smtplib.SMTP("127.0.0.1", server.port, timeout=WAIT, source_address=("127.0.0.%d" % (2 + i), 0)) as s:
                s.starttls(context=ssl._create_unverified_context())
                self.assertEqual(s.noop()[0], 250)
        self.assertTrue(alive(new))
        self.assertNotIn("exited with status 2", server.log_text())
        self.assertEqual(server.stop(), 0)

    def test_workers_1_is_one_process(self):
        server = self.start(workers=1)
        send(server.port, "single")
        self.assertEqual(self.stored(), [("single", server.proc.pid)])
        self.assertEqual(server.workers(), set())
        self.assertEqual(server.stop(), 0)


class WorkersValueTest(unittest.TestCase):
    def cfg(self, **values):
        return Config(dict(values), names=(lambda: "mx.example.test", lambda: "mx"))

    def test_auto_is_the_number_of_cores(self):
        self.assertEqual(supervisor.worker_count(self.cfg(workers="auto"), cpu_count=lambda: 3), 3)
        self.assertEqual(supervisor.worker_count(self.cfg(workers="auto"), cpu_count=lambda: None), 1)
        self.assertEqual(supervisor.worker_count(self.cfg(workers="4")), 4)
        self.assertEqual(supervisor.worker_count(self.cfg(), cpu_count=lambda: 3), 3)     # the default: auto

    def test_the_start_up_lines_come_once_the_supervisor_handles_signals(self):
        # a script may send SIGHUP as soon as it reads them: never the default action (the end)
        seen = []
        sup = supervisor.Supervisor(0, lambda index, again: 0, 1.0)
        self.assertEqual(sup.run(ready=lambda: seen.append(signal.getsignal(signal.SIGHUP))), 0)
        self.assertEqual(len(seen), 1)
        self.assertNotIn(seen[0], (signal.SIG_DFL, signal.SIG_IGN))

    def test_the_command_line_flag_sets_the_key(self):
        import mailsrv
        from protocols.config import load_config
        args = mailsrv._admin_parser().parse_args(["--workers", "3", "--data", "/nonexistent"])
        self.assertEqual(supervisor.worker_count(load_config(args)), 3)

    def test_bad_values_name_the_key(self):
        for bad in ("0", "-1", "two", "1.5", "", "1000"):
            with self.assertRaises(ConfigError) as e:
                self.cfg(workers=bad)
            self.assertIn("workers", str(e.exception))
            self.assertIn(repr(bad), str(e.exception))

    def test_the_test_server_is_one_process_and_acme_has_workers(self):
        self.assertEqual(supervisor.worker_count(self.cfg(workers="4", catch_all=True)), 1)
        # ACME runs in worker 0 and the others follow (tests/test_acme_workers.py, test_interop_acme.py)
        self.assertEqual(supervisor.worker_count(self.cfg(workers="2", acme_email="a@example.test", http_port="0")), 2)

    def test_bad_value_on_the_command_line_is_one_line(self):
        with tempfile.TemporaryDirectory() as top:
            conf = os.path.join(top, "c.ini")
            with open(conf, "w") as f:
                f.write("[mailsrv]\nworkers = many\n")
            p = subprocess.run([sys.executable, "mailsrv.py", "--config", conf, "--data", top], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=WAIT)
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stderr.decode().splitlines(), ["mailsrv: bad value for workers: 'many' "
                                                          "(auto, or a number of processes from 1 to 999)"])

    def test_a_worker_takes_one_connection_per_event_of_the_shared_sockets(self):
        # what MailServer.bind asks of the loop in a worker (protocols/loop.py listen's ``shared``)
        import mailsrv
        top = tempfile.mkdtemp(prefix="mailsrv-workers-")
        self.addCleanup(shutil.rmtree, top, True)
        cfg = Config({"data_dir": top, "hostname": "mx.example.test", "domains": "example.test",
                      "smtp_port": "0", "submission_port": "off", "smtps_port": "off", "pop3_port": "off",
                      "pop3s_port": "off", "imap_port": "off", "imaps_port": "off", "tls_self_signed": "no"})
        sockets = supervisor.bind_listeners(cfg, mailsrv.LISTENERS, False)
        self.addCleanup(supervisor.close_all, sockets)
        server = mailsrv.MailServer(cfg)
        server.sockets, server.shared_counts = sockets, (0, supervisor.shared_counts(cfg, 2, sockets))
        server.bind()
        self.addCleanup(server.loop.close, True)
        self.addCleanup(server.backend.close)
        (address,) = [s.getsockname() for s in sockets.values()]
        for _ in range(3):
            self.addCleanup(socket.create_connection(address, timeout=WAIT).close)
        server.loop.call_soon(server.loop.stop)
        server.loop.run()                   # one round: select, its callbacks, the stop
        self.assertEqual(server.loop.connection_count, 1)     # two left for the sibling
        # and its logins in flight count in the table's auth block (tests/test_siblings.py)
        self.assertIsNotNone(server.backend.auth._inflight)

    def test_the_serve_path_sets_the_switch_interval_and_the_descriptor_limit(self):
        with tempfile.TemporaryDirectory() as top:
            conf = os.path.join(top, "c.ini")
            with open(conf, "w") as f:
                f.write("[mailsrv]\ndata_dir = %s\nworkers = 1\n" % top)
            probe = ("import resource, sys, mailsrv\n"
                     "def serve(*a):\n"
                     "    print(sys.getswitchinterval(), *resource.getrlimit(resource.RLIMIT_NOFILE),\n"
                     "          resource.RLIM_INFINITY)\n"
                     "    return 0\n"
                     "mailsrv.serve_processes = serve\n"
                     "sys.exit(mailsrv.main(['--config', %r]))\n" % conf)
            p = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=WAIT)
        self.assertEqual(p.returncode, 0, p.stderr)
        interval, soft, hard, infinity = p.stdout.split()
        self.assertEqual(float(interval), supervisor.SWITCH_INTERVAL)
        self.assertEqual(int(soft), 1 << 20 if hard == infinity else int(hard))     # raised to the hard limit

    def test_wait_status_in_words(self):
        self.assertEqual(supervisor.status_text(signal.SIGKILL), "killed by signal 9 (SIGKILL)")
        self.assertEqual(supervisor.status_text(2 << 8), "exited with status 2")


class QueueRequestsOnceTest(unittest.TestCase):
    def test_a_request_another_process_took_is_not_taken_again(self):
        """SIGUSR1 reaches every worker: each queue request is applied by the one that removed it."""
        with tempfile.TemporaryDirectory() as data:
            queue = Queue(data)
            queue.request("flush")
            real = os.listdir

            def listed_then_taken(path):      # a sibling removes it between our listing and our unlink
                names = real(path)
                for name in names:
                    os.unlink(os.path.join(path, name))
                return names
            with mock.patch("store.queue.os.listdir", listed_then_taken):
                self.assertEqual(queue.take_requests(), [])
            queue.request("flush")
            self.assertEqual(queue.take_requests(), [("flush", "")])
            self.assertEqual(queue.take_requests(), [])


class TlsRptCountsTest(unittest.TestCase):
    def test_a_sibling_process_holding_the_counts_makes_an_addition_wait(self):
        """Every worker counts its TLS sessions into one day file: each read-modify-write whole."""
        import fcntl
        from store.stscache import TlsRptStore
        with tempfile.TemporaryDirectory() as data:
            store = TlsRptStore(data)
            store.add("2026-01-02", {"example.org": {"success": 1}})
            fd = os.open(os.path.join(data, "tls-rpt", "lock"), os.O_RDWR)      # as another process would
            fcntl.flock(fd, fcntl.LOCK_EX)
            adding = threading.Thread(target=store.add, args=("2026-01-02", {"example.org": {"success": 2}}))
            adding.start()
            adding.join(0.5)
            self.assertTrue(adding.is_alive())      # waits for the other process's write
            os.close(fd)
            adding.join(WAIT)
            self.assertEqual(store.day("2026-01-02")["example.org"]["success"], 3)


if __name__ == "__main__":
    unittest.main()
