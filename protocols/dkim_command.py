"""`mailsrv.py dkim keygen DOMAIN [--selector S] [--type rsa|ed25519]` and
`mailsrv.py dkim verify < message` (README "DKIM").

keygen: a key made in pure Python (protocols/crypto/), written as PKCS#8 PEM
to DATA/dkim/<domain>/<selector>.<type>.pem (store/dkimkeys.py: 0600, atomic,
fsync'd), and the TXT record to publish printed (RFC 6376 §3.6.1, §3.6.2.1),
its p= split into strings of at most 255 octets (RFC 1035 §3.3.14).
verify: each DKIM-Signature of the message on stdin checked through our
resolver (protocols/dkim.py), one line per signature.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import sys
from typing import List, Optional

from protocols import dkim
from protocols.config import Config, ConfigError
from protocols.crypto import ed25519, rsa
from store.dkimkeys import valid_name, write_key

TXT_STRING_MAX = 255            # RFC 1035 §3.3.14: a <character-string> is at most 255 octets
MAX_MESSAGE = 64 * 1024 * 1024  # dkim verify reads at most this much of stdin


def dkim_parser(sub, common: argparse.ArgumentParser) -> None:
    """`dkim keygen` and `dkim verify` (mailsrv.py's parser; ``run`` is called by admin_main)."""
    dkim_cmd = sub.add_parser("dkim", help="dkim keygen DOMAIN: a signing key and its DNS record; "
                              "dkim verify < MESSAGE: check its signatures").add_subparsers(dest="action", required=True)
    keygen = dkim_cmd.add_parser("keygen", parents=[common])
    keygen.add_argument("domain")
    keygen.add_argument("--selector", help="the selector (default: <type>-<YYYYMM>, e.g. rsa-202611)")
    keygen.add_argument("--type", dest="key_type", choices=("rsa", "ed25519"), default="rsa")
    keygen.add_argument("--bits", type=int, default=rsa.DEFAULT_BITS, help="RSA key size (default 2048)")
    keygen.set_defaults(run=lambda cfg, args: keygen_main(cfg, args.domain, args.selector, args.key_type, args.bits))
    verify = dkim_cmd.add_parser("verify", parents=[common])
    verify.set_defaults(run=lambda cfg, args: verify_main(cfg, sys.stdin.buffer.read(MAX_MESSAGE)))


def txt_record(selector: str, domain: str, key) -> str:
    """The zone-file line to publish (RFC 6376 §3.6.1; RFC 8463 §4 for Ed25519's raw p=)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        kind, public = "ed25519", key.public.raw
    else:
        kind, public = "rsa", key.public.spki()
    text = "v=DKIM1; k=%s; p=%s" % (kind, base64.b64encode(public).decode())
    strings = [text[i:i + TXT_STRING_MAX] for i in range(0, len(text), TXT_STRING_MAX)]
    return "%s._domainkey.%s. IN TXT ( %s )" % (selector, domain, " ".join('"%s"' % s for s in strings))


def keygen_main(cfg: Config, domain: str, selector: Optional[str], key_type: str, bits: int) -> int:
    domain = domain.lower().rstrip(".")
    if not valid_name(domain) or "." not in domain:
        raise ConfigError(f"dkim keygen {domain!r}: not a domain name")
    selector = selector or "%s-%s" % (key_type, datetime.date.today().strftime("%Y%m"))
    if not valid_name(selector):
        raise ConfigError(f"dkim keygen --selector {selector!r}: letters, digits, hyphens and dots only (RFC 6376 §3.1)")
    if key_type == "rsa" and not 1024 <= bits <= 4096:
        raise ConfigError(f"dkim keygen --bits {bits}: 1024 to 4096 (RFC 8301 §3.2; 2048 recommended)")
    key = ed25519.generate() if key_type == "ed25519" else rsa.generate(bits)
    path = write_key(cfg.data_dir, domain, selector, key_type, key.pem())
    print(f"key {path}")
    print("publish this record, then reload the server (it signs with the newest key of each type):")
    print(txt_record(selector, domain, key))
    return 0


def verify_main(cfg: Config, data: bytes) -> int:
    """One line per signature; exit 0 when every signature passed, 1 otherwise."""
    from protocols.loop import EventLoop
    from protocols.startup import make_resolver
    try:
        with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as f:
            resolv_conf = f.read()
    except OSError:
        resolv_conf = ""
    loop = EventLoop()
    resolver = make_resolver(loop, cfg.dns_servers, resolv_conf)[0]
    out: List[List[dkim.DkimResult]] = []

    def done(results):
        out.append(results)
        loop.stop()
    now = int(datetime.datetime.now(datetime.timezone.utc).timestamp())
    dkim.verify(data, resolver, done, now)
    if not out:
        loop.call_later(60, loop.stop)
        loop.run()
    if not out:
        print("dkim: no answer from the resolver within 60 s")
        return 1
    for res in out[0]:
        line = res.ar_text()
        if res.testing:
            line += " (key in testing mode, t=y)"
        print(line)
    return 0 if all(r.result == "pass" for r in out[0]) else 1
