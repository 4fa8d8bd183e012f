"""Unit tests for chaos."""
