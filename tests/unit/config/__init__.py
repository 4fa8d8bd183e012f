"""Unit tests for config."""
