"""Unit tests for observability."""
