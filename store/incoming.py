"""A message being received, written to disk as it arrives (never whole in memory).

The SMTP session hands the message over in pieces (its ``MessageSink``,
protocols/smtp/state.py); the backend writes them here, straight into the
files the message will be delivered from:

* local recipients: the first recipient's Maildir ``tmp/<unique>``, in
  stored form (LF line ends) after ``Return-Path:`` (+ ``Delivered-To:``),
  exactly what ``store/deliver.py`` would have written; at the end the
  Deliverer fsyncs it and hard-links it into every recipient's ``new/``
  (``DeliveryJob.spool``), with the same group-committed directory fsyncs;
* remote recipients: the queue's ``tmp-<id>.msg`` (CRLF, as received);
  ``Queue.enqueue_file`` fsyncs it, renames it to ``<id>.msg``, then writes
  the envelope (the commit point).

A message for both is written to both as it comes (one copy each, never a
second pass).  Writes are bounded buffered appends (``AppendFile``: 64 KiB
held at most per file) made where ``write`` is called, the event loop's
thread: an append to the page cache costs microseconds; the rest (for a
message under 64 KiB: creating and writing the file) and every fsync run
on a worker thread.  A write error is remembered and reported once the
message has been read (the session answers 452 4.3.1, RFC 3463 §3.4); the
files are removed on any error or ``discard``.
"""

from __future__ import annotations

import os
from typing import List, Optional

from store.deliver import DeliveryJob, Spooled, _check_job, delivery_head
from store.fsutil import AppendFile
from store.maildir import MailStore


class IncomingMessage:
    """The files of one message being received (see the module docstring)."""

    def __init__(self, store: MailStore, queue, queue_id: str, return_path: str,
                 users: List[str], remote: bool, delivered_to: str = ""):
        self.queue_id = queue_id
        self.return_path = return_path
        self.delivered_to = delivered_to
        self.users = list(dict.fromkeys(users))
        self.error: Optional[BaseException] = None
        self.local: Optional[AppendFile] = None
        self.remote: Optional[AppendFile] = None
        try:
            if self.users:
                _check_job(DeliveryJob(b"", return_path, self.users, queue_id, delivered_to))
                self.local = self._open_local(store)
                self.local.write(delivery_head(return_path, self.users, delivered_to))
            if remote:
                self.remote = queue.open_incoming(queue_id)
        except (OSError, ValueError) as exc:
            self._fail(exc)

    def _open_local(self, store: MailStore) -> AppendFile:
        user = self.users[0]

        def path() -> str:      # named when first written (a worker thread, for small messages)
            name = store.unique_name(0).partition(",")[0]
            return os.path.join(store.maildir_path(user), "tmp", name)
        return AppendFile(path, prepare=lambda: store.create_mailbox(user), lf=True)

    def write(self, data: bytes) -> None:
        """The next piece of the message (wire form: CRLF)."""
        if self.error is not None:
            return
        try:
            if self.local is not None:
                self.local.write(data)
            if self.remote is not None:
                self.remote.write(data)
        except OSError as exc:
            self._fail(exc)

    def local_job(self) -> DeliveryJob:
        """The Deliverer's job for the local part (it fsyncs, links, cleans up)."""
        job = DeliveryJob(b"", self.return_path, self.users, self.queue_id, self.delivered_to,
                          spool=Spooled(self.local))
        self.local = None
        return job

    def enqueue(self, queue, sender: str, recipients: List[str], now: float,
                smtputf8: bool, body_8bit: bool):
        """The remote part into the queue, durably; blocking (a worker thread)."""
        remote, self.remote = self.remote, None
        return queue.enqueue_file(remote, sender, recipients, self.queue_id, now,
                                  smtputf8=smtputf8, body_8bit=body_8bit)

    def discard(self) -> None:
        """Remove whatever was written (refused, aborted, or failed)."""
        for f in (self.local, self.remote):
            if f is not None:
                try:
                    f.discard()
                except OSError:
                    pass
        self.local = self.remote = None

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.discard()
