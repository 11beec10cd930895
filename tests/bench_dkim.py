"""Cost of DKIM per message (protocols/dkim.py), as medians: signing (both
c=relaxed/relaxed, the recommended header set) and verifying (parse, key
record, body hash, signature; the DNS answer given at once), for RSA-2048
and Ed25519, on a 4 KB message and on a 1 MB one.  Then the SMTP submission
throughput of a `mailsrv.py` process (4 clients, AUTH PLAIN on loopback,
4 KB messages for a remote recipient, queued) with signing off and on.

    python3 tests/bench_dkim.py [ROUNDS]
"""

import base64
import os
import re
import select
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from protocols import dkim   # noqa: E402
from protocols.crypto import ed25519, rsa   # noqa: E402
from tests.spffake import FakeResolver   # noqa: E402

HEAD = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: benchmark\r\n"
        b"Date: Sun, 29 Nov 2026 20:00:00 +0000\r\nMessage-ID: <bench@example.org>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
LINE = b"The quick brown fox jumps over the lazy dog, 0123456789 times.  \r\n"


def message(size: int) -> bytes:
    return HEAD + LINE * (size // len(LINE))


def median_ms(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def record(key) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(key.public.raw).decode()
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(key.public.spki()).decode()


def main(rounds: int = 21) -> None:
    now = int(time.time())
    for name, key in (("RSA-2048", rsa.generate(2048)), ("Ed25519", ed25519.generate())):
        res = FakeResolver()
        res.add("sel._domainkey.example.org", "TXT", record(key))
        for size in (4096, 1 << 20):
            data = message(size)
            signers = [("example.org", "sel", key)]
            signed = dkim.sign_message(data, signers, now)
            out = []
            dkim.verify(signed, res, out.extend, now)
            assert out[0].result == "pass", out
            sign_ms = median_ms(lambda: dkim.sign_message(data, signers, now), rounds)
            verify_ms = median_ms(lambda: dkim.verify(signed, res, lambda r: None, now), rounds)
            print(f"DKIM {name:8s} {len(data) // 1024:5d} KB: sign median {sign_ms:7.1f} ms, "
                  f"verify median {verify_ms:7.1f} ms")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS, MESSAGES = 4, 200


def smtp_throughput(sign: bool) -> float:
    """Messages a second through submission into the queue (DKIM keys in place, dkim_sign = sign)."""
    tmp = tempfile.mkdtemp(prefix="bench-dkim-")
    try:
        conf = os.path.join(tmp, "mailsrv.ini")
        ports = "".join("%s_port = off\n" % p for p in ("smtp", "smtps", "pop3", "pop3s", "imap", "imaps"))
        with open(conf, "w") as f:
            f.write("[mailsrv]\ndata_dir = %s\nhostname = mx.example.org\ndomains = example.org\n%s"
                    "submission_port = 0\nlog_level = WARNING\nrelayhost = 127.0.0.1:9\ntls_self_signed = no\n"
                    "dkim_sign = %s\n" % (tmp, ports, "yes" if sign else "no"))
        run = [sys.executable, os.path.join(ROOT, "mailsrv.py"), "--config", conf]
        subprocess.run(run + ["user", "add", "alice@example.org"], input=b"bench-secret\n", check=True,
                       capture_output=True)
        for kind in ("rsa", "ed25519"):
            subprocess.run(run + ["dkim", "keygen", "example.org", "--type", kind], check=True, capture_output=True)
        proc = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            m = re.match(rb"listening submission \S+:(\d+)", proc.stdout.readline() if ready else b"")
            if not m:
                sys.exit("mailsrv did not start")
            port = int(m.group(1))
            data = message(4096)

            def client(count: int) -> None:
                with smtplib.SMTP("127.0.0.1", port) as c:
                    c.login("alice@example.org", "bench-secret")
                    for _ in range(count):
                        c.sendmail("alice@example.org", ["bob@example.net"], data)
            threads = [threading.Thread(target=client, args=(MESSAGES // CLIENTS,)) for _ in range(CLIENTS)]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return MESSAGES / (time.perf_counter() - started)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 21)
    for sign in (False, True):
        print(f"SMTP submission, {CLIENTS} clients, {MESSAGES} x 4 KB queued, signing {'on (RSA-2048 + Ed25519)' if sign else 'off'}: "
              f"{smtp_throughput(sign):6.1f} messages/s")
