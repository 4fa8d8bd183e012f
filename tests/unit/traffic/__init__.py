"""Unit tests for traffic."""
