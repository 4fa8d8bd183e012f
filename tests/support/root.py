"""The marks of a test that needs root (network namespaces, nftables, tmpfs)."""

from __future__ import annotations

import pytest

from chaos.netns import LabError, require_root

try:
    require_root()
    ROOT_REASON = ""
except LabError as exc:
    ROOT_REASON = str(exc)

#: ``pytestmark = NEEDS_ROOT``: skipped with the reason when not root, never silently passed.
NEEDS_ROOT = [
    pytest.mark.root,
    pytest.mark.skipif(bool(ROOT_REASON), reason=ROOT_REASON or "root available"),
]
