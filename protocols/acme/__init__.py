"""ACME (RFC 8555): certificates obtained and renewed by the server itself.

- ``flow``: the protocol as a generator that yields the work it needs done
  (an HTTPS request on a worker thread, a pause) and receives the answers:
  no socket, no thread, no clock; tests drive it with a fake CA in-process.
- ``service``: the driver on the event loop (requests through
  protocols/loop_https.py on the loop's workers, pauses as timers), the
  renewal schedule with its backoff, the http-01 answers the HTTP listener
  serves, and the swap of the new certificate into the TLS listeners.
- ``command``: ``mailsrv.py acme status`` and ``acme renew``.

Files: store/acmefiles.py (DATA/tls/acme/; with shared_data per host,
DATA/tls/<host>/acme/).  README "ACME certificates".
"""
