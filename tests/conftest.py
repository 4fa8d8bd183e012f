"""Suite-wide pytest settings; shared helpers live in ``tests.support``."""
