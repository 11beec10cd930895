"""The catch-all catalog (issue 11): what the test server caught, for the
in-process API (protocols/testserver.py) and the HTTP session.

``CaughtCatalog`` implements the ``CaughtMail`` contract
(protocols/backend/contracts.py) over every message of every mailbox of the
data folder, whatever put it there (SMTP, ``deliver``, IMAP APPEND, another
program), each joined with the SMTP envelope it came with when it came
through our delivery.  The envelopes are kept in the data folder
(store/caught.py: ``caught-envelopes.jsonl``), so a restart with the same
folder keeps them.

* ``RecordingDelivery`` (chosen by the Backend in catch-all mode) records each
  delivered message's envelope on the Deliverer's worker, after the message's
  file and directory fsync and before the ``250`` (RFC 5321 §4.1.1.4: the
  250 means the message is safe; here its envelope is too);
* news: the change hub (protocols/backend/hub.py ``watch_all``) hears of
  every change this process makes (delivery, APPEND, POP3 and IMAP
  expunges); each makes the catalog list the folders again (one listing at
  a time, coalesced) and tell ``watch_caught`` callbacks of every message
  it had not seen.  A file another program drops into a Maildir is listed
  by the next ``list_caught`` (and announced then), not at once.

All disk work runs on worker threads, one job after another (SerialJobs);
answers and callbacks come on the loop thread.  The state here (envelopes by
message, the last listing) is the loop thread's.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import logging
import os
from typing import Callable, Dict, List, Optional, Tuple

from protocols.backend.contracts import CaughtMessage
from protocols.backend.delivery import DeliveryService
from protocols.backend.serial import SerialJobs
from store import caught as disk
from store.folder_types import order_key, split_name

log = logging.getLogger("mailsrv.caught")

Done = Callable[[object], None]
# The listeners whose messages ``submitted()`` reports: what a program sent us.
SUBMITTING = ("smtp", "submission", "smtps", "sendmail")
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.default)


def message_id(mailbox: str, folder: str, key: str) -> str:
    """Stable, URL-safe, opaque; unique in the data folder."""
    return hashlib.sha256("\0".join((mailbox, folder, key)).encode("utf-8", "surrogatepass")).hexdigest()[:24]


def head_fields(head: bytes) -> Dict[str, str]:
    """From, To, Subject, Date of a header block, decoded (RFC 2047 by the
    email package's default policy); "" for a field that is absent or unreadable."""
    end = min((i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0), default=len(head))
    out = {}
    try:
        fields = _HEADERS.parsebytes(head[:end])
    except Exception:       # the email package on hostile input: the fields stay empty
        fields = None
    for name in ("from", "to", "subject", "date"):
        try:
            out[name] = str(fields.get(name, "")) if fields is not None else ""
        except Exception:
            out[name] = ""
    return out


def matches(msg: CaughtMessage, query: Dict[str, str]) -> bool:
    """The ``list_caught`` query: case-insensitive substrings, ANDed (the contract)."""
    for name, value in query.items():
        if not value:
            continue
        if name == "to":
            fields = list(msg.rcpt_to) + [msg.header_to]
        elif name == "from":
            fields = [msg.mail_from, msg.header_from]
        elif name == "subject":
            fields = [msg.subject]
        elif name == "text":
            fields = list(msg.rcpt_to) + [msg.header_to, msg.mail_from, msg.header_from, msg.subject, msg.mailbox]
        else:
            continue
        if not any(value.lower() in f.lower() for f in fields):
            return False
    return True


def _arrival(found: disk.Found, record: Optional[dict]) -> float:
    if record is not None and isinstance(record.get("received"), (int, float)):
        return float(record["received"])
    sec, usec, _ = order_key(found.key)     # the Maildir name's time (maildir spec), else the mtime
    return sec + usec / 1e6 if sec < (1 << 62) else found.mtime


class CaughtCatalog:
    """The ``CaughtMail`` contract (module docstring)."""

    def __init__(self, loop, store, hub):
        self.loop = loop
        self.store = store
        self.hub = hub
        self.log = disk.EnvelopeLog(store.data_dir)
        self._jobs = SerialJobs(loop)
        self._records: Dict[Tuple[str, str], dict] = {}    # (mailbox, key) -> envelope record
        self._sent: List[dict] = []                         # every record, oldest first
        self._pending: Dict[str, object] = {}               # queue id -> Envelope, finish to Deliverer
        self._index: Dict[str, Tuple[CaughtMessage, disk.Found]] = {}   # the last listing
        self._known: Optional[set] = None                   # ids seen (None: no listing yet)
        self._watchers: List[Callable[[CaughtMessage], None]] = []
        self._heads: Dict[str, Dict[str, str]] = {}         # path -> fields (worker jobs only)
        self._current: List[Done] = []                      # answered by the listing running
        self._next: Optional[List[Done]] = None             # answered by the one after
        self._unwatch: Optional[Callable[[], None]] = None

    # -- life cycle ----------------------------------------------------------
    def start(self) -> None:
        if self._unwatch is not None:
            return
        self._unwatch = self.hub.watch_all(lambda _user, _folder: self._rescan(None))
        self._jobs.submit(self.log.load, self._loaded)
        self._rescan(None)

    def close(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
        self._watchers.clear()

    def _loaded(self, result) -> None:
        if isinstance(result, BaseException):
            log.error("cannot read %s: %s", self.log.path, result)
            return
        for record in result:
            self._add_record(record)

    def _add_record(self, record: dict) -> None:
        self._sent.append(record)
        for mailbox, key in record["files"].items():
            self._records[(mailbox, key)] = record

    # -- the envelope of each delivered message (RecordingDelivery) ----------
    def expect(self, envelope) -> None:
        """A message's data is complete: its envelope waits for its delivery job."""
        self._pending[envelope.queue_id] = envelope

    def take(self, queue_id: str):
        return self._pending.pop(queue_id, None)

    def record(self, envelope, paths: List[str]) -> Optional[dict]:
        """On the Deliverer's worker, after the files' fsync: the envelope on disk."""
        files = {}
        for path in paths:
            local_dir = os.path.dirname(os.path.dirname(path))
            mailbox = os.path.basename(local_dir) + "@" + os.path.basename(os.path.dirname(local_dir))
            files[mailbox] = split_name(os.path.basename(path))[0]
        size = os.stat(paths[0]).st_size if paths else 0
        rec = {"queue_id": envelope.queue_id, "mail_from": envelope.mail_from, "rcpt_to": list(envelope.rcpt_to),
               "auth_user": envelope.auth_user, "tls": bool(envelope.tls), "helo": envelope.helo,
               "peer_ip": envelope.peer_ip, "listener": envelope.listener, "received": self.loop.time(),
               "size": size, "subject": head_fields(disk.read_head(paths[0]))["subject"] if paths else "",
               "files": files}
        try:
            self.log.append(rec)
        except OSError as e:    # the message itself is safe: it is delivered, without its envelope
            log.error("cannot record the envelope of %s in %s: %s", envelope.queue_id, self.log.path, e)
        self.loop.call_soon_threadsafe(lambda: self._add_record(rec))
        return rec

    def submitted(self, done: Done) -> None:
        """``done([record, ...])``: the envelope records of what programs sent us
        (SUBMITTING listeners), oldest first, once the log has been read at start."""
        def answer(_result) -> None:
            done([dict(r) for r in self._sent if r.get("listener") in SUBMITTING])
        self._jobs.submit(lambda: None, answer)     # after the log's load, a job before it

    # -- listing -------------------------------------------------------------
    def _rescan(self, done: Optional[Done]) -> None:
        """List the folders again; ``done(None)`` (or the exception) once a listing
        that began after this call has been applied."""
        if self._next is not None or self._current:
            self._next = (self._next or []) + ([done] if done else [])
            return
        self._current = [done] if done else [None]     # a marker: a listing runs
        self._jobs.submit(self._scan_job, self._scanned)

    def _scan_job(self):
        found = disk.scan(self.store.mail_root)
        heads = {}
        for f in found:
            fields = self._heads.get(f.path)
            if fields is None:
                fields = head_fields(disk.read_head(f.path))
            heads[f.path] = fields
        self._heads = heads         # files gone or renamed are forgotten
        return [(f, heads[f.path]) for f in found]

    def _scanned(self, result) -> None:
        waiting, self._current = self._current, []
        if isinstance(result, BaseException):
            log.error("catch-all list of %s failed: %r", self.store.mail_root, result)
        else:
            self._apply(result)
        for done in waiting:
            if done is not None:
                done(result if isinstance(result, BaseException) else None)
        if self._next is not None:
            following, self._next = self._next, None
            self._current = following or [None]
            self._jobs.submit(self._scan_job, self._scanned)

    def _apply(self, listing) -> None:
        index = {}
        for found, fields in listing:
            msg = self._message(found, fields)
            index[msg.id] = (msg, found)
        self._index = index
        known, self._known = self._known, set(index)
        if known is None:
            return
        fresh = sorted((m for m, _f in index.values() if m.id not in known), key=lambda m: (m.received, m.id))
        for msg in fresh:
            for callback in list(self._watchers):
                try:
                    callback(msg)
                except Exception:
                    log.exception("watch_caught callback failed")

    def _message(self, found: disk.Found, fields: Dict[str, str]) -> CaughtMessage:
        rec = self._records.get((found.mailbox, found.key)) or {}
        return CaughtMessage(
            id=message_id(found.mailbox, found.folder, found.key), mailbox=found.mailbox,
            mail_from=rec.get("mail_from") or "", rcpt_to=tuple(rec.get("rcpt_to") or ()),
            header_from=fields["from"], header_to=fields["to"], subject=fields["subject"], date=fields["date"],
            received=_arrival(found, rec or None), size=found.size, tls=bool(rec.get("tls")),
            auth_user=rec.get("auth_user"), helo=rec.get("helo") or "", peer_ip=rec.get("peer_ip") or "",
            listener=rec.get("listener") or "")

    # -- the CaughtMail contract ---------------------------------------------
    def list_caught(self, query: Dict[str, str], limit: int, done: Done) -> None:
        """Newest first; ``limit`` <= 0: all."""
        def listed(error) -> None:
            if error is not None:
                done(error)
                return
            out = sorted((m for m, _f in self._index.values() if matches(m, query)),
                         key=lambda m: (m.received, m.id), reverse=True)
            done(out[:limit] if limit > 0 else out)
        self._rescan(listed)

    def _locate(self, message_id: str, then: Callable[[Optional[Tuple[CaughtMessage, disk.Found]]], None]) -> None:
        hit = self._index.get(message_id)
        if hit is not None:
            then(hit)
            return
        self._rescan(lambda _error: then(self._index.get(message_id)))

    def caught_raw(self, message_id: str, done: Done) -> None:
        def located(hit) -> None:
            if hit is None:
                done(None)
                return
            self._jobs.submit(lambda: disk.read_message(hit[1]),
                              lambda data: done(data if isinstance(data, BaseException)
                                                else None if data is None else (hit[0], data)))
        self._locate(message_id, located)

    def read_many(self, ids: List[str], done: Done) -> None:
        """``done([bytes or None, ...])`` for these ids of the last listing (for the in-process API)."""
        found = [self._index.get(i) for i in ids]
        self._jobs.submit(lambda: [disk.read_message(h[1]) if h else None for h in found], done)

    def delete_caught(self, message_id: str, done: Done) -> None:
        def located(hit) -> None:
            if hit is None:
                done(False)
                return

            def removed(result) -> None:
                if isinstance(result, BaseException):
                    done(result)
                    return
                self.hub.announce(hit[1].mailbox, hit[1].folder)
                done(result > 0)
            self._jobs.submit(lambda: disk.remove([hit[1]]), removed)
        self._locate(message_id, located)

    def delete_all_caught(self, done: Done) -> None:
        def work():
            found = disk.scan(self.store.mail_root)
            count = disk.remove(found)
            self.log.clear()
            return count, sorted({(f.mailbox, f.folder) for f in found})

        def removed(result) -> None:
            if isinstance(result, BaseException):
                done(result)
                return
            self._records.clear()
            self._sent.clear()
            for mailbox, folder in result[1]:
                self.hub.announce(mailbox, folder)
            done(result[0])
        self._jobs.submit(work, removed)

    def watch_caught(self, callback: Callable[[CaughtMessage], None]) -> Callable[[], None]:
        self._watchers.append(callback)
        return lambda: self._watchers.remove(callback) if callback in self._watchers else None


# -- catch-all delivery: the envelope recorded before the 250 ------------------

class RecordingSink:
    """The MessageSink (protocols/smtp/state.py) of catch-all mode: the real one,
    and the envelope handed to the catalog when the data is complete."""

    def __init__(self, sink, catalog: CaughtCatalog):
        self.sink, self.catalog = sink, catalog

    def write(self, data: bytes) -> None:
        self.sink.write(data)

    def abort(self) -> None:
        self.sink.abort()

    def finish(self, envelope, done) -> None:
        self.catalog.expect(envelope)

        def answered(reply) -> None:
            self.catalog.take(envelope.queue_id)     # not delivered (an error): forgotten
            done(reply)
        self.sink.finish(envelope, answered)


class RecordingDeliverer:
    """store.deliver.Deliverer with the envelope written after each job's fsync."""

    def __init__(self, deliverer, catalog: CaughtCatalog):
        self.deliverer, self.catalog = deliverer, catalog

    def submit(self, job, callback) -> None:
        envelope = self.catalog.take(job.queue_id)      # loop thread
        if envelope is None:
            self.deliverer.submit(job, callback)
            return

        def delivered(result) -> None:                  # the Deliverer's worker
            if result.ok:
                try:
                    self.catalog.record(envelope, result.paths)
                except Exception:       # the message is delivered: its 250 must not wait on this
                    log.exception("cannot record the envelope of %s", job.queue_id)
            callback(result)
        self.deliverer.submit(job, delivered)

    def flush_uids(self) -> None:
        self.deliverer.flush_uids()

    def close(self) -> None:
        self.deliverer.close()


class RecordingDelivery(DeliveryService):
    """The delivery service of catch-all mode (chosen in protocols/backend/wiring.py)."""

    catalog: Optional[CaughtCatalog] = None

    def start(self) -> None:
        super().start()
        if not isinstance(self.deliverer, RecordingDeliverer):
            self.deliverer = RecordingDeliverer(self.deliverer, self.catalog)

    def open_message(self, envelope):
        sink = super().open_message(envelope)
        return sink if isinstance(sink, tuple) else RecordingSink(sink, self.catalog)
