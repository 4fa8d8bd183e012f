"""Shared test support: real agents, PKI, CA meshes, telemetry helpers."""
