"""The threshold CA between agents: bootstrap, issuance, join tokens, renewal, committee changes.

The cryptography is sans-IO in ``certs/``; this package decides who may get what
(pure functions) and moves bytes between agents (trio). See ``docs/security.md``.
"""
