"""SMTP: RFC 5321 server and client sessions, their grammar and commands."""
