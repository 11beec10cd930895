"""IMAP URLs naming one message or message part (RFC 5092), as CATENATE
(RFC 4469 §3) and REPLACE (RFC 8508 §4.2) take them, with URL-PARTIAL's
``;PARTIAL=`` (RFC 5550 §5, RFC 5092 §6 ipartial), pure functions.

Accepted (RFC 4469 §3: "only relative IMAP message or message part URLs"
against the base ``imap://user@server/``, plus the absolute form naming that
same base):

- an absolute-path reference ``/INBOX;UIDVALIDITY=785799047/;UID=20/;SECTION=1.2``
  (RFC 5092 §7.1), dot segments removed first (RFC 3986 §5.2.4, RFC 5092 §7);
- ``;UID=20/;SECTION=1.2`` while a mailbox is selected: a message of it
  (RFC 4469 §3's base URL; see ``parse``);
- ``imap://user@host[:port]/...`` and ``//user@host/...`` (RFC 5092 §11
  imapurl, inetwork-path) whose enc-user is the session's own user and whose
  host is this server's name; ``;AUTH=`` (iauth) is ignored, the session is
  already authenticated (RFC 4469 §3).

Refused with ``BadUrl`` (the session answers ``NO [BADURL url]``, RFC 4469
§4.1): other relative-path references (RFC 5092 §7.2), an absolute URL
without a user (RFC 5092 §3.1: our names depend on the user) or with
another user or another host, a mailbox list or
search (``?``), URLAUTH (RFC 4467 is not offered), a missing UID, numbers
out of range, mailbox names that are not UTF-8 once percent-decoded (RFC 5092
§8), a section that is not a section-spec (RFC 9051 §9).  The mailbox name
is checked again by the session (session_base.check_name: no "..").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple
from urllib.parse import quote, unquote_to_bytes

from protocols import mime
from protocols.imap import fetch_data
from protocols.imap import grammar as g
from protocols.imap.fetch_args import Section, section


class BadUrl(Exception):
    """A URL this server cannot resolve (RFC 4469 §4.1); ``str`` says why."""


@dataclass(frozen=True)
class MessageUrl:
    """RFC 5092 §6 imessagepart: mailbox, optional UIDVALIDITY, UID, optional
    section-spec and partial range (offset, length or None: to the end)."""
    mailbox: str
    uidvalidity: Optional[int]
    uid: int
    section: Optional[Section] = None
    partial: Optional[Tuple[int, Optional[int]]] = None


# RFC 5092 §11: imessagepart = imailbox-ref iuid [isection] [ipartial], with
# imailbox-ref = enc-mailbox [uidvalidity]; enc-mailbox is bchars (no ";"),
# enc-section bchars up to the next "/;"; keys case-insensitive (§11 "Strings
# are not case sensitive").  A trailing iurlauth (;EXPIRE= / ;URLAUTH=) is caught
# to be refused by name.
_MESSAGE = re.compile(
    r"(?P<mbox>[^;?#]+?)(?:;UIDVALIDITY=(?P<validity>[0-9]+))?/;UID=(?P<uid>[0-9]+)"
    r"(?:/;SECTION=(?P<section>[^;?#]+?))?"
    r"(?:/;PARTIAL=(?P<offset>[0-9]+)(?:\.(?P<length>[0-9]+))?)?"
    r"(?P<auth>;(?:EXPIRE|URLAUTH)=.*)?\Z", re.IGNORECASE | re.DOTALL)
_PORT = re.compile(r":[0-9]*\Z")


def parse(url: bytes, user: str, hostname: str, selected: Optional[str] = None) -> MessageUrl:
    """The message URL ``url`` resolved against ``imap://user@hostname/``, or
    against ``imap://user@hostname/selected`` (RFC 4469 §3) for ``;UID=``.

    DEVIATION(RFC 5092 §7.2): "MUST NOT ... accept relative-path IMAP
    references", but RFC 4469 §3 makes the selected mailbox the base URL, and
    RFC 5092's own §9.1 example (``<;UID=20>``: "references a message with UID
    in the mailbox specified by the Base URI") and §11 imsg-or-part allow
    ``;UID=n[/;SECTION=s][/;PARTIAL=p]``; that one form is taken while a
    mailbox is selected, every other relative path is refused."""
    try:
        text = url.decode("ascii")
    except UnicodeDecodeError:
        raise BadUrl("URL is not ASCII (RFC 5092 §8: percent-encode)")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise BadUrl("URL holds spaces or control characters")
    if text[:7].lower() == "imap://":
        path = _authority(text[7:], user, hostname)
    elif text.startswith("//"):
        path = _authority(text[2:], user, hostname)
    elif text.startswith("/"):
        path = text
    elif selected is not None and text[:5].upper() == ";UID=":
        path = "/" + quote(selected.encode("utf-8"), safe="") + "/" + text
    else:
        raise BadUrl("relative-path references are not accepted (RFC 5092 §7.2)")
    return _message(remove_dot_segments(path)[1:])


def _authority(rest: str, user: str, hostname: str) -> str:
    """iserver = [iuserinfo "@"] host [":" port] (RFC 5092 §11): this server, this user."""
    slash = rest.find("/")
    if slash < 0:
        raise BadUrl("URL names a server, not a message")
    authority, path = rest[:slash], rest[slash:]
    userinfo, at, host = authority.rpartition("@")
    if not at or not userinfo or userinfo.startswith(";"):
        raise BadUrl("URL without a user (RFC 5092 §3.1: mailbox names are per user)")
    enc_user = userinfo.split(";", 1)[0]            # ;AUTH=... (iauth) ignored: already logged in
    named = unquote_to_bytes(enc_user).decode("utf-8", "replace")
    if named.casefold() != user.casefold():
        raise BadUrl("URL names another user's mailboxes")
    host = _PORT.sub("", host) if not host.endswith("]") else host
    if host.lower().rstrip(".") != hostname.lower().rstrip("."):
        raise BadUrl("URL names another server")
    return path


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on an absolute path: "." and ".." segments (never
    percent-encoded ones, nor "..;UIDVALIDITY=1", RFC 5092 §9.1)."""
    out = []
    segments = path.split("/")[1:]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif seg == ".":
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def _number(text: Optional[str], zero: bool = False) -> Optional[int]:
    """number / nz-number (RFC 9051 §9): 32-bit, nz-number without a leading zero."""
    if text is None:
        return None
    value = int(text) if len(text) <= 10 else g.MAX_NUMBER + 1
    if value > g.MAX_NUMBER or (not zero and (value == 0 or text.startswith("0"))):
        raise BadUrl("number %s out of range" % text[:12])
    return value


def _message(body: str) -> MessageUrl:
    m = _MESSAGE.match(body)
    if m is None:
        raise BadUrl("not a message URL (RFC 5092 §6: mailbox, then ;UID=)")
    if m.group("auth"):
        raise BadUrl("URLAUTH is not offered (RFC 4467)")
    raw = unquote_to_bytes(m.group("mbox"))
    try:
        mailbox = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadUrl("mailbox name is not UTF-8 (RFC 5092 §8)")
    if mailbox.upper() == "INBOX":
        mailbox = "INBOX"
    sec = None
    if m.group("section") is not None:
        spec = unquote_to_bytes(m.group("section"))
        try:
            sec, rest = section(b"[" + spec + b"]")
        except g.ImapParseError as exc:
            raise BadUrl("bad section: %s" % exc.message)
        if bytes(rest):
            raise BadUrl("bad section")
    partial = None
    if m.group("offset") is not None:
        partial = (_number(m.group("offset"), zero=True), _number(m.group("length")))
    return MessageUrl(mailbox, _number(m.group("validity")), _number(m.group("uid")), sec, partial)


def needs_structure(ref: MessageUrl) -> bool:
    """Whether ``extract`` reads the message's MIME structure (a section other than the whole)."""
    return ref.section is not None and bool(ref.section.part or ref.section.text is not None)


def extract(ref: MessageUrl, data: bytes, root: Optional[mime.Part] = None) -> bytes:
    """The octets ``UID FETCH uid BODY.PEEK[section]<partial>`` gives (RFC 5092
    §6, RFC 4469 §3: "as if the literal returned in a FETCH BODY response were
    put in place"); a part that does not exist, or HEADER / TEXT of a part
    that is not a message, is a BadUrl (RFC 4469 §4.1 "invalid body part")."""
    value = data
    sec = ref.section
    if needs_structure(ref):
        root = root if root is not None else mime.parse(data)
        if sec.part:
            part = mime.part_at(root, sec.part)
            if part is None:
                raise BadUrl("no body part %s" % ".".join(map(str, sec.part)))
            if sec.text not in (None, "MIME") and part.message is None:
                raise BadUrl("body part %s is not a message" % ".".join(map(str, sec.part)))
        value = fetch_data.section_data(sec, data, root)
    if ref.partial is not None:
        offset, length = ref.partial
        value = value[offset:] if length is None else value[offset:offset + length]
    return value


def badurl_code(url: bytes) -> bytes:
    """``[BADURL url]``: url-resp-text is TEXT-CHARs without "]" (RFC 4469 §5),
    so "]", controls and 8-bit octets go percent-encoded."""
    safe = re.sub(rb"[\x00-\x1f\x7f-\xff\]]", lambda m: b"%%%02X" % m.group()[0], url)
    return b"[BADURL " + (safe or b"%20") + b"]"
