"""A small sans-I/O HTTP/1.1 server session for the test server's web page and JSON API
(issue 11): parse.py (RFC 9112 message syntax), response.py (status lines, headers,
security headers), session.py (the session the loop drives), api.py (the routes),
mimeview.py (MIME parsing, run on a worker), page.py (the page), service.py (what the
session asks of the backend)."""
