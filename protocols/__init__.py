"""Protocol engines: sans-I/O sessions for SMTP, POP3 and DNS, and the one event loop that drives them."""
