"""Which engine (``h2engine``) a session runs on: the process default and the fallback."""

from __future__ import annotations

import importlib
import logging
import os

from peermesh.net.http.h2engine import EngineName, H2Engine

log = logging.getLogger(__name__)

_default: EngineName | None = None
_fallback_logged = False


def nghttp2_available() -> bool:
    try:
        importlib.import_module("peermesh.net.http.nghttp2.engine")
    except ImportError:
        return False
    return True


def resolve(name: EngineName | str | None) -> EngineName:
    """The engine to use: the one asked for, nghttp2 by default, h2 if it is not built.

    Without the extension the process says so once and runs on h2, so an agent
    installed without libnghttp2-dev still works.
    """
    global _fallback_logged
    wanted = EngineName(name) if name is not None else EngineName.NGHTTP2
    if wanted is EngineName.NGHTTP2 and not nghttp2_available():
        if not _fallback_logged:
            _fallback_logged = True
            log.warning(
                "nghttp2 HTTP/2 engine not built (needs libnghttp2-dev, then 'make');"
                " using the h2 engine"
            )
        return EngineName.H2
    return wanted


def set_default(name: EngineName | str | None) -> EngineName:
    """Choose the engine every session of this process uses unless told otherwise."""
    global _default
    _default = resolve(name)
    return _default


def default() -> EngineName:
    if _default is None:
        return set_default(os.environ.get("PEERMESH_H2_ENGINE") or None)
    return _default


def new_engine(
    name: EngineName | None, *, client_side: bool, max_concurrent_streams: int
) -> H2Engine:
    """A connection with its preface and our SETTINGS queued, ready for its first bytes."""
    chosen = resolve(name) if name is not None else default()
    if chosen is EngineName.NGHTTP2:
        from peermesh.net.http.nghttp2.engine import NgEngine

        return NgEngine(client_side=client_side, max_concurrent_streams=max_concurrent_streams)
    from peermesh.net.http.h2conn import reference_engine

    return reference_engine(client_side=client_side, max_concurrent_streams=max_concurrent_streams)
