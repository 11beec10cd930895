"""Outbound mail: the relay (queue -> MX -> SMTP client), DSNs (RFC 3464) and queue administration."""
