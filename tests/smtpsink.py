"""A recording SMTP server for the tests of outbound mail (the relay's own
tests and the open-relay tests): one copy, on 127.0.0.1 only."""

import base64
import os
import socket
import ssl
import threading

WAIT = 10.0          # bound on every wait of the sink (seconds)
CERTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "certs")
EHLO = b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"


class SmtpSink:
    """A minimal SMTP server on 127.0.0.1 in a thread: records transactions;
    replies are scriptable.

    ``messages`` holds (mail_from, [accepted rcpts], data) per transaction
    (addresses without brackets, data unstuffed); ``connections`` counts TCP
    connections; ``arrived`` is set at each completed transaction; ``ehlo``
    is the EHLO reply; ``rcpt_reply`` refuses "bad@" and greylists "later@"
    once; ``gate`` (a threading.Event) holds MAIL until set."""

    def __init__(self, ehlo: bytes = EHLO, port: int = 0, backlog: int = 16):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.messages = []          # (mail_from, [accepted rcpts], data)
        self.connections = 0
        self.active = self.max_active = 0      # open connections
        self.in_txn = self.max_in_txn = 0      # transactions between MAIL and the end of DATA
        self.auth_seen = []         # decoded AUTH PLAIN responses
        self.tls_seen = []          # TLS versions negotiated, "failed" for a refused handshake
        self.tls_changed = threading.Condition()
        self.rcpt_seen = {}         # rcpt → times seen
        self.ehlo = ehlo
        # STARTTLS certificate and key (the MTA-STS tests give one from tests/certs/sts/)
        self.pair = (os.path.join(CERTS, "cert.pem"), os.path.join(CERTS, "key.pem"))
        self.arrived = threading.Event()
        self.in_mail = threading.Event()   # set when a MAIL FROM arrives
        self.gate = None                   # a threading.Event: MAIL waits for it (a round held open)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def rcpt_reply(self, rcpt: str) -> bytes:
        n = self.rcpt_seen[rcpt] = self.rcpt_seen.get(rcpt, 0) + 1
        local = rcpt.split("@")[0]
        if local == "bad":
            return b"550 5.1.1 <%s>: no such user\r\n" % rcpt.encode()
        if local == "later" and n == 1:
            return b"451 4.2.0 greylisted, come back later\r\n"
        return b"250 2.1.5 ok\r\n"

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self._talk(conn)
        finally:
            with self.lock:
                self.active -= 1

    def _starttls(self, conn, f):
        conn.sendall(b"220 2.0.0 ready for TLS\r\n")
        f.close()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self.pair)
        try:
            conn = ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            self._tls_outcome("failed")      # the client refused our certificate
            raise OSError("TLS handshake failed")
        self._tls_outcome(conn.version())
        return conn, conn.makefile("rb")

    def _tls_outcome(self, what):
        with self.tls_changed:
            self.tls_seen.append(what)
            self.tls_changed.notify_all()

    def wait_tls(self, count: int = 1) -> list:
        """``tls_seen`` once it holds ``count`` outcomes (or after WAIT seconds):
        the client may give up on a handshake before this thread records it."""
        with self.tls_changed:
            self.tls_changed.wait_for(lambda: len(self.tls_seen) >= count, WAIT)
            return list(self.tls_seen)

    def _talk(self, conn):
        conn.settimeout(WAIT)
        f = conn.makefile("rb")
        try:
            conn.sendall(b"220 sink ESMTP\r\n")
            mail_from, rcpts = None, []
            while True:
                line = f.readline()       # f changes after STARTTLS
                if not line:
                    return
                cmd = line.strip().decode("utf-8")
                verb = cmd[:4].upper()
                if verb == "EHLO":
                    conn.sendall(self.ehlo)
                elif verb == "STAR":
                    conn, f = self._starttls(conn, f)
                elif verb == "AUTH":
                    self.auth_seen.append(base64.b64decode(cmd.split()[2]))
                    ok = self.auth_seen[-1] == b"\0relayuser\0relaypass"
                    conn.sendall(b"235 2.7.0 ok\r\n" if ok else b"535 5.7.8 bad credentials\r\n")
                elif verb == "MAIL":
                    self.in_mail.set()
                    if self.gate is not None:
                        self.gate.wait(WAIT)
                    mail_from, rcpts = cmd[cmd.index("<") + 1: cmd.index(">")], []
                    with self.lock:
                        self.in_txn += 1
                        self.max_in_txn = max(self.max_in_txn, self.in_txn)
                    conn.sendall(b"250 2.1.0 ok\r\n")
                elif verb == "RCPT":
                    rcpt = cmd[cmd.index("<") + 1: cmd.index(">")]
                    reply = self.rcpt_reply(rcpt)
                    if reply.startswith(b"2"):
                        rcpts.append(rcpt)
                    conn.sendall(reply)
                elif verb == "DATA":
                    self._data(conn, f, mail_from, rcpts)
                elif verb in ("RSET", "NOOP"):
                    conn.sendall(b"250 2.0.0 ok\r\n")
                elif verb == "QUIT":
                    conn.sendall(b"221 2.0.0 bye\r\n")
                    return
                else:
                    conn.sendall(b"502 5.5.2 unknown\r\n")
        except OSError:
            pass
        finally:
            f.close()
            conn.close()

    def reset(self):
        """Forget what was recorded (a sink shared by the tests of a class)."""
        with self.lock:
            self.connections = 0
            self.messages = []
            self.arrived.clear()

    def _data(self, conn, f, mail_from, rcpts):
        if not rcpts:
            conn.sendall(b"554 5.5.1 no valid recipients\r\n")
            return
        conn.sendall(b"354 go ahead\r\n")
        data = b""
        for dl in f:
            if dl == b".\r\n":
                break
            data += dl[1:] if dl.startswith(b".") else dl
        with self.lock:
            self.messages.append((mail_from, rcpts, data))
            self.in_txn -= 1
        conn.sendall(b"250 2.0.0 queued\r\n")
        self.arrived.set()

    def close(self):
        self.sock.close()
