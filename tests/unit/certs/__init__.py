"""Unit tests for certs."""
