"""A throwaway Postfix instance (Debian's postfix package) on a loopback port.

Shared by the Postfix interop tests (tests/test_interop_postfix.py,
tests/test_interop_mtasts.py) and the benchmark against Postfix
(tests/bench_smtp_source.py).  The instance lives in one directory: its own
main.cf and master.cf (``postfix -c DIR``), queue_directory and
data_directory inside it, smtpd on 127.0.0.1:<port>, the virtual(8)
delivery agent writing the Maildirs of one domain under DIR/vmail, and
``transport_maps`` sending mail for our domain ``example.test`` to our smtp
port as ``smtp:[127.0.0.1]:<port>`` when one is given (no DNS, RFC 5321
§5.1 does not apply to a bracketed next hop).  Of /etc/postfix only
Debian's shipped files are read (postfix-files, dynamicmaps.cf, as
meta_directory); the system's instance is never configured, started or
stopped.  Postfix's master must start as root.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

from tests import helpers
from tests.helpers import CERT, KEY

POSTFIX = shutil.which("postfix") or ("/usr/sbin/postfix" if os.path.exists("/usr/sbin/postfix") else None)
POSTCONF = shutil.which("postconf") or ("/usr/sbin/postconf" if os.path.exists("/usr/sbin/postconf") else None)
WAIT = 30.0          # bound on every wait (seconds); Postfix delivers in well under one


def skip_reason():
    """Why a throwaway Postfix cannot run here, or None."""
    if not POSTFIX or not POSTCONF:
        return "postfix not installed (apt-get install postfix, 'No configuration')"
    if os.geteuid() != 0:
        return "postfix needs root (Postfix's master starts as root)"
    return None


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

# The interop tests' virtual users: (address, Maildir under vmail/; "/" ends a Maildir).
PF_TEST_MAILBOXES = (("user@pf.test", "pf.test/user/"), ("jörg@pf.test", "pf.test/joerg/"))


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (Postfix binds it itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what, log=lambda: "", timeout=WAIT):
    return helpers.wait_for(predicate, what, log, timeout)


class PostfixInstance:
    """One throwaway Postfix: ``start()``, ``stop()``, ``maildir_files(local)``.

    ``our_smtp_port``: mail for example.test goes there (transport_maps).
    ``directory``: where the instance lives (made here; default a new
    temporary directory).  ``domain`` and ``mailboxes``: its virtual
    domain and users.  ``settings``: main.cf parameters over the defaults
    above (``postconf -e``)."""

    def __init__(self, port: int, our_smtp_port=None, directory=None, domain="pf.test",
                 mailboxes=PF_TEST_MAILBOXES, settings=None):
        if directory is None:
            self.dir = tempfile.mkdtemp(prefix="mailsrv-postfix-")
        else:
            os.makedirs(directory)
            self.dir = directory
        os.chmod(self.dir, 0o755)          # Postfix daemons run as mail_owner / the virtual uid
        self.port = port
        self.domain = domain
        vuser = pwd.getpwnam("nobody")
        self.vmail = os.path.join(self.dir, "vmail")
        os.makedirs(self.vmail)
        os.chown(self.vmail, vuser.pw_uid, vuser.pw_gid)
        os.makedirs(os.path.join(self.dir, "queue"))      # postfix check creates its subdirectories
        owner = pwd.getpwnam("postfix")                     # data_directory belongs to mail_owner
        os.makedirs(os.path.join(self.dir, "data"))
        os.chown(os.path.join(self.dir, "data"), owner.pw_uid, owner.pw_gid)
        self._write("main.cf", MAIN_CF.replace("pf.test", domain).format(
            dir=self.dir, uid=vuser.pw_uid, gid=vuser.pw_gid, cert=CERT, key=KEY))
        self._write("master.cf", MASTER_CF.format(listen="127.0.0.1:%d" % self.port))
        self._write("vmailbox", "".join("%s %s\n" % pair for pair in mailboxes))
        self._write("transport", "example.test smtp:[127.0.0.1]:%d\n" % our_smtp_port
                    if our_smtp_port is not None else "")
        if settings:
            subprocess.run([POSTCONF, "-c", self.dir, "-e"] + ["%s=%s" % kv for kv in settings.items()],
                           check=True, timeout=WAIT)
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

    def master_pid(self) -> int:
        """The pid of this instance's master(8) (its pid file in the queue directory)."""
        with open(os.path.join(self.dir, "queue", "pid", "master.pid")) as f:
            return int(f.read().split()[0])

    def stop(self, remove=True):
        """Stop this instance (bounded), then remove its directory unless ``remove`` is false."""
        try:
            if self.started:
                self.run("stop", check=False)
                wait_for(lambda: self.run("status", check=False).returncode != 0, "postfix to stop")
        finally:
            if remove:
                shutil.rmtree(self.dir, ignore_errors=True)

    def maildir(self, local: str) -> str:
        """The Maildir of ``local``@domain (as the mailboxes map names it by default)."""
        return os.path.join(self.vmail, self.domain, local)

    def maildir_files(self, local: str):
        base = self.maildir(local)
        return sorted(glob.glob(os.path.join(base, "new", "*")) + glob.glob(os.path.join(base, "cur", "*")))
