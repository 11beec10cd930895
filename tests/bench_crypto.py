"""Cost of the pure-Python cryptography (protocols/crypto/): key generation,
signing, verifying, and the self-signed certificate, as medians.

    python3 tests/bench_crypto.py [ROUNDS]
"""

import datetime
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from protocols.crypto import ed25519, rsa, x509   # noqa: E402


def timed(fn, rounds):
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times), max(times)


def show(what, result):
    median, low, high = result
    print(f"{what:40s} median {median * 1000:8.1f} ms   (min {low * 1000:.1f}, max {high * 1000:.1f})")


def main(rounds: int = 9) -> None:
    show(f"RSA-2048 key generation ({rounds} keys)", timed(lambda: rsa.generate(), rounds))
    key = rsa.generate()
    msg = b"x" * 2000
    sig = key.sign(msg)
    show("RSA-2048 sign (SHA-256, CRT)", timed(lambda: key.sign(msg), 50))
    show("RSA-2048 verify", timed(lambda: key.public.verify(msg, sig), 50))
    ed = ed25519.generate()
    ed_sig = ed.sign(msg)
    show("Ed25519 key generation (with its public key)", timed(lambda: ed25519.generate().public.spki(), 50))
    show("Ed25519 sign", timed(lambda: ed.sign(msg), 50))
    show("Ed25519 verify", timed(lambda: ed.public.verify(msg, ed_sig), 50))
    now = datetime.datetime.now(datetime.timezone.utc)
    show("self-signed certificate (key made)", timed(lambda: x509.self_signed(key, "mx.example.org", now), 20))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9)
