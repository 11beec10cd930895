"""TLS over ``ssl.MemoryBIO`` for the event loop's connections (protocols/loop_transport.py).

One of the three modules of the event loop (protocols/loop.py, loop_transport.py,
this one), the only ones in protocols/ that touch sockets, TLS, threads and the clock.

``SSLContext.wrap_bio`` over two memory BIOs, so that no handshake ever blocks
the loop: ciphertext read from the socket is fed to ``inbio``, the
handshake advances as far as that input allows, and what the TLS layer wants
sent comes out of ``outbio`` into the connection's ordinary write buffer.  Used
for implicit TLS (RFC 8314 §3.3: the session is created after the handshake)
and for STARTTLS (RFC 3207 §4, RFC 2595 §3.1 / §4: the go-ahead reply is
flushed first, plaintext received before the handshake starts is discarded,
then ``session.tls_started(info)``), server and client side.  A handshake
has a deadline (``TLS_HANDSHAKE_TIMEOUT``, the loop's ``tls_handshake_timeout``).

Left out: TLS session resumption tuning, renegotiation (TLS 1.3 has none).
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import Optional

log = logging.getLogger("mailsrv.loop")

# No RFC bounds the TLS handshake.  RFC 5321 §4.5.3.2.7 lets a server wait 5 minutes for
# a command, but a handshake is one or two round trips, so 30 s is generous and keeps
# silent half-open handshakes from holding connection slots.
TLS_HANDSHAKE_TIMEOUT = 30.0
TLS_READ_CHUNK = 64 * 1024      # plaintext octets per SSLObject.read(), as the socket's READ_CHUNK


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The listeners' context: TLS 1.2 or newer (RFC 8314 §4.1, RFC 7525 §3.1.1).
    Raises OSError / ssl.SSLError from loading the pair (the caller names the file)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def alpn_challenge_context(lookup, protocol: str) -> ssl.SSLContext:
    """ACME's TLS-ALPN-01 responder (RFC 8737 §3): only ALPN ``protocol``
    ("acme-tls/1"), and for the SNI name the certificate pair ``lookup(name)``
    returns ((cert, key) paths, or None: the handshake fails, as RFC 8737 §3
    wants for a name we answer no challenge for).  Runs in the loop thread."""
    def context_for(cert: str, key: str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2       # RFC 8737 §4: TLS 1.2 or newer
        ctx.set_alpn_protocols([protocol])
        ctx.load_cert_chain(cert, key)
        return ctx

    def on_sni(sslobj, name, _ctx):
        pair = lookup((name or "").lower())
        if pair is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        try:
            sslobj.context = context_for(*pair)
        except (OSError, ssl.SSLError) as exc:
            log.warning("ACME tls-alpn-01: cannot load the challenge certificate for %s: %s", name, exc)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None

    base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    base.minimum_version = ssl.TLSVersion.TLSv1_2
    base.set_alpn_protocols([protocol])
    base.sni_callback = on_sni
    return base


def client_tls_context(verify: bool) -> ssl.SSLContext:
    """Outbound TLS (RFC 3207): opportunistic and unverified unless ``verify``, like
    Postfix's ``smtp_tls_security_level = may`` (RFC 7435 §4: opportunistic security)."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class TlsTransport:
    """The TLS half of a :class:`protocols.loop_transport.Connection` (a mixin: it
    works on the connection's buffer, session, deadline and loop)."""

    def _tls_init(self) -> None:
        self.starttls_context: Optional[ssl.SSLContext] = None
        self.implicit_tls = False
        self.server_hostname: Optional[str] = None
        self.tls: Optional[ssl.SSLObject] = None
        self.inbio: Optional[ssl.MemoryBIO] = None
        self.outbio: Optional[ssl.MemoryBIO] = None
        self.tls_up = False
        self.tls_pending = False        # want_tls seen; waiting for the go-ahead to drain
        self.tls_info: Optional[dict] = None

    def _tls_feed(self, data: bytes) -> None:
        """Ciphertext from the socket (``b""``: end of file) into the TLS layer."""
        if data:
            self.inbio.write(data)
        else:
            self.inbio.write_eof()
        self._tls_input()

    def _tls_write(self, data: bytes) -> bool:
        """Encrypt ``data`` into the write buffer; False (connection closed) when the peer ended TLS."""
        try:
            self.tls.write(data)
        except ssl.SSLError as exc:
            log.debug("TLS write on %s: %s", self.id, exc)
            self.close()
            return False
        self._flush_bio()
        return True

    def _tls_close_notify(self) -> None:
        """RFC 8446 §6.1: close_notify before closing, best effort, sent at once."""
        try:
            self.tls.unwrap()
        except (ssl.SSLError, ValueError):
            pass
        self._flush_bio()
        try:
            self.bytes_out += self.sock.send(self.out)
        except OSError:
            pass

    def wrap(self, context: ssl.SSLContext, server_side: bool) -> None:
        """Start a handshake over memory BIOs; the client side sends its ClientHello now."""
        self.inbio, self.outbio = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.deadline = self.deadline or time.monotonic() + self._loop.tls_handshake_timeout
        try:
            self.tls = context.wrap_bio(self.inbio, self.outbio, server_side=server_side,
                                        server_hostname=None if server_side else self.server_hostname)
        except (ssl.SSLError, ValueError) as exc:
            self._tls_failed(exc)
            return
        if not server_side:
            self._tls_input()

    def _start_tls(self) -> None:
        """STARTTLS: the go-ahead reply is out; RFC 3207 §4.2 says the handshake starts now."""
        self.tls_pending = False
        if self.starttls_context is None:
            log.error("session on %s asked for TLS but no context is configured", self.id)
            self.close()
            return
        self.deadline = time.monotonic() + self._loop.tls_handshake_timeout
        self.wrap(self.starttls_context, self.listener is not None)

    def _flush_bio(self) -> None:
        data = self.outbio.read()
        if data:
            self.out += data

    def _tls_input(self) -> None:
        """Advance the handshake, then hand decrypted data to the session."""
        if not self.tls_up:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush_bio()
                if self.eof_seen:
                    self._tls_failed(ConnectionResetError("EOF during TLS handshake"))
                return
            except (ssl.SSLError, OSError, ValueError) as exc:
                self._flush_bio()    # the alert, best effort
                self._send()
                self._tls_failed(exc)
                return
            self._flush_bio()
            self._tls_established()
        while not self.closed:
            try:
                chunk = self.tls.read(TLS_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._give_eof()
                break
            except ssl.SSLError as exc:
                log.info("TLS error on %s peer=%s: %s", self.id, self.peer_text, exc)
                self.close()
                return
            if not chunk:
                self._give_eof()
                break
            if self._accepts_input():
                self.session.receive_data(chunk)
        if self.closed:
            return
        self._flush_bio()
        if self.eof_seen and not self.eof_given:
            self._give_eof()

    def _tls_established(self) -> None:
        cipher = self.tls.cipher()
        info = {"version": self.tls.version(), "cipher": cipher[0] if cipher else None}
        self.tls_up = True
        self.tls_info = info
        self.deadline = None
        self.last_activity = time.monotonic()     # a completed handshake is progress
        if self.session is None:          # implicit TLS: the session starts now
            self.open_session()
        else:                             # STARTTLS, RFC 3207 §4.2
            self.ctx.tls_active = True
            self.ctx.tls_info = info
            self.session.tls_started(info)

    def _tls_failed(self, exc: BaseException) -> None:
        log.info("TLS handshake failed on %s listener=%s peer=%s: %s",
                 self.id, self.name, self.peer_text, exc)
        if self.session is None:
            self.fail(exc)
        else:
            self.ctx.tls_info = {"error": getattr(exc, "verify_message", "") or str(exc)}   # for the session's owner (TLS-RPT)
            self.close()
