"""The real ``MessageSink`` (protocols/smtp_state.py): a message received over
SMTP goes to disk as it arrives, then is made durable before the 250.

``Backend.open_message`` (protocols/wiring.py) creates one per message once
data starts (DATA's 354 or the first BDAT).  The pieces go to
``store.incoming.IncomingMessage``: the first local recipient's Maildir
``tmp/`` file and/or the queue's ``tmp-`` file, by bounded appends.
``finish`` hands the local part to the Deliverer (fsync, hard links into
every ``new/``, directory fsyncs, group-committed) and the remote part to a
worker thread (``Queue.enqueue_file``: fsync, rename, envelope); ``done``
gets 250 only when both are on disk, else 452 4.3.1 (RFC 3463 §3.4).

Submission fixups (RFC 6409 §8.2/§8.3, ``Backend._submission_fixups``)
need the header block: the first ``HEAD_LIMIT`` octets, up to the empty
line that ends the header, are held and fixed before anything is written.

The bytes of every open sink count against the server's budget
(``max_inflight_message_bytes``) until the sink is finished or aborted.
"""

from __future__ import annotations

import logging
from typing import Callable, List, Optional, Tuple

from protocols.smtp_data import HEAD_LIMIT
from store.incoming import IncomingMessage

store_log = logging.getLogger("mailsrv.store")

Reply = Tuple[int, str, str]


class IncomingSink:
    """One message being received (the MessageSink contract)."""

    def __init__(self, backend, envelope, local: List[str], remote: List[str],
                 fixups: bool):
        self.backend = backend
        self.queue_id = envelope.queue_id
        self.local, self.remote = local, remote
        self.msg = IncomingMessage(backend.store, backend.queue, envelope.queue_id,
                                   envelope.mail_from, local, bool(remote))
        self.head: Optional[bytearray] = bytearray() if fixups else None
        self.counted = 0
        self.eight_bit = False          # RFC 6152: the queue entry goes out with BODY=8BITMIME
        self.open = True

    def write(self, data: bytes) -> None:
        self.counted += len(data)
        self.backend.inflight_bytes += len(data)
        if not self.eight_bit and not data.isascii():
            self.eight_bit = True
        if self.head is None:
            self.msg.write(data)
            return
        start = max(0, len(self.head) - 3)
        self.head += data
        if self.head.find(b"\r\n\r\n", start) >= 0 or len(self.head) >= HEAD_LIMIT:
            self._flush_head()

    def _flush_head(self) -> None:
        """The header block is complete (or too long to hold): fix it, write it."""
        head, self.head = bytes(self.head), None
        if head.find(b"\r\n\r\n") < 0 and len(head) >= HEAD_LIMIT:
            cut = head.rfind(b"\r\n") + 2       # the fields seen so far
            out = self.backend._submission_fixups(head[:cut]) + head[cut:] if cut >= 2 else head
        else:
            out = self.backend._submission_fixups(head)
        self.msg.write(out)

    def abort(self) -> None:
        if self.open:
            self.open = False
            self.msg.discard()
            self._release()

    def finish(self, envelope, done: Callable[[Reply], None]) -> None:
        self.open = False
        if self.head is not None:
            self._flush_head()
        self.msg.end()
        if self.msg.error is not None:
            store_log.error("delivery of %s failed: %s", self.queue_id, self.msg.error)
            self.msg.discard()
            self._release()
            done(self.backend.storage_error)
            return
        parts = {"pending": (1 if self.local else 0) + (1 if self.remote else 0), "ok": True}

        def part_done(ok: bool, error: Optional[str]) -> None:
            if not ok:
                parts["ok"] = False
                store_log.error("delivery of %s failed: %s", self.queue_id, error)
            parts["pending"] -= 1
            if parts["pending"] == 0:
                self._release()
                done((250, "2.0.0", "Ok: queued as %s" % self.queue_id) if parts["ok"]
                     else self.backend.storage_error)

        if parts["pending"] == 0:
            part_done(True, None)       # no recipient left (cannot happen after RCPT)
            return
        if self.local:
            self._deliver_local(part_done)
        if self.remote:
            self._enqueue(envelope, part_done)

    def _deliver_local(self, part_done) -> None:
        loop = self.backend.loop
        self.backend.deliverer.submit(
            self.msg.local_job(),
            lambda r: loop.call_soon_threadsafe(lambda: part_done(r.ok, r.error)))

    def _enqueue(self, envelope, part_done) -> None:
        backend, msg = self.backend, self.msg
        now = backend.loop.time()

        def work():
            msg.enqueue(backend.queue, envelope.mail_from, self.remote, now,
                        envelope.smtputf8, self.eight_bit)
            return True

        def enqueued(result) -> None:
            ok = result is True
            if not ok:
                msg.discard()
            part_done(ok, None if ok else repr(result))
            if ok and backend.relay is not None:
                backend.relay.kick()
        backend.loop.run_in_thread(work, enqueued)

    def _release(self) -> None:
        self.backend.inflight_bytes -= self.counted
        self.counted = 0
