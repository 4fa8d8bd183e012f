"""Unit tests for gossip."""
