"""POP3 benchmark (`make bench`): not a test, prints a table.

    python3 tests/bench_pop3.py [--runs 5]

What is measured, with stdlib poplib on loopback against ``python3 mailsrv.py``
(a subprocess, POP3 its only listener):

* RETR of 1,000 messages of 4 KB (RFC 1939 §7) in one session: user
  ``retr@bench.test``;
* on a 10,000-message maildrop (user ``big@bench.test``): connect + USER/PASS +
  STAT on the *first* login after the messages arrived (the UID index,
  store/folder.py, has to learn all 10,000 keys: its file is removed before
  each run, which is what a fresh arrival looks like to it), then LIST and
  UIDL in that session; and the same on a *later* login (index up to date;
  taken ``MTIME_SLACK_S`` + 0.2 s after the first, because within that window
  store/folder.py distrusts directory mtimes and rescans by design);
* login + STAT on an empty maildrop: mostly the cost of password checking.

Each figure is the median of ``--runs`` runs.  If Dovecot is installed
(/usr/sbin/dovecot), it runs as the peer over the same Maildirs, alternating
with mailsrv run by run (throwaway configuration in a temporary directory,
its index and control files there too, removed before each run for its
"first login"); otherwise the reference numbers quoted in the issue are
printed, labelled as such.

Data: ./bench-data/pop3/, created once with store.deliver.deliver_batch in
batches and reused by later runs (it is never removed before measuring).
Note that the login includes password verification: mailsrv uses scrypt
(store/users.py), the Dovecot peer a {PLAIN} passwd-file.
"""

import argparse
import concurrent.futures
import glob
import os
import platform
import poplib
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from store.deliver import DeliveryJob, deliver_batch  # noqa: E402
from store.maildir import MailStore  # noqa: E402
from store.folder import MTIME_SLACK_S  # noqa: E402
from store.users import UserDB  # noqa: E402
from tests.test_server_cli import ServerProcess  # noqa: E402

DATA = os.path.join(ROOT, "bench-data", "pop3")
HOST = "mx.bench.test"
PASSWORD = "bench-password"
RETR_USER, RETR_COUNT = "retr@bench.test", 1000
BIG_USER, BIG_COUNT = "big@bench.test", 10000
EMPTY_USER = "empty@bench.test"     # its login time is mostly password verification
BATCH = 500
DOVECOT = "/usr/sbin/dovecot"
MAIL_USER = "nobody"      # the owner Dovecot's mail processes run as when we are root
# The numbers for Dovecot (not measured here).
REFERENCE = {"first login+STAT": 0.8, "later login+STAT": 0.02, "LIST": 0.015, "UIDL": 0.03,
             "RETR 1,000 x 4 KB": 0.4}


def body(n):
    head = b"From: a@elsewhere.test\r\nTo: x@bench.test\r\nSubject: bench %d\r\n\r\n" % n
    text = head + (b"x" * 62 + b"\r\n") * 63
    return text + b"y" * (4096 - len(text) - 2) + b"\r\n"   # exactly 4 KB


def stored(store, user):
    base = store.maildir_path(user)
    return len(glob.glob(os.path.join(base, "new", "*")) + glob.glob(os.path.join(base, "cur", "*")))


def populate():
    """Create the users and deliver what is missing (reused between runs)."""
    os.makedirs(DATA, exist_ok=True)
    users = UserDB(DATA)
    store = MailStore(DATA, HOST)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for user, count in ((RETR_USER, RETR_COUNT), (BIG_USER, BIG_COUNT), (EMPTY_USER, 0)):
            if not users.exists(user):
                users.add(user, PASSWORD)
            store.create_mailbox(user)
            have = stored(store, user)
            if have < count:
                print("delivering %d messages to %s ..." % (count - have, user), flush=True)
            while have < count:
                jobs = [DeliveryJob(body(n), "a@elsewhere.test", [user], "B%d" % n)
                        for n in range(have, min(count, have + BATCH))]
                results = deliver_batch(store, jobs, executor=pool)
                if not all(r.ok for r in results):
                    sys.exit("delivery failed: %s" % [r.error for r in results if not r.ok][:3])
                have += len(jobs)
            if have != count:
                sys.exit("%s has %d messages, expected %d: remove %s" % (user, have, count, DATA))
    return store


class Mailsrv:
    name = "mailsrv"

    def __init__(self, store):
        self.store = store

    def reset_first_login(self):
        try:
            os.unlink(os.path.join(self.store.maildir_path(BIG_USER), "dovecot-uidlist"))
        except FileNotFoundError:
            pass

    def start(self):
        self.proc = ServerProcess(DATA, "--hostname", HOST, "--domain", "bench.test",
                                  "--pop3-port", "0", "--smtp-port", "off")
        self.port = self.proc.ports["pop3"]

    def stop(self):
        self.proc.proc.terminate()
        self.proc.proc.wait(30)
        self.proc.kill()


DOVECOT_CONF = """\
protocols = pop3
listen = 127.0.0.1
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 0
mail_location = maildir:~:INDEX={tmp}/index/%d/%n:CONTROL={tmp}/control/%d/%n
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {tmp}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={data}/mail/%d/%n
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""


class Dovecot:
    name = "dovecot"

    def __init__(self, tmp, store):
        self.tmp = tmp
        self.owner = pwd.getpwnam(MAIL_USER) if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        if os.geteuid() == 0:
            self.give_maildirs_to(store, self.owner)
        os.chmod(tmp, 0o755)     # the auth process runs as the dovecot user and reads the passwd-file
        for d in ("run", "state", "index", "control"):
            os.makedirs(os.path.join(tmp, d), exist_ok=True)
        for d in ("index", "control"):
            os.chown(os.path.join(tmp, d), self.owner.pw_uid, self.owner.pw_gid)
        with open(os.path.join(tmp, "passwd"), "w") as f:
            for user in (RETR_USER, BIG_USER, EMPTY_USER):
                f.write("%s:{PLAIN}%s\n" % (user, PASSWORD))

    @staticmethod
    def give_maildirs_to(store, owner):
        """Dovecot refuses uid 0 for mail processes: hand the Maildirs to an
        ordinary user (mailsrv, running as root here, still reads them)."""
        top = os.path.join(DATA, "mail")
        paths = [top, os.path.join(top, "bench.test")]
        for user in (RETR_USER, BIG_USER, EMPTY_USER):
            for base, dirs, files in os.walk(store.maildir_path(user)):
                paths.append(base)
                paths += [os.path.join(base, f) for f in files]
        for path in paths:
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def reset_first_login(self):
        for d in ("index", "control"):
            shutil.rmtree(os.path.join(self.tmp, d, "bench.test", BIG_USER.split("@")[0]), ignore_errors=True)

    def start(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = os.path.join(self.tmp, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(DOVECOT_CONF.format(tmp=self.tmp, data=DATA, port=self.port,
                                        uid=self.owner.pw_uid, gid=self.owner.pw_gid))
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit("dovecot did not start: %s" % self.proc.stderr.read().decode()[-2000:])
                time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.proc.stderr.close()


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def login_stat(port, user):
    """Connect, USER/PASS, STAT."""
    p = poplib.POP3("127.0.0.1", port, timeout=120)
    p.user(user)
    p.pass_(PASSWORD)
    return p, p.stat()


def measure(server):
    """One run against ``server``: the seconds for each row."""
    out = {}
    server.reset_first_login()
    server.start()
    try:
        for label in ("first", "later"):
            if label == "later":
                # a later login comes later: past the window in which the UID index
                # distrusts directory mtimes and rescans (store/folder.py)
                time.sleep(MTIME_SLACK_S + 0.2)
            t, (p, (count, _)) = timed(lambda: login_stat(server.port, BIG_USER))
            assert count == BIG_COUNT, count
            out["%s login+STAT" % label] = t
            t_list, listing = timed(p.list)
            t_uidl, uidls = timed(p.uidl)
            assert len(listing[1]) == len(uidls[1]) == BIG_COUNT
            out.setdefault("LIST (first session)" if label == "first" else "LIST", t_list)
            out.setdefault("UIDL (first session)" if label == "first" else "UIDL", t_uidl)
            p.quit()
        t, (p, (count, _)) = timed(lambda: login_stat(server.port, EMPTY_USER))
        assert count == 0, count
        out["login+STAT, empty drop"] = t
        p.quit()
        p, (count, _) = login_stat(server.port, RETR_USER)
        assert count == RETR_COUNT, count

        def retr_all():
            for n in range(1, RETR_COUNT + 1):
                p.retr(n)
        out["RETR 1,000 x 4 KB"], _ = timed(retr_all)
        p.quit()
    finally:
        server.stop()
    return out


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "nproc %d, %s, Python %s (%s)" % (os.cpu_count() or 0, model, platform.python_version(),
                                              platform.platform())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(machine())
    store = populate()
    servers = [Mailsrv(store)]
    tmp = tempfile.mkdtemp(prefix="mailsrv-bench-dovecot-")
    if os.path.exists(DOVECOT):
        servers.append(Dovecot(tmp, store))
        version = subprocess.run([DOVECOT, "--version"], stdout=subprocess.PIPE, universal_newlines=True).stdout
        print("peer: Dovecot %s (pop3, maildir, no fsync settings changed)" % version.strip())
    results = {s.name: [] for s in servers}
    try:
        for run in range(args.runs):
            for server in (servers if run % 2 == 0 else servers[::-1]):
                results[server.name].append(measure(server))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = list(results["mailsrv"][0])
    names = [s.name for s in servers]
    print("\nPOP3, medians of %d runs (seconds); maildrop %d messages, RETR %d x 4 KB"
          % (args.runs, BIG_COUNT, RETR_COUNT))
    header = "%-24s" % "" + "".join("%14s" % n for n in names)
    if len(servers) == 1:
        header += "%30s" % "Dovecot (issue's reference)"
    print(header)
    for row in rows:
        line = "%-24s" % row + "".join("%14.4f" % statistics.median(r[row] for r in results[n]) for n in names)
        if len(servers) == 1 and row in REFERENCE:
            line += "%30s" % REFERENCE[row]
        print(line)
    print("USER+PASS: mailsrv verifies an scrypt hash (store/users.py), the Dovecot peer a {PLAIN} passwd-file.")
    if len(servers) == 1:
        print("(Dovecot not installed: its column is the issue's reference, not measured here)")


if __name__ == "__main__":
    main()
