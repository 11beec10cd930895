"""Public-key cryptography in pure Python: what the standard library lacks.

Pure functions, no I/O, no clock (the caller passes the time in):

- ``der``: DER (ITU-T X.690) encoding and decoding of the ASN.1 types keys
  and certificates use, and the PEM armour (RFC 7468).
- ``rsa``: RSA keys, RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017), key files
  as PKCS#8 (RFC 5958) and SubjectPublicKeyInfo.
- ``ed25519``: Ed25519 (RFC 8032 §5.1) and its key files (RFC 8410).
- ``p256``: ECDSA P-256 with SHA-256 and RFC 6979 nonces (ACME's ES256).
- ``jws``: JSON Web Signature (RFC 7515) for ACME; ``csr``: PKCS#10 requests (RFC 2986).
- ``keys``: reading any of those private and public key files.
- ``x509``: a self-signed X.509 v3 server certificate (RFC 5280).

Big-integer arithmetic is Python's ``pow`` with three arguments; randomness
is ``secrets``.  None of this is constant-time (Python's integers are not):
fine for a server's own keys on its own machine, stated in the README.
"""
