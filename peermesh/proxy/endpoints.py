"""Endpoints from ``--peer`` flags and a YAML/JSON file that is re-read when it changes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from peermesh.core.endpoint import Endpoint, EndpointError, parse_host_port


class StaticEndpoints:
    """Endpoints from ``--peer SERVICE=HOST:PORT`` flags and/or a YAML/JSON file.

    The file is re-read when it changes (checked at most once a second), so an operator
    can edit it without restarting the agent. A bad edit keeps the previous table and
    records the error in ``last_error``.

    File format::

        services:
          orders:
            - {address: "10.0.0.7:15443", node: node-b, labels: {version: v1}}
    """

    def __init__(self, peers: Sequence[str] = (), path: Path | None = None) -> None:
        self._flag_table: dict[str, list[Endpoint]] = {}
        for spec in peers:
            service, sep, address = spec.partition("=")
            if not sep or not service:
                raise EndpointError(f"--peer {spec!r}: write SERVICE=HOST:PORT")
            host, port = parse_host_port(address, what=f"--peer {spec!r}")
            self._flag_table.setdefault(service, []).append(
                Endpoint(service=service, host=host, port=port)
            )
        self.path = path
        self.last_error: str | None = None
        self._file_table: dict[str, list[Endpoint]] = {}
        self._file_stamp: tuple[int, int] | None = None
        self._checked_at = -1.0
        if path is not None:
            self._file_table = load_endpoint_file(path)
            self._file_stamp = _stamp(path)

    def _maybe_reload(self) -> None:
        if self.path is None:
            return
        import time

        now = time.monotonic()
        if now - self._checked_at < 1.0:
            return
        self._checked_at = now
        stamp = _stamp(self.path)
        if stamp == self._file_stamp:
            return
        self._file_stamp = stamp
        try:
            self._file_table = load_endpoint_file(self.path)
            self.last_error = None
        except EndpointError as exc:
            self.last_error = str(exc)

    def endpoints(self, service: str) -> Sequence[Endpoint] | None:
        self._maybe_reload()
        found = self._flag_table.get(service, []) + self._file_table.get(service, [])
        if not found and service not in self._flag_table and service not in self._file_table:
            return None
        return found

    def services(self) -> Iterable[str]:
        self._maybe_reload()
        return sorted(set(self._flag_table) | set(self._file_table))


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size)


def load_endpoint_file(path: Path) -> dict[str, list[Endpoint]]:
    """Parse an endpoint file (YAML or JSON) into service -> endpoints."""
    import yaml  # only agents started with an endpoint file pay for PyYAML

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise EndpointError(f"endpoint file {path}: cannot read: {exc.strerror}") from None
    try:
        doc: Any = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise EndpointError(f"endpoint file {path}: not valid YAML/JSON: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not isinstance(doc.get("services", {}), dict):
        raise EndpointError(f"endpoint file {path}: expected a mapping with a 'services' mapping")
    table: dict[str, list[Endpoint]] = {}
    for service, entries in (doc.get("services") or {}).items():
        if not isinstance(entries, list):
            raise EndpointError(f"endpoint file {path}: services.{service} must be a list")
        out: list[Endpoint] = []
        for i, entry in enumerate(entries):
            where = f"endpoint file {path}: services.{service}[{i}]"
            if isinstance(entry, str):
                entry = {"address": entry}
            if not isinstance(entry, dict) or "address" not in entry:
                raise EndpointError(f"{where}: needs an 'address: HOST:PORT'")
            unknown = set(entry) - {"address", "node", "labels"}
            if unknown:
                raise EndpointError(f"{where}: unknown field(s) {sorted(unknown)}")
            host, port = parse_host_port(str(entry["address"]), what=where)
            labels = entry.get("labels") or {}
            if not isinstance(labels, dict):
                raise EndpointError(f"{where}: labels must be a mapping")
            out.append(
                Endpoint(
                    service=str(service),
                    host=host,
                    port=port,
                    node=str(entry.get("node", "")),
                    labels={str(k): str(v) for k, v in labels.items()},
                )
            )
        table[str(service)] = out
    return table
