"""POP3: RFC 1939 server session and its message streamer."""
