"""Tests that run real agents, processes or network namespaces."""
