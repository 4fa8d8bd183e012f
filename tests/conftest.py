"""Suite-wide pytest settings; shared helpers live in ``tests.support``."""


def pytest_report_header() -> str:
    """Which HTTP/2 engine the data-plane tests run on (PEERMESH_H2_ENGINE picks it)."""
    from peermesh.net.http import h2select

    return f"peermesh HTTP/2 engine: {h2select.default().value}"
