"""IMAP (RFC 9051 / RFC 3501): to come; see the README."""
