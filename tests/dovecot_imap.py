"""Debian's Dovecot 2.3 as a throwaway IMAP server over one Maildir (tests and benchmarks).

    with DovecotImap(maildir, "bob@example.test", "secret") as dovecot:
        imaplib.IMAP4(dovecot.host, dovecot.port).login(...)

``/usr/sbin/dovecot -F -c CONF`` runs as a subprocess of ours (its own
process group) from a configuration written into a work directory: plain
IMAP on a free loopback port (``ssl = no``, ``disable_plaintext_auth = no``:
no TLS to set up), one user in a ``{PLAIN}`` passwd-file (or, with
``password_scheme``, a salted hash made by ``doveadm pw``), base_dir,
state_dir, the index files and the log (``dovecot.log``) all under the work
directory.  The Maildir is Dovecot's Maildir++ (``maildir:DIR``): INBOX is
DIR, folder "a" is DIR/.a; the control files Dovecot shares with mailsrv
(``dovecot-uidlist``, ``dovecot-keywords``) stay in the Maildir, only the
index cache goes to the work directory.

Dovecot refuses to run mail processes as uid 0, so when we are root they run
as ``nobody`` (``MAIL_USER``) and the Maildir must belong to that user:
``own_tree()`` hands a tree over (``chown=True`` does it at start) and
``open_path_to()`` lets that user through the directories above it.  As an
ordinary user, Dovecot's master, login and auth processes run as that user
too (``default_internal_user``, ``default_login_user``, ``default_internal_group``).

The configuration is Dovecot 2.3 syntax (Debian 12); ``skip_reason()`` says
why the fixture cannot run here (Dovecot or dovecot-imapd missing, or not 2.3),
for ``unittest.skipIf`` and for the benchmark's one-line message.  Every
wait is bounded; ``stop()`` ends the server (SIGTERM to the master, which
stops its children; SIGKILL to our process group if it does not go).
"""

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

DOVECOT = "/usr/sbin/dovecot"
IMAP_BINARY = "/usr/lib/dovecot/imap"      # package dovecot-imapd
MAIL_USER = "nobody"       # Dovecot refuses uid 0 for mail processes: they run as this user when we are root
START_TIMEOUT = 30         # seconds for the listener to accept a connection (a cold start on a busy machine: ~1 s)
STOP_TIMEOUT = 15          # seconds for the master to stop its children after SIGTERM

CONF = """\
# written by tests/dovecot_imap.py (Dovecot 2.3 syntax)
protocols = imap
listen = {host}
base_dir = {work}/run
state_dir = {work}/state
log_path = {work}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:{maildir}:INDEX={work}/index
# many connections of one user from one address (the benchmark keeps 1,000 in IDLE)
default_process_limit = {max_connections}
default_client_limit = {client_limit}
{internal_users}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {work}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={work}/home
}}
protocol imap {{
  mail_max_userip_connections = {max_connections}
}}
service imap-login {{
{chroot}
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = {max_connections}
}}
service anvil {{
{chroot}
  client_limit = {client_limit}
}}
{extra}
"""


def dovecot_version():
    """(major, minor) of the installed Dovecot, or None."""
    try:
        out = subprocess.run([DOVECOT, "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             timeout=20).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def version_text():
    """``dovecot --version`` as printed, e.g. "2.3.19.1 (9b53102964)"."""
    try:
        return subprocess.run([DOVECOT, "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=20).stdout.decode().strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def skip_reason():
    """Why DovecotImap cannot run here, or None."""
    if not os.path.exists(DOVECOT):
        return "dovecot missing (apt-get install dovecot-core dovecot-imapd)"
    if not os.path.exists(IMAP_BINARY):
        return "Dovecot's IMAP server missing: %s (apt-get install dovecot-imapd)" % IMAP_BINARY
    version = dovecot_version()
    if version is None:
        return "%s --version printed no version" % DOVECOT
    if version[:2] != (2, 3):
        return "Dovecot %d.%d: tests/dovecot_imap.py writes Dovecot 2.3 configuration syntax" % version
    return None


def mail_owner():
    """The passwd entry Dovecot's mail processes run as (and the Maildir must belong to)."""
    return pwd.getpwnam(MAIL_USER) if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())


def own_tree(path, owner=None):
    """Give every file and directory under ``path`` to the mail user (only as root;
    as an ordinary user everything is ours already)."""
    if os.geteuid() != 0:
        return
    owner = owner or mail_owner()
    for base, _dirs, files in os.walk(path):
        for p in [base] + [os.path.join(base, f) for f in files]:
            try:
                os.lchown(p, owner.pw_uid, owner.pw_gid)
            except FileNotFoundError:      # a file renamed meanwhile by a running server
                pass


def open_path_to(path, top):
    """Let the mail user traverse the directories above ``path`` up to ``top``, ``top``
    included (mkdtemp makes them 0700); nothing above ``top`` is changed."""
    if os.geteuid() != 0:
        return
    top = os.path.abspath(top)
    parent = os.path.dirname(os.path.abspath(path))
    while parent.startswith(top):
        mode = os.stat(parent).st_mode
        if mode & 0o001 == 0:
            os.chmod(parent, (mode & 0o7777) | 0o011)
        parent = os.path.dirname(parent)


def unreachable(path):
    """The first directory above ``path`` the mail user cannot traverse, or None."""
    if os.geteuid() != 0:
        return None
    parent = os.path.dirname(os.path.abspath(path))
    while parent not in ("/", ""):
        if os.path.isdir(parent) and os.stat(parent).st_mode & 0o001 == 0:
            return parent
        parent = os.path.dirname(parent)
    return None


def free_port(host):
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class DovecotImap:
    """One Dovecot 2.3 serving IMAP for one user over ``maildir``.

    ``work``: the directory for configuration, sockets, state, index and log
    (a new temporary one, removed at ``stop()``, when not given).
    ``chown``: as root, give the Maildir to the mail user at start.
    ``extra``: configuration lines appended to the file (2.3 syntax).
    ``password_scheme``: (scheme, rounds) for ``doveadm pw -s SCHEME -r ROUNDS``, the
    salted hash the passwd-file then holds (as a real install keeps it), e.g.
    ("SHA512-CRYPT", 115000); None: ``{PLAIN}``.
    """

    def __init__(self, maildir, user, password, work=None, host="127.0.0.1", chown=True,
                 max_connections=1100, extra="", password_scheme=None):
        self.maildir = os.path.abspath(maildir)
        self.password_scheme = password_scheme
        self.user, self.password, self.host = user, password, host
        self.chown, self.max_connections, self.extra = chown, max_connections, extra
        self.own_work = work is None
        self.work = os.path.abspath(work) if work else tempfile.mkdtemp(prefix="mailsrv-dovecot-imap-")
        self.conf = os.path.join(self.work, "dovecot.conf")
        self.log_path = os.path.join(self.work, "dovecot.log")
        self.owner = mail_owner()
        self.proc = None
        self.port = None

    # -- set-up ---------------------------------------------------------
    def _write_files(self):
        os.makedirs(self.work, exist_ok=True)
        os.chmod(self.work, 0o755)     # the auth process (user dovecot) reads the passwd-file
        for d in ("run", "state", "index", "home"):
            os.makedirs(os.path.join(self.work, d), exist_ok=True)
        for d in ("index", "home"):
            own_tree(os.path.join(self.work, d), self.owner)
        with open(os.path.join(self.work, "passwd"), "w") as f:
            f.write("%s:%s\n" % (self.user, self.password_entry()))
        internal, chroot = "", ""
        if os.geteuid() != 0:
            chroot = "  chroot =      # only root may chroot"
            me = pwd.getpwuid(os.geteuid()).pw_name
            group = grp.getgrgid(os.getegid()).gr_name
            internal = ("default_internal_user = %s\ndefault_login_user = %s\ndefault_internal_group = %s\n"
                        % (me, me, group))
        with open(self.conf, "w") as f:
            f.write(CONF.format(host=self.host, work=self.work, maildir=self.maildir, port=self.port,
                                uid=self.owner.pw_uid, gid=self.owner.pw_gid,
                                max_connections=self.max_connections,
                                client_limit=self.max_connections * 3 + 100,
                                internal_users=internal, chroot=chroot, extra=self.extra))

    def password_entry(self):
        """The passwd-file's password field: ``{PLAIN}...`` or the ``doveadm pw`` hash."""
        if self.password_scheme is None:
            return "{PLAIN}" + self.password
        scheme, rounds = self.password_scheme
        doveadm = os.path.join(os.path.dirname(DOVECOT), "..", "bin", "doveadm")
        p = subprocess.run([os.path.normpath(doveadm), "-c", "/dev/null", "pw", "-s", scheme, "-r", str(rounds)],
                           input=("%s\n%s\n" % (self.password, self.password)).encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        entry = p.stdout.decode().strip()
        if p.returncode != 0 or not entry.startswith("{%s}" % scheme):
            raise RuntimeError("doveadm pw -s %s -r %s failed: %s" % (scheme, rounds, p.stderr.decode().strip()[:200]))
        return entry

    def reset_index(self):
        """Forget Dovecot's index cache (the control files in the Maildir stay); only while stopped."""
        path = os.path.join(self.work, "index")
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        own_tree(path, self.owner)

    # -- running --------------------------------------------------------
    def start(self):
        for path in (self.maildir, self.work):
            closed = unreachable(path)
            if closed:
                raise RuntimeError("%s: the mail user %s cannot enter %s (mode %o); open_path_to() opens it"
                                   % (path, self.owner.pw_name, closed, os.stat(closed).st_mode & 0o7777))
        if self.chown:
            own_tree(self.maildir, self.owner)
        for attempt in range(3):        # a free port can be taken between our probe and Dovecot's bind
            self.port = free_port(self.host)
            self._write_files()
            self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         start_new_session=True)
            if self._wait_listening():
                return self
            err = self._end()
            if "in use" not in err + self.log_tail():
                break
        raise RuntimeError("dovecot did not start (conf %s): %s %s" % (self.conf, err.strip()[-1500:],
                                                                        self.log_tail()))

    def _wait_listening(self):
        """Connect until the listener answers (bounded); False if Dovecot exited or time ran out."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as s:
                    s.settimeout(5)
                    if s.recv(200).startswith(b"* OK"):
                        return True
            except OSError:
                pass
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)           # polling interval while the master forks its listeners
        return False

    def _end(self):
        """Stop the master (SIGTERM, then SIGKILL to our process group); its stderr."""
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT)
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stderr.close()
        self.proc = None
        return err

    def stop(self):
        self._end()
        if self.own_work:
            shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- looking at it --------------------------------------------------
    def log_tail(self, chars=3000):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
            return ""

    def processes(self):
        """{pid: command name} of the master's descendants (imap, imap-login, auth, ...)."""
        children = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    stat = f.read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append((int(entry), name))
        out, todo = {}, [self.proc.pid] if self.proc else []
        while todo:
            for pid, name in children.get(todo.pop(), []):
                out[pid] = name
                todo.append(pid)
        return out

    def imap_pids(self):
        """The mail processes (one per logged-in IMAP connection)."""
        return [pid for pid, name in self.processes().items() if name == "imap"]


def shared_maildir_case():
    """A ServerTestCase base whose class also runs Dovecot on bob's Maildir
    (the interop tests that compare both servers on one folder): ``cls.bob``
    is the Maildir, ``cls.dovecot`` the running Dovecot; IMAP on a free port."""
    from tests.helpers import ServerTestCase      # helpers imports mailsrv: only when asked

    class SharedMaildirCase(ServerTestCase):
        tls = False
        extra_config = {"imap_port": "0"}
        user, password = "bob@example.test", "bob-secret"

        @classmethod
        def setUpClass(cls):
            super().setUpClass()
            cls.bob = os.path.join(cls.tmp, "mail", "example.test", "bob")
            open_path_to(cls.bob, cls.tmp)
            cls.dovecot = DovecotImap(cls.bob, cls.user, cls.password)
            try:
                cls.dovecot.start()
            except BaseException:
                cls.dovecot.stop()
                super().tearDownClass()
                raise

        @classmethod
        def tearDownClass(cls):
            cls.dovecot.stop()
            super().tearDownClass()
    return SharedMaildirCase
