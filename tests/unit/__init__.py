"""Unit tests, one folder per source layer or package."""
