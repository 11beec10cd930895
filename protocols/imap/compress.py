"""COMPRESS=DEFLATE (RFC 4978) for the IMAP session, sans-I/O.

The compression layer sits inside the session, above TLS (RFC 4978 §3: "first
COMPRESS, then SASL, and finally TLS"): the loop hands ``receive_data`` the
bytes TLS decrypted, the session inflates them before its command reader, and
``data_to_send`` deflates what the session queued before the loop encrypts it.

- Both directions are raw DEFLATE (RFC 1951) without zlib or gzip framing:
  windowBits -15 (RFC 4978 §4: "The windowBits value must be in the range
  -8 to -15, or else deflateInit2() uses the wrong format").
- Output is flushed with Z_SYNC_FLUSH at the end of each batch the session
  hands the loop (RFC 4978 §4 "partial flush"), so a client sees every
  response it is waiting for at once, pipelined or not.
- Input is inflated in bounded steps (``INFLATE_STEP``) with the unconsumed
  tail kept, so a few kilobytes of compressed zeros never become gigabytes in
  memory: the session checks its line and literal limits after every step,
  exactly as for uncompressed input (a "zip bomb" meets the same limits).

Memory per compressed session: zlib's deflate state is about
``(1 << (windowBits + 2)) + (1 << (memLevel + 9))`` = 256 KiB with the values
below, inflate about 1 << windowBits = 32 KiB plus 7 KiB; taken only by
sessions that ask for COMPRESS.  Left out: the level changes around
incompressible literals that RFC 4978 §4 suggests (informative only).
"""

from __future__ import annotations

import zlib

# RFC 4978 §4 / RFC 1951: raw deflate, the full 32 KiB window.  The inflater
# must take any window a client uses (up to 32 KiB), so it is -15 whatever we
# send with; our deflater uses the same, as Dovecot 2.3 (ostream-zlib.c:
# deflateInit2(..., -15, 8, ...)).
WBITS = -15
# zlib's default memLevel (8), Dovecot's value too (see WBITS).
MEM_LEVEL = 8
# Dovecot 2.3's default imap_zlib_compress_level (6), zlib's default level.
LEVEL = 6
# Decompressed octets produced per step before the session checks its limits:
# the loop's read size (protocols/loop_transport.py READ_CHUNK, 64 KiB), so
# compressed input never holds more in flight than uncompressed input does.
INFLATE_STEP = 64 * 1024


class CompressError(Exception):
    """The client's compressed stream is corrupt (a BYE-class error)."""


class Deflater:
    """Our side of the stream: queued responses in, compressed octets out."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(LEVEL, zlib.DEFLATED, WBITS, MEM_LEVEL)
        self.plain = 0        # octets given (for the session's log line)
        self.wire = 0         # octets produced

    def compress(self, data: bytes) -> bytes:
        """One batch for the loop, ended with a sync flush (RFC 4978 §4)."""
        if not data:
            return b""
        out = self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)
        self.plain += len(data)
        self.wire += len(out)
        return out


class Inflater:
    """The client's side: compressed octets in, commands' octets out in steps."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(WBITS)
        self._pending = b""   # compressed octets not yet inflated
        self.wire = 0
        self.plain = 0

    def feed(self, data: bytes) -> None:
        self.wire += len(data)
        self._pending = self._pending + data if self._pending else data

    def read(self, step: int = INFLATE_STEP) -> bytes:
        """At most ``step`` inflated octets; b"" when more input is needed.

        The unconsumed tail is kept for the next call, so the caller can
        apply its limits between steps (the zip-bomb bound)."""
        if not self._pending:
            return b""
        if self._z.eof:
            # RFC 4978 §3: compression lasts as long as the connection; a
            # client that ends its deflate stream cannot send anything more.
            raise CompressError("data after the end of the compressed stream")
        try:
            out = self._z.decompress(self._pending, step)
        except zlib.error as exc:
            raise CompressError("corrupt compressed data (%s)" % exc) from None
        self._pending = self._z.unconsumed_tail
        if self._z.eof and (self._pending or self._z.unused_data):
            raise CompressError("data after the end of the compressed stream")
        self.plain += len(out)
        return out
