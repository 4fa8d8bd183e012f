"""Unit tests for net."""
