"""The real ``MessageSink`` (protocols/smtp/state.py): a message received over
SMTP goes to disk as it arrives, then is made durable before the 250.

``DeliveryService.open_message`` (protocols/backend/delivery.py) creates one per message once
data starts (DATA's 354 or the first BDAT).  Up to ``SMALL_MESSAGE`` octets
are held; beyond, the pieces go to ``store.incoming.IncomingMessage``: the
first local recipient's Maildir ``tmp/`` file and/or the queue's ``tmp-``
file, by bounded appends.  ``finish`` hands the local part to the Deliverer
(write or fsync, hard links into every ``new/``, directory fsyncs,
group-committed) and the remote part to a worker thread (``Queue.enqueue``
or ``enqueue_file``: fsync, rename, envelope); ``done`` gets 250 only when
both are on disk, else 452 4.3.1 (RFC 3463 §3.4).  First, when a local
recipient has a quota, a worker checks it: over, ``done`` gets 452 4.2.2
and nothing is stored (protocols/backend/quota.py).

Submission fixups (RFC 6409 §8.2/§8.3, ``DeliveryService.submission_fixups``)
need the header block: the first ``HEAD_LIMIT`` octets, up to the empty
line that ends the header, are held and fixed before anything is written.

The bytes of every open sink count against the server's budget
(``max_inflight_message_bytes``) until the sink is finished or aborted.
"""

from __future__ import annotations

import logging
from typing import Callable, List, Optional, Tuple

from protocols.smtp.data import HEAD_LIMIT
from store.deliver import DeliveryJob
from store.incoming import IncomingMessage

store_log = logging.getLogger("mailsrv.store")

Reply = Tuple[int, str, str]

# A message is held in memory up to this size (one 64 KiB read: most mail),
# then written to its files as it arrives: a small one goes the way it always
# went (one write on a worker thread), a large one never whole in memory.
SMALL_MESSAGE = 64 * 1024


class IncomingSink:
    """One message being received (the MessageSink contract)."""

    def __init__(self, backend, envelope, local: List[str], remote: List[str],
                 fixups: bool, delivered_to: str = ""):
        self.backend = backend
        self.delivered_to = delivered_to    # store/deliver.py DeliveryJob.delivered_to
        self.queue_id = envelope.queue_id
        self.return_path = envelope.mail_from
        self.local, self.remote = local, remote
        self.buf = bytearray()          # the message until it outgrows SMALL_MESSAGE
        self.msg: Optional[IncomingMessage] = None
        self.fixups = fixups            # the header block is still to be fixed
        self.counted = 0
        self.eight_bit = False          # RFC 6152: the queue entry goes out with BODY=8BITMIME
        # DKIM (protocols/dkim.py): a message to be signed or verified is held in
        # memory (its octets count against max_inflight_message_bytes as any
        # other's): a signature goes on top and depends on the whole body.
        self.sign = False               # sign the queued copy (DeliveryService.open_message decides)
        # dkim_verify / spf_check / dmarc_check: protocols/dmarc_inbound.py InboundChecks, whose
        # Authentication-Results goes on top of every copy (and whose DMARC verdict may refuse)
        self.checks = None
        self.folder = ""                # store/deliver.py DeliveryJob.folder: "Junk" after DMARC's say
        self.open = True

    def write(self, data: bytes) -> None:
        self.counted += len(data)
        self.backend.inflight_bytes += len(data)
        if not self.eight_bit and not data.isascii():
            self.eight_bit = True
        if self.msg is not None:
            self.msg.write(data)
            return
        start = max(0, len(self.buf) - 3)
        self.buf += data
        if self.fixups and (self.buf.find(b"\r\n\r\n", start) >= 0 or len(self.buf) >= HEAD_LIMIT):
            self._fix_head()
        if not self.fixups and not self.sign and self.checks is None and len(self.buf) >= SMALL_MESSAGE:
            self.msg = IncomingMessage(self.backend.store, self.backend.queue, self.queue_id,
                                       self.return_path, self.local, bool(self.remote),
                                       self.delivered_to)
            self.msg.write(bytes(self.buf))
            self.buf = bytearray()

    def _fix_head(self) -> None:
        """The header block is complete (or too long to hold): add Date and
        Message-ID if missing (RFC 6409 §8.2, §8.3)."""
        self.fixups = False
        head = bytes(self.buf)
        if head.find(b"\r\n\r\n") < 0 and len(head) >= HEAD_LIMIT:
            cut = head.rfind(b"\r\n") + 2       # the fields seen so far
            out = self.backend.submission_fixups(head[:cut]) + head[cut:] if cut >= 2 else head
        else:
            out = self.backend.submission_fixups(head)
        self.buf = bytearray(out)

    def abort(self) -> None:
        if self.open:
            self.open = False
            self.buf = bytearray()
            if self.msg is not None:
                self.msg.discard()
            self._release()

    def finish(self, envelope, done: Callable[[Reply], None]) -> None:
        self.open = False
        if self.fixups:
            self._fix_head()
        if self.msg is not None and self.msg.error is not None:
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
        data, self.buf = bytes(self.buf), bytearray()
        if self.checks is not None and self.msg is None:
            self.checks.run(data, lambda data, action: self._checked(envelope, data, action, part_done, done))
            return
        self._checked(envelope, data, "", part_done, done)

    def _checked(self, envelope, data: bytes, action: str, part_done, done) -> None:
        """After the Authentication-Results (protocols/dmarc_inbound.py): DMARC's
        "reject" refuses the message (550 5.7.1, RFC 7489 §6.7), "junk" sends
        the local copies to Junk; then the quota, then the stores."""
        if action == "reject":
            from protocols.dmarc_inbound import REJECT_REPLY
            self._release()
            code, status, text = REJECT_REPLY
            done((code, status, text % (self.checks.result.from_domain or "the sender")))
            return
        if action == "junk":
            self.folder = "Junk"
        quota = getattr(self.backend, "quota", None)
        if self.local and quota is not None and quota.limited(self.local):
            quota.check_delivery(self.local, self.counted,
                                 lambda refusal: self._after_quota(refusal, envelope, data, part_done, done))
            return
        self._dispatch(envelope, data, part_done)

    def _after_quota(self, refusal, envelope, data: bytes, part_done, done) -> None:
        """A local recipient over quota (protocols/backend/quota.py): 452 4.2.2 and
        nothing stored, locally or in the queue; else on as usual."""
        if refusal is None:
            self._dispatch(envelope, data, part_done)
            return
        if self.msg is not None:
            self.msg.discard()
        self._release()
        done(refusal)

    def _dispatch(self, envelope, data: bytes, part_done) -> None:
        if self.local:
            self._deliver_local(data, part_done)
        if self.remote:
            self._enqueue(envelope, data, part_done)

    def _deliver_local(self, data: bytes, part_done) -> None:
        loop = self.backend.loop
        job = (self.msg.local_job() if self.msg is not None
               else DeliveryJob(data, self.return_path, self.local, self.queue_id, self.delivered_to,
                                folder=self.folder))
        def stored(r) -> None:      # on the loop thread, after the fsyncs
            if r.ok:
                self.backend.delivered(job.users, self.folder or "INBOX")
            part_done(r.ok, r.error)
        self.backend.deliverer.submit(job, lambda r: loop.call_soon_threadsafe(lambda: stored(r)))

    def _enqueue(self, envelope, data: bytes, part_done) -> None:
        backend, msg = self.backend, self.msg
        now = backend.loop.time()
        signer = backend.dkim if self.sign else None       # the keys of now, whatever a reload does

        def work():
            if msg is None:
                if signer is not None:
                    data_out = signer.sign(data, int(now))      # ~20 ms for RSA-2048: never on the loop
                else:
                    data_out = data
                backend.queue.enqueue(envelope.mail_from, self.remote, data_out, self.queue_id, now,
                                      smtputf8=envelope.smtputf8, body_8bit=self.eight_bit)
            else:
                msg.enqueue(backend.queue, envelope.mail_from, self.remote, now,
                            envelope.smtputf8, self.eight_bit)
            return True

        def enqueued(result) -> None:
            ok = result is True
            if not ok and msg is not None:
                msg.discard()
            part_done(ok, None if ok else repr(result))
            if ok and backend.relay is not None:
                backend.relay.kick()
        backend.loop.run_in_thread(work, enqueued)

    def _release(self) -> None:
        self.backend.inflight_bytes -= self.counted
        self.counted = 0
