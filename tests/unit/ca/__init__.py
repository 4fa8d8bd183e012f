"""Unit tests for ca."""
