"""The QRESYNC row of tests/bench_imap.py (issue 12 "Benchmark"): a client that
last synced the INBOX resyncs it after 10 changes (RFC 7162 §3.2.5).

One session ENABLEs QRESYNC and SELECTs the INBOX: it keeps UIDVALIDITY and
HIGHESTMODSEQ, as a client does when it disconnects.  A second session then
makes 10 changes on messages spread over the folder: a keyword added to 7,
3 expunged (UID EXPUNGE, RFC 4315).  The client comes back later, as in the
"later open" rows (MTIME_SLACK_S + 0.2 s: a folder changed within the store's
mtime slack is listed again at every look, by design, store/folder.py; a
resync right after the changes would measure that listing, not QRESYNC).
A third session ENABLEs QRESYNC and is timed on ``SELECT INBOX (QRESYNC (uidvalidity modseq))`` alone (its login
and ENABLE are not in the time); the responses it receives beyond the usual
SELECT ones (``VANISHED (EARLIER)`` lines and FETCHes) are counted: 1 + 7
is the right answer, 10,000 what a client without QRESYNC would fetch.
Afterwards the folder is put back (the keyword removed, the 3 messages
APPENDed again with their flags) so the next round counts the same corpus.
"""

import imaplib
import re
import time

from store.folder import MTIME_SLACK_S

ROW = "QRESYNC SELECT INBOX after 10 changes (7 flags, 3 expunged)"
KEYWORD = "$BenchQresync"
CHANGED, EXPUNGED = 7, 3


def _ok(result, what):
    typ, data = result
    if typ != "OK":
        raise imaplib.IMAP4.error("%s: %s %s" % (what, typ, data[:1]))
    return data


def _qresync_login(login, server):
    c = login(server)
    _ok(c.enable("QRESYNC"), "ENABLE QRESYNC")
    return c


def measure_qresync(server, login, out, counts):
    """The row's time in ``out``; the responses counted in ``counts`` (want 8)."""
    c = _qresync_login(login, server)
    _ok(c.select("INBOX"), "SELECT")
    modseq = int(c.response("HIGHESTMODSEQ")[1][0])
    validity = int(c.response("UIDVALIDITY")[1][0])
    uids = [int(u) for u in _ok(c.uid("SEARCH", "ALL"), "UID SEARCH")[0].split()]
    c.logout()
    picked = [uids[(i * len(uids)) // (CHANGED + EXPUNGED) + 5] for i in range(CHANGED + EXPUNGED)]
    flagged, gone = picked[:CHANGED], picked[CHANGED:]
    saved = _change(server, login, flagged, gone)
    time.sleep(MTIME_SLACK_S + 0.2)         # see the module docstring
    r = _qresync_login(login, server)
    r.untagged_responses.clear()
    t = time.perf_counter()
    typ, _ = r._simple_command("SELECT", "INBOX (QRESYNC (%d %d))" % (validity, modseq))
    out[ROW] = time.perf_counter() - t
    if typ != "OK":
        raise imaplib.IMAP4.error("SELECT (QRESYNC): %s" % typ)
    vanished = r.untagged_responses.get("VANISHED", [])
    fetched = r.untagged_responses.get("FETCH", [])
    counts[ROW + ": responses"] = (len(vanished) + len(fetched), 1 + CHANGED)
    counts[ROW + ": UIDs vanished"] = (_count_set(b",".join(v.split(b" ", 1)[-1] for v in vanished)), EXPUNGED)
    r.logout()
    _restore(server, login, flagged, saved)


def _change(server, login, flagged, gone):
    """The 10 changes; returns the expunged messages (flags, octets) to put back."""
    c = login(server)
    _ok(c.select("INBOX"), "SELECT")
    _ok(c.uid("STORE", ",".join(map(str, flagged)), "+FLAGS.SILENT", "(%s)" % KEYWORD), "STORE")
    saved = []
    for uid in gone:
        data = _ok(c.uid("FETCH", str(uid), "(FLAGS BODY.PEEK[])"), "FETCH")
        head = data[0][0]
        flags = re.search(rb"FLAGS \(([^)]*)\)", head).group(1).decode().split()
        saved.append((" ".join(f for f in flags if f != "\\Recent"), data[0][1]))
    _ok(c.uid("STORE", ",".join(map(str, gone)), "+FLAGS.SILENT", "(\\Deleted)"), "STORE \\Deleted")
    _ok(c.uid("EXPUNGE", ",".join(map(str, gone))), "UID EXPUNGE")
    c.logout()
    return saved


def _restore(server, login, flagged, saved):
    c = login(server)
    _ok(c.select("INBOX"), "SELECT")
    _ok(c.uid("STORE", ",".join(map(str, flagged)), "-FLAGS.SILENT", "(%s)" % KEYWORD), "STORE -FLAGS")
    for flags, data in saved:
        _ok(c.append("INBOX", "(%s)" % flags if flags else None, None, data), "APPEND")
    c.logout()


def _count_set(text):
    """UIDs in a sequence set (b"3,5:7" is 4)."""
    n = 0
    for part in text.split(b","):
        if part:
            lo, _, hi = part.partition(b":")
            n += abs(int(hi or lo) - int(lo)) + 1
    return n
