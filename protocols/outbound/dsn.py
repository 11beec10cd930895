"""Delivery status notifications (bounces): RFC 3464, RFC 6522, RFC 3834, RFC 5321 §4.5.5.

``build_bounce`` writes a complete message (CRLF line ends) of type
``multipart/report; report-type=delivery-status`` (RFC 6522 §3, formerly RFC
3462) with three parts:

1. a human-readable ``text/plain`` explanation (RFC 3464 §2, first part);
2. ``message/delivery-status`` (RFC 3464 §2.1): the per-message fields
   Reporting-MTA (§2.2.2) and Arrival-Date (§2.2.5), then one block per
   recipient with Final-Recipient (§2.3.2), Action (§2.3.3), Status (§2.3.4),
   Remote-MTA (§2.3.5), Diagnostic-Code (§2.3.6) and Last-Attempt-Date (§2.3.7);
3. ``text/rfc822-headers`` (RFC 6522 §4): the header of the original
   message only, never its body (RFC 3464 §4.2 confidentiality; smaller).

The notification is marked ``Auto-Submitted: auto-replied`` (RFC 3834 §5)
and must be sent with the null reverse-path (RFC 5321 §4.5.5, RFC 3464 §2:
"the envelope sender address of the DSN SHOULD be chosen to ensure that no
delivery status reports will be issued in response to the DSN itself").
``should_bounce`` is the rule the relay applies before sending one.

Left out: the DSN extension's ENVID/ORCPT/NOTIFY/RET parameters (RFC 3461)
— no Original-Envelope-Id or Original-Recipient fields are written; and
message/global-delivery-status for UTF-8 addresses (RFC 6533).
DEVIATION(RFC 6533): a non-ASCII recipient is written as-is in an ``rfc822;``
field with the part sent as 8bit, instead of a utf-8 address type in a
message/global-delivery-status part.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from protocols.base import new_id
from protocols.message import header_block

# (recipient, status "5.1.1", diagnostic "smtp; 550 5.1.1 ...", remote_mta host or "")
Failure = Tuple[str, str, str, str]

CRLF = "\r\n"


def should_bounce(sender: str) -> bool:
    """False for the null reverse-path.

    RFC 5321 §4.5.5: a message with a null reverse-path must never cause a
    notification ("non-delivery notifications ... MUST NOT" be sent to it);
    RFC 5321 §6.2 and §4.5.4: never answer an error message with another.
    A MAILER-DAEMON sender is treated the same way (loop protection).
    """
    s = (sender or "").strip().strip("<>").strip()
    if not s:
        return False
    return s.split("@", 1)[0].lower() != "mailer-daemon"


def _clean(text: str) -> str:
    """One header-safe line: no CR/LF (a remote reply must not inject fields)."""
    return " ".join(str(text).replace("\r", " ").replace("\n", " ").split())


def _headers_only(original: bytes) -> bytes:
    """The header section of a message (its fields, protocols/message.py), CRLF terminated."""
    head = header_block(original).replace(b"\r\n", b"\n")
    if head and not head.endswith(b"\n"):
        head += b"\n"
    return head.replace(b"\n", b"\r\n")


def _is_ascii(s: str) -> bool:
    return all(ord(c) < 128 for c in s)


def _per_recipient(action: str, failure: Failure, date_text: str, retry_until: Optional[str]) -> List[str]:
    rcpt, status, diagnostic, remote_mta = failure
    lines = ["Final-Recipient: rfc822; " + _clean(rcpt),      # RFC 3464 §2.3.2
             "Action: " + action,                              # RFC 3464 §2.3.3
             "Status: " + _clean(status)]                      # RFC 3464 §2.3.4
    if remote_mta:
        lines.append("Remote-MTA: dns; " + _clean(remote_mta))    # RFC 3464 §2.3.5
    if diagnostic:
        lines.append("Diagnostic-Code: " + _clean(diagnostic))    # RFC 3464 §2.3.6
    lines.append("Last-Attempt-Date: " + date_text)               # RFC 3464 §2.3.7
    if retry_until:
        lines.append("Will-Retry-Until: " + retry_until)          # RFC 3464 §2.3.9
    return lines


def _human_text(action: str, reporting_mta: str, failures: Sequence[Failure], queue_id: str) -> List[str]:
    if action == "failed":
        intro = ["This is the mail system at host %s." % reporting_mta, "",
                 "I'm sorry to have to inform you that your message could not",
                 "be delivered to one or more recipients. The details follow.", ""]
    else:
        intro = ["This is the mail system at host %s." % reporting_mta, "",
                 "Your message could not be delivered yet to one or more recipients.",
                 "It will be retried; you do not need to send it again.", ""]
    lines = intro + ["Queue id: %s" % queue_id, ""]
    for rcpt, status, diagnostic, remote_mta in failures:
        lines.append("<%s>: %s" % (_clean(rcpt), _clean(diagnostic) or _clean(status)))
        if remote_mta:
            lines.append("    (remote host %s)" % _clean(remote_mta))
    return lines


def build_report(action: str, reporting_mta: str, original_sender: str, failures: Sequence[Failure],
                 original_message_headers: bytes, queue_id: str, date_text: str, message_id: str,
                 arrival_date: Optional[str] = None, retry_until: Optional[str] = None) -> bytes:
    """A complete multipart/report DSN for ``action`` "failed" or "delayed"."""
    boundary = "=_%s_%s" % (queue_id, new_id(6))
    utf8 = not all(_is_ascii(f[0]) for f in failures) or not _is_ascii(original_sender)
    cte = "8bit" if utf8 else "7bit"
    charset = "utf-8" if utf8 else "us-ascii"
    subject = ("Undelivered Mail Returned to Sender" if action == "failed"
               else "Delayed Mail (still being retried)")
    head = [
        "From: Mail Delivery System <MAILER-DAEMON@%s>" % reporting_mta,
        "To: <%s>" % _clean(original_sender),
        "Subject: " + subject,
        "Date: " + date_text,
        "Message-ID: " + message_id,
        "Auto-Submitted: auto-replied",          # RFC 3834 §5
        "MIME-Version: 1.0",
        # RFC 6522 §3: multipart/report with the report-type parameter.
        'Content-Type: multipart/report; report-type=delivery-status; boundary="%s"' % boundary,
        "Content-Transfer-Encoding: " + cte,
        "",
        "This is a MIME-encapsulated message.",
        "",
        "--" + boundary,
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=" + charset,
        "",
    ] + _human_text(action, reporting_mta, failures, queue_id) + [
        "",
        "--" + boundary,
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; " + reporting_mta,                    # RFC 3464 §2.2.2
        "X-Queue-ID: " + queue_id,                                 # RFC 3464 §2.4 extension field
        "Arrival-Date: " + (arrival_date or date_text),            # RFC 3464 §2.2.5
    ]
    for f in failures:
        head += [""] + _per_recipient(action, f, date_text, retry_until)   # RFC 3464 §2.1: blank line separates
    head += [
        "",
        "--" + boundary,
        "Content-Description: Undelivered Message Headers",
        "Content-Type: text/rfc822-headers",                       # RFC 6522 §4
        "",
    ]
    out = (CRLF.join(head) + CRLF).encode("utf-8")
    out += _headers_only(original_message_headers)
    out += (CRLF + "--" + boundary + "--" + CRLF).encode("ascii")
    return out


def build_bounce(reporting_mta: str, original_sender: str, failed: Sequence[Failure],
                 original_message_headers: bytes, queue_id: str, date_text: str, message_id: str,
                 arrival_date: Optional[str] = None) -> bytes:
    """The non-delivery report (RFC 3464 ``Action: failed``)."""
    return build_report("failed", reporting_mta, original_sender, failed, original_message_headers,
                        queue_id, date_text, message_id, arrival_date)
