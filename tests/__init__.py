"""peermesh's test suite: unit tests per layer, integration tests, shared support."""
