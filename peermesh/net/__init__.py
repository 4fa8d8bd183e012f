"""Networking: HTTP/1.1 and HTTP/2, TLS, the peer pool, the admin server, the RPC router."""
