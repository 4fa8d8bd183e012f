"""Which HTTP/2 engine a session gets, and the fallback when nghttp2 is not built."""

from __future__ import annotations

import logging
import sys

import pytest

from peermesh.net.http import h2select
from peermesh.net.http.h2engine import EngineName


def test_missing_extension_falls_back_to_h2_with_one_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "peermesh.net.http.nghttp2.engine", None)  # ImportError
    monkeypatch.setattr(h2select, "_fallback_logged", False)
    with caplog.at_level(logging.WARNING, logger=h2select.__name__):
        assert h2select.resolve(None) is EngineName.H2
        assert h2select.resolve("nghttp2") is EngineName.H2
        engine = h2select.new_engine(
            EngineName.NGHTTP2, client_side=True, max_concurrent_streams=10
        )
    assert type(engine).__name__ == "DrainingH2Connection"
    assert [r.getMessage() for r in caplog.records if "nghttp2" in r.getMessage()] == [
        "nghttp2 HTTP/2 engine not built (needs libnghttp2-dev, then 'make'); using the h2 engine"
    ]


def test_h2_is_chosen_when_asked() -> None:
    assert h2select.resolve("h2") is EngineName.H2
    engine = h2select.new_engine(EngineName.H2, client_side=False, max_concurrent_streams=10)
    assert engine.data_to_send()  # SETTINGS queued, ready for the client preface
