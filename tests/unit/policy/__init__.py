"""Unit tests for policy."""
