"""FETCH BODYSTRUCTURE and BODY (RFC 9051 §7.5.2 and §9 body, RFC 3501
§7.4.2): the MIME tree of protocols/mime.py as IMAP's body structure.

Sizes and line counts are of the data given (the caller passes the message
in CRLF form, so they are what BODY[section] sends): body-fld-octets is the
length of ``BODY[n]``, body-fld-lines its count of LFs, as Dovecot counts.

Choices where the RFC leaves room, as Dovecot (lib-imap
imap-bodystructure.c) makes them:
- a text/* part without a charset parameter gets ("charset" "us-ascii"),
  the default of RFC 2046 §4.1.2;
- a multipart without any body part (no boundary, no delimiter line) is
  written with one empty text/plain part, since body-type-mpart needs
  1*body (RFC 9051 §9);
- Content-Language is always a parenthesized list;
- media types and parameter names go in lower case as mime.py keeps them
  (they are case-insensitive, RFC 2045 §5.1); values as sent; an RFC 2231
  extended value stays ``name*`` with its charset'language'%XX form.
A message/rfc822 (or message/global, RFC 9051 §9 media-message) part whose
content was not parsed (a base64 or quoted-printable Content-Transfer-Encoding,
forbidden by RFC 2046 §5.2.1, or too deep) still takes the message form that
body-type-basic forbids for it: an all-NIL envelope and the empty text/plain
body, so that its parts 1, 1.1 ... read as the empty strings BODY[] gives.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from protocols import mime
from protocols.imap.envelope import envelope, nstring

# RFC 9051 §9 body-fld-param: the default charset (RFC 2046 §4.1.2).
DEFAULT_CHARSET = ("charset", "us-ascii")
_EMPTY_ENVELOPE = b"(" + b" ".join([b"NIL"] * 10) + b")"


def _s(text: str) -> bytes:
    """A header-derived str back to its bytes, then as an IMAP string."""
    return nstring(text.encode("utf-8", "surrogateescape"))


def _ns(text: Optional[str]) -> bytes:
    """nstring from a header value: CR and LF (of a malformed fold) become
    spaces, as Dovecot's imap_append_nstring_nolf does."""
    if text is None:
        return b"NIL"
    return _s(text.replace("\r", " ").replace("\n", " "))


def _params(params: List[Tuple[str, str]]) -> bytes:
    """body-fld-param = "(" string SP string *(SP string SP string) ")" / nil."""
    if not params:
        return b"NIL"
    return b"(" + b" ".join(_s(name) + b" " + _s(value) for name, value in params) + b")"


def _disposition(part: mime.Part) -> bytes:
    """body-fld-dsp = "(" string SP body-fld-param ")" / nil (RFC 2183)."""
    if part.disposition is None:
        return b"NIL"
    return b"(" + _s(part.disposition) + b" " + _params(part.disposition_params) + b")"


def _language(value: Optional[str]) -> bytes:
    """body-fld-lang = nstring / "(" string *(SP string) ")" (RFC 3282
    Content-Language = 1#Language-tag); comments and empty members dropped."""
    if value is None:
        return b"NIL"
    tags = []
    for item in _strip_comments(value).split(","):
        tag = item.strip()
        if tag:
            tags.append(_s(tag))
    return b"(" + b" ".join(tags) + b")" if tags else b"NIL"


def _strip_comments(value: str) -> str:
    out, depth = [], 0
    for c in value:
        if c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(c)
    return "".join(out)


def _extension(part: mime.Part) -> List[bytes]:
    """body-fld-dsp, body-fld-lang, body-fld-loc: the extension data both
    kinds of part end with (RFC 9051 §9 body-ext-1part, body-ext-mpart)."""
    return [_disposition(part), _language(part.language), _ns(part.location)]


def body(data: bytes, part: mime.Part, extended: bool) -> bytes:
    """body = "(" (body-type-1part / body-type-mpart) ")" (RFC 9051 §9);
    ``extended`` for BODYSTRUCTURE, without extension data for BODY."""
    if part.is_multipart:
        return _multipart(data, part, extended)
    return _single(data, part, extended)


def _multipart(data: bytes, part: mime.Part, extended: bool) -> bytes:
    """body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]."""
    kids = b"".join(body(data, child, extended) for child in part.parts) or _empty_body(extended)
    items = [kids, _s(part.subtype)]
    if extended:
        items += [_params(part.params)] + _extension(part)
    return b"(" + b" ".join(items) + b")"


def _empty_body(extended: bool) -> bytes:
    """The empty text/plain part Dovecot writes where a body is needed and
    the message has none."""
    base = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0'
    return base + (b" NIL NIL NIL NIL)" if extended else b")")


def _single(data: bytes, part: mime.Part, extended: bool) -> bytes:
    """body-type-1part = (body-type-basic / body-type-msg / body-type-text)
    [SP body-ext-1part]; body-fields = body-fld-param SP body-fld-id SP
    body-fld-desc SP body-fld-enc SP body-fld-octets (RFC 9051 §9)."""
    params = list(part.params)
    if part.maintype == "text" and part.param("charset") is None:
        params.append(DEFAULT_CHARSET)
    items = [_s(part.maintype), _s(part.subtype), _params(params), _ns(part.content_id),
             _ns(part.description), _s(part.encoding), b"%d" % part.body_size]
    if part.maintype == "message" and part.subtype in ("rfc822", "global"):
        # body-type-msg: envelope, body and lines of the enclosed message.
        inner = part.message
        if inner is None:
            items += [_EMPTY_ENVELOPE, _empty_body(extended)]
        else:
            items += [envelope(data, inner.start, inner.body_start), body(data, inner, extended)]
        items.append(b"%d" % part.body_lines)
    elif part.maintype == "text":
        items.append(b"%d" % part.body_lines)      # body-type-text: body-fld-lines
    if extended:
        items += [_ns(part.md5)] + _extension(part)
    return b"(" + b" ".join(items) + b")"
