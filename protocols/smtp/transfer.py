"""DATA (RFC 5321 §4.1.1.4) and BDAT (RFC 3030 §2) command handlers of SmtpSession.

A mixin so that protocols/smtp/server.py stays readable; it uses the
session's ``_reply`` / ``_fail`` / ``_send`` / ``_await`` and state.  The
message is never held whole: from DATA's 354 or the first BDAT its octets
go, read by read, to the ``MessageSink`` of ``backend.open_message``
(smtp/state.py), and ``ContentCheck`` (smtp/data.py) decides the refusals
as they pass.  The sink's ``finish`` gives the final reply once the message
is on disk.
"""

from __future__ import annotations

import logging
from typing import Optional

from protocols.base import new_id
from protocols.smtp.data import ContentCheck, DataReader, protocol_word, received_header
from protocols.smtp.state import BDAT_RE, Chunk, Reply, State, Transaction, fmt_reply
from protocols.spf_header import received_spf

log = logging.getLogger("mailsrv.smtp")


class TransferCommands:
    """DATA and BDAT handlers (see SmtpSession for the attributes)."""

    def _cmd_data(self, arg: str) -> None:
        """DATA (RFC 5321 §4.1.1.4)."""
        if arg:
            self._fail(501, "5.5.4", "Syntax: DATA")
            return
        if self.state is State.MAIL:
            # RFC 2920 §3 item (3) / RFC 5321 §3.3: no recipient accepted.
            self._reply(554, "5.5.1", "No valid recipients")
            return
        if self._spf_pending(self._txn, lambda: self._cmd_data(arg)):
            return
        refusal = self._open_message(self._txn)
        if refusal is not None:
            self._reply_t(refusal)     # RFC 5321 §4.3.2: DATA may get 452
            return
        self._data = DataReader()
        self.state = State.DATA
        # 354 is not 2xx/4xx/5xx: no enhanced code (RFC 2034 §4).
        self._send(fmt_reply(354, "", "End data with <CR><LF>.<CR><LF>"))

    def _pump_data(self) -> bool:
        if not self._reader.buf:
            return False
        chunk = bytes(self._reader.buf)
        self._reader.buf.clear()
        content, leftover = self._data.feed(chunk)
        self._take(content)
        if leftover is None:
            return False
        self._reader.buf[:0] = leftover
        self._data = None
        self._finish_message()
        return True

    def _spf_pending(self, txn: Transaction, resume) -> bool:
        """spf_check = header: find the SPF result of MAIL FROM (RFC 7208
        §2.4, through the backend's resolver) before message data starts,
        holding input meanwhile, then run the command again (``resume``).
        Not for clients that may relay (authenticated, trusted networks):
        the check is between border MTAs of different ADMDs, internal hops
        do not perform it (RFC 7208 Appendix F).
        DEVIATION(RFC 7208 §2.5): checked at DATA, not at MAIL: the same
        inputs (MAIL FROM and client address) within the same transaction,
        and no DNS for transactions that never get a recipient."""
        if self.config.spf_check != "header" or self._auth_user is not None \
                or self.backend.may_relay(self.ctx, None):
            return False
        if txn.spf is None:
            def finish(result) -> None:
                txn.spf = result
                if not self.closed:
                    resume()
            self._await(lambda done: self.backend.check_spf(self.ctx, self._helo or "", txn.mail_from, done),
                        finish)
            return True
        return self._spf_helo_pending(txn, resume)

    def _spf_helo_pending(self, txn: Transaction, resume) -> bool:
        """RFC 7208 §2.3: "It is RECOMMENDED that SPF verifiers not only check
        the 'MAIL FROM' identity but also separately check the 'HELO'
        identity".  Once per session and HELO name (the identity does not
        change between transactions); not for the null reverse-path, whose
        MAIL FROM identity already is postmaster@<HELO> (§2.4), nor for an
        address literal (§2.3: nothing to check)."""
        name = (self._helo or "").strip()
        if txn.spf_helo is not None or not name or name.startswith("[") \
                or txn.mail_from.strip("<> ") == "":
            return False
        known = self._spf_helo_known
        if known is not None and known[0] == name.lower():
            txn.spf_helo = known[1]
            return False

        def finish(result) -> None:
            self._spf_helo_known = (name.lower(), result)
            txn.spf_helo = result
            if not self.closed:
                resume()
        self._await(lambda done: self.backend.check_spf_helo(self.ctx, name, done), finish)
        return True

    def _open_message(self, txn: Transaction) -> Optional[Reply]:
        """Message data starts: ask the backend for a sink, write the trace
        field (RFC 5321 §4.4) first.  A refusal (452 4.3.1 when the server's
        budget for messages in flight is spent) is returned."""
        qid = new_id()
        env = self._envelope(txn, qid)
        env.spf, env.spf_helo = txn.spf, txn.spf_helo   # for the sink's Authentication-Results (RFC 8601)
        sink = self.backend.open_message(env)
        if isinstance(sink, tuple):
            self._log_result(qid, txn, 0, sink)
            return sink
        txn.queue_id, txn.sink, txn.envelope = qid, sink, env
        txn.check = ContentCheck(self.config.max_message_size, self.config.max_text_line)
        for spf in (txn.spf, txn.spf_helo):    # RFC 7208 §9.1: above the Received field we add
            if spf is not None:
                sink.write(received_spf(spf, self.config.hostname))
        sink.write(received_header(
            self._helo, self.ctx.peer_ip, self.config.hostname,
            protocol_word(self._esmtp, self.ctx.tls_active, self._auth_user is not None,
                          txn.smtputf8),
            qid, txn.rcpts[0] if len(txn.rcpts) == 1 else None, self.ctx.clock()))
        return None

    def _take(self, data: bytes) -> None:
        """Message octets: checked, then stored unless already refused."""
        txn = self._txn
        if not data:
            return
        txn.check.feed(data)
        if txn.sink is not None:
            if txn.check.failed:
                txn.sink.abort()       # refused at the end anyway: free the disk now
                txn.sink = None
            else:
                txn.sink.write(data)

    def _cmd_bdat(self, arg: str) -> None:
        """BDAT <size> [LAST] (RFC 3030 §2).  The chunk's octets are read
        even when the command is refused, and never dot-unstuffed.

        A bare CR or LF is legal inside BDAT data only with BODY=BINARYMIME
        (RFC 3030 §3), which we do not offer; so the complete message gets
        the same bare CR/LF refusal as DATA (checked as the chunks arrive; a
        CRLF split across two chunks is fine), answered at LAST."""
        m = BDAT_RE.match(arg)
        if not m:
            self._fail(501, "5.5.4", "Syntax: BDAT <size> [LAST]")
            return
        error: Optional[Reply] = None
        if self.state not in (State.RCPT, State.BDAT):
            # RFC 3030 §2: after a failed BDAT, pipelined chunks are discarded.
            error = ((554, "5.5.1", "No valid recipients") if self.state is State.MAIL
                     else (503, "5.5.1", "No mail transaction in progress"))
        elif self.state is State.RCPT:
            if self._spf_pending(self._txn, lambda: self._cmd_bdat(arg)):
                return
            error = self._open_message(self._txn)
            if error is not None:
                # RFC 3030 §2: the chunk is read and discarded, then 4xx; the
                # transaction has failed (later pipelined chunks get 503).
                self._reset_transaction(State.READY)
            else:
                self.state = State.BDAT
        self._chunk = Chunk(int(m.group(1)), bool(m.group(2)), error)
        if self._chunk.remaining == 0:
            self._chunk_done()

    def _pump_chunk(self) -> bool:
        if not self._reader.buf:
            return False
        chunk = self._chunk
        data = self._reader.take(chunk.remaining)
        chunk.remaining -= len(data)
        if chunk.error is None:
            self._take(data)
        if chunk.remaining == 0:
            self._chunk_done()
        return True

    def _chunk_done(self) -> None:
        chunk, self._chunk = self._chunk, None
        if chunk.error is not None:
            self._reply_t(chunk.error)
            return
        txn = self._txn
        if txn.check.overflow:
            # RFC 3030 §2 / RFC 1870 §6.3: fail the transaction.
            self._log_result(txn.queue_id, txn, txn.check.size, (552, "5.3.4", "size limit"))
            self._reset_transaction(State.READY)
            self._reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
            return
        if not chunk.last:
            self._reply(250, "2.0.0", "%d octets received" % txn.check.size)
            return
        self._finish_message()

    def _finish_message(self) -> None:
        """The whole message was read: refuse it, or have the sink make it durable."""
        txn = self._txn
        if self._drop_after_data:
            # an injected disconnect("DATA") (protocols/faults.py): no reply, and
            # the closed setter aborts the sink, so nothing is stored
            log.info("message %s: connection dropped after the data (injected fault)", txn.queue_id)
            self.closed = True
            return
        qid, size = txn.queue_id, txn.check.size
        refusal = txn.check.refusal(self.config.max_received)
        if refusal is not None:
            self._log_result(qid, txn, size, refusal)
            self._reset_transaction(State.READY)
            self._reply_t(refusal)
            return
        if txn.body == "7BIT" and txn.check.eight_bit:
            # Be liberal (RFC 1123 §1.2.2): 8-bit data without BODY=8BITMIME
            # (RFC 6152 §3) is accepted and recorded as what it is.
            log.info("message %s: 8-bit data without BODY=8BITMIME", qid)
            txn.body = "8BITMIME"
        env = txn.envelope
        env.body = txn.body         # fixed when data started, but for BODY (8-bit found)
        sink, txn.sink = txn.sink, None
        self._delivering = True

        def finish(reply: Reply) -> None:
            self._delivering = False
            self._log_result(qid, txn, size, reply)
            self._reset_transaction(State.READY)
            self._reply_t(reply)

        self._await(lambda done: sink.finish(env, done), finish)
