"""DNS: the RFC 1035 codec, the resolver (UDP/TCP, cache) and MX selection (RFC 5321 §5.1)."""
