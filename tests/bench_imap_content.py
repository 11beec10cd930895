"""IMAP content-code micro-benchmark: not a test, prints a table.

    python3 tests/bench_imap_content.py [--messages 10000] [--runs 3] [--profile OP]

CPU time of the pure functions behind FETCH and SEARCH over a corpus
generated in memory (seeded, nothing written to disk): ``mime.parse``, the
ENVELOPE, BODYSTRUCTURE and ``BODY[HEADER.FIELDS (FROM SUBJECT DATE)]``
renderings of protocols/imap/fetch_data.py (the MIME tree parsed before the
clock starts, as a session parses it once per message for all its items),
and ``search_eval.matches`` for SUBJECT, FROM, BODY (a word that matches some
messages and one that matches none) and TEXT.  Each row is the median over
``--runs`` passes of the whole corpus; ``--profile OP`` runs cProfile on one
pass of one row instead.

The corpus: messages of a realistic mix (the percentages are ours): a
header of 10-16 fields (Received lines, display names, some RFC 2047
encoded-word subjects and names in UTF-8 or ISO-8859-1), text/plain bodies
of 1-20 KB; 15% multipart/alternative (plain + HTML), 15% multipart/mixed
with a base64 attachment, 10% quoted-printable UTF-8 text with non-ASCII
words, 5% ISO-8859-1 8bit text.
"""

import argparse
import base64
import binascii
import cProfile
import os
import pstats
import random
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from protocols import mime  # noqa: E402
from protocols.backend.contracts import MessageMeta  # noqa: E402
from protocols.imap import fetch_data  # noqa: E402
from protocols.imap import search as imap_search  # noqa: E402
from protocols.imap import search_eval  # noqa: E402
from protocols.imap.fetch_args import fetch_att  # noqa: E402

WORDS = tuple(("the of and to in is that for it as was with be by on not he this are or his from at which but "
         "have an they you were her she there been one all we their has would when if so no will more "
         "report meeting budget quarter server mailbox invoice project schedule review draft release "
         "network customer contract delivery weekend holiday question answer thanks regards").split())
NON_ASCII = ("Grüße", "Köln", "café", "naïve", "Straße", "Ångström", "élève", "Zürich", "señor", "jalapeño")
NAMES = ("Alice Martin", "Bob Jones", "Carol White", "Dave Brown", "Eve Black", "Frank Green",
         "Jörg Müller", "Zoë Dupré", "Søren Ødegård", "Renée Faure")
DOMAINS = ("example.com", "example.org", "example.net", "mail.example.de", "lists.example.fr")
CRLF = b"\r\n"


def _text(rng, size, extra=()):
    """Lines of 10 words, about ``size`` octets, CRLF-ended; 5% of them
    hold the rare word "needlework"."""
    words = rng.choices(WORDS + tuple(extra), k=max(10, size // 6))
    if rng.random() < 0.05:
        words[rng.randrange(len(words))] = "needlework"
    return "".join(" ".join(words[i:i + 10]) + "\r\n" for i in range(0, len(words), 10))


def _encoded_word(rng, text):
    if rng.random() < 0.5:
        return "=?UTF-8?B?%s?=" % base64.b64encode(text.encode()).decode()
    qp = binascii.b2a_qp(text.encode("iso-8859-1"), header=True).decode()
    return "=?ISO-8859-1?Q?%s?=" % qp


def _address(rng, encoded):
    name = rng.choice(NAMES)
    local = name.split()[0].lower().encode("ascii", "ignore").decode() or "user"
    addr = "%s%d@%s" % (local, rng.randint(1, 99), rng.choice(DOMAINS))
    if not name.isascii():
        name = _encoded_word(rng, name) if encoded else '"%s"' % name.encode("ascii", "replace").decode()
    return "%s <%s>" % (name, addr)


def _header(rng, n, content):
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8)))
    if rng.random() < 0.2:
        subject = _encoded_word(rng, rng.choice(NON_ASCII) + " " + subject)
    lines = ["Return-Path: <bounce%d@%s>" % (n, rng.choice(DOMAINS))]
    for hop in range(rng.randint(1, 3)):
        lines.append("Received: from mx%d.%s (mx%d.%s [192.0.2.%d])\r\n\tby mail.example.com with ESMTPS"
                     " id %08X\r\n\tfor <user@example.com>; Mon, 6 Mar 2023 10:%02d:00 +0000"
                     % (hop, rng.choice(DOMAINS), hop, rng.choice(DOMAINS), rng.randint(1, 254),
                        rng.getrandbits(32), rng.randint(0, 59)))
    lines += ["From: " + _address(rng, rng.random() < 0.3),
              "To: " + ", ".join(_address(rng, False) for _ in range(rng.randint(1, 3)))]
    if rng.random() < 0.3:
        lines.append("Cc: " + _address(rng, True))
    lines += ["Subject: " + subject,
              "Date: Mon, %d Mar 2023 %02d:%02d:%02d +0100" % (rng.randint(1, 28), rng.randint(0, 23),
                                                               rng.randint(0, 59), rng.randint(0, 59)),
              "Message-ID: <%d.%08x@%s>" % (n, rng.getrandbits(32), rng.choice(DOMAINS)),
              "MIME-Version: 1.0"]
    if rng.random() < 0.3:
        lines.append("In-Reply-To: <%d.parent@%s>" % (n, rng.choice(DOMAINS)))
    if rng.random() < 0.5:
        lines.append("X-Mailer: BenchMailer %d.%d" % (rng.randint(1, 9), rng.randint(0, 9)))
    return ("\r\n".join(lines + content) + "\r\n\r\n").encode()


def message(rng, n):
    """One corpus message (CRLF line ends)."""
    size = rng.randint(1000, 20000)
    kind = rng.random()
    if kind < 0.15:          # multipart/alternative: plain + HTML
        b = "alt-%08x" % rng.getrandbits(32)
        plain = _text(rng, size)
        html = "<html><body><p>" + plain.replace("\r\n", "</p>\r\n<p>") + "</p></body></html>\r\n"
        body = ("This is a multi-part message in MIME format.\r\n\r\n"
                "--%s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n%s"
                "\r\n--%s\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n%s"
                "\r\n--%s--\r\n" % (b, plain, b, html, b))
        return _header(rng, n, ['Content-Type: multipart/alternative; boundary="%s"' % b]) + body.encode()
    if kind < 0.30:          # multipart/mixed with a base64 attachment
        b = "mix-%08x" % rng.getrandbits(32)
        blob = rng.randbytes(rng.randint(2000, 30000))
        att = base64.encodebytes(blob).replace(b"\n", CRLF)
        head = _header(rng, n, ['Content-Type: multipart/mixed; boundary="%s"' % b])
        return head + ("--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%s\r\n--%s\r\n"
                       "Content-Type: application/pdf; name=\"report-%d.pdf\"\r\n"
                       "Content-Disposition: attachment; filename=\"report-%d.pdf\"\r\n"
                       "Content-Transfer-Encoding: base64\r\n\r\n"
                       % (b, _text(rng, size // 2), b, n, n)).encode() + att + ("\r\n--%s--\r\n" % b).encode()
    if kind < 0.40:          # quoted-printable UTF-8 with non-ASCII words
        qp = binascii.b2a_qp(_text(rng, size, NON_ASCII).encode()).replace(b"\n", CRLF)
        return _header(rng, n, ["Content-Type: text/plain; charset=utf-8",
                                "Content-Transfer-Encoding: quoted-printable"]) + qp
    if kind < 0.45:          # ISO-8859-1, 8bit
        return _header(rng, n, ["Content-Type: text/plain; charset=ISO-8859-1",
                                "Content-Transfer-Encoding: 8bit"]) + \
            _text(rng, size, NON_ASCII[:6]).encode("iso-8859-1")
    return _header(rng, n, ["Content-Type: text/plain; charset=us-ascii; format=flowed",
                            "Content-Transfer-Encoding: 7bit"]) + _text(rng, size).encode()


def corpus(count, seed=10):
    rng = random.Random(seed)
    return [message(rng, n) for n in range(count)]


def _fetch(spec, msgs, roots):
    att = fetch_att(spec.encode())[0]
    render = fetch_data.render
    return lambda: [render(att, data, root) for data, root in zip(msgs, roots)]


def _search(spec, msgs):
    key = imap_search.search_args(b" " + spec.encode() + b"\r\n").key
    meta = MessageMeta(1, frozenset(), 100, 0.0, 1, None)
    ctx = search_eval.SearchContext(largest_seq=len(msgs), largest_uid=len(msgs), saved=(), now=0.0)
    matches = search_eval.matches
    return lambda: sum(matches(key, n, meta, False, data, ctx) for n, data in enumerate(msgs, 1))


def operations(msgs, roots):
    """(row name, callable over the whole corpus)."""
    return [
        ("mime.parse", lambda: [mime.parse(d) for d in msgs]),
        ("ENVELOPE render", _fetch("ENVELOPE", msgs, roots)),
        ("BODYSTRUCTURE render", _fetch("BODYSTRUCTURE", msgs, roots)),
        ("HEADER.FIELDS (FROM SUBJECT DATE)", _fetch("BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)]", msgs, roots)),
        ("SEARCH SUBJECT report", _search("SUBJECT report", msgs)),
        ("SEARCH FROM martin", _search("FROM martin", msgs)),
        ("SEARCH BODY budget (most match)", _search("BODY budget", msgs)),
        ("SEARCH BODY needlework (5% match)", _search("BODY needlework", msgs)),
        ("SEARCH BODY zyxwvut (no match)", _search("BODY zyxwvut", msgs)),
        ("SEARCH TEXT zyxwvut", _search("TEXT zyxwvut", msgs)),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--profile", help="profile one row (a prefix of its name) instead")
    ap.add_argument("--only", help="time only the rows whose name starts with this")
    args = ap.parse_args()
    t0 = time.perf_counter()
    msgs = corpus(args.messages, args.seed)
    roots = [mime.parse(d) for d in msgs]
    total = sum(map(len, msgs))
    print("corpus: %d messages, %.1f MB, built in %.1f s; python %s"
          % (len(msgs), total / 1e6, time.perf_counter() - t0, sys.version.split()[0]))
    for name, op in operations(msgs, roots):
        if args.profile:
            if name.startswith(args.profile):
                prof = cProfile.Profile()
                prof.runcall(op)
                pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
            continue
        if args.only and not name.startswith(args.only):
            continue
        times = []
        for _ in range(args.runs):
            start = time.process_time()
            result = op()
            times.append(time.process_time() - start)
        med = statistics.median(times)
        extra = "  (%d matches)" % result if isinstance(result, int) else ""
        print("%-36s %8.3f s  %7.1f us/msg%s" % (name, med, med * 1e6 / len(msgs), extra))


if __name__ == "__main__":
    main()
