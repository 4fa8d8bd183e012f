"""Reading and writing policy files: YAML (multi-document) or JSON, one file or a directory.

Errors point at the file and line: malformed YAML/JSON says where it broke, and validation
errors are prefixed with the file and the line where the offending document starts, so
``peermesh policy apply -f DIR`` can say exactly which of many files to fix.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peermesh.policy.errors import PolicyError, PolicyWarning
from peermesh.policy.model import ROUTE, TRAFFIC_POLICY, PolicyObject
from peermesh.policy.validate import check_object, check_set

if TYPE_CHECKING:
    import yaml

POLICY_SUFFIXES = (".yaml", ".yml", ".json")
#: Refuse to even parse files larger than this (the per-object limit is far smaller).
MAX_FILE_BYTES = 16 * 1024 * 1024


class PolicyLoadError(PolicyError):
    """A file that could not be read as YAML or JSON, with the place it broke."""

    default_code = "invalid-policy-file"

    def __init__(
        self, reason: str, *, file: str, line: int | None = None, column: int | None = None
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        where = file if line is None else f"{file}:{line}" + (f":{column}" if column else "")
        super().__init__(reason, source=where, hint="fix the syntax at that line and retry")


@dataclass(frozen=True)
class Document:
    """One raw document and where it came from (``line`` is where it starts, 1-based)."""

    data: Any
    file: str
    line: int

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line}"


@cache
def _strict_loader() -> type[yaml.SafeLoader]:
    """The loader class, built on first use so that PyYAML is imported only by the
    processes that read policy files (the CLI), not by every agent."""
    import yaml

    class _StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable key: let the base class report it
                    break
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r} (first at line {seen[key] + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return _StrictLoader


def _yaml_documents(text: str, file: str) -> list[Document]:
    import yaml

    loader = _strict_loader()(text)
    docs: list[Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                break
            data = loader.construct_document(node)
            if data is not None:
                docs.append(Document(data, file, node.start_mark.line + 1))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = f"malformed YAML: {exc.problem or exc.context}"
        if exc.context and exc.problem:
            reason = f"malformed YAML: {exc.problem} ({exc.context})"
        raise PolicyLoadError(
            reason,
            file=file,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:
        raise PolicyLoadError(f"malformed YAML: {exc}", file=file) from None
    finally:
        loader.dispose()
    return docs


def _json_documents(text: str, file: str) -> list[Document]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyLoadError(
            f"malformed JSON: {exc.msg}", file=file, line=exc.lineno, column=exc.colno
        ) from None
    except RecursionError:
        raise PolicyLoadError("malformed JSON: nested too deeply", file=file) from None
    items = data if isinstance(data, list) else [data]
    return [Document(item, file, 1) for item in items]


def load_text(text: str, *, file: str = "<input>", fmt: str | None = None) -> list[Document]:
    """Split text into documents. ``fmt`` is "yaml" or "json"; by default JSON is used for
    ``.json`` files and for text starting with ``{`` or ``[``, YAML otherwise."""
    if fmt is None:
        looks_json = file.endswith(".json") or text.lstrip()[:1] in ("{", "[")
        fmt = "json" if looks_json else "yaml"
    if fmt == "json":
        return _json_documents(text, file)
    if fmt == "yaml":
        return _yaml_documents(text, file)
    raise ValueError(f"unknown format {fmt!r}; use 'yaml' or 'json'")


def policy_files(path: Path) -> list[Path]:
    """Policy files under ``path`` (itself, or ``*.yaml``/``*.yml``/``*.json`` in a tree),
    in a stable order; hidden files and directories are skipped."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise PolicyLoadError("no such file or directory", file=str(path))
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix in POLICY_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def load_path(path: str | Path) -> list[Document]:
    """Every document in a file or a directory of files."""
    docs: list[Document] = []
    for file in policy_files(Path(path)):
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise PolicyLoadError(
                f"file is {size} bytes, more than the {MAX_FILE_BYTES} accepted", file=str(file)
            )
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyLoadError(f"not UTF-8 text: {exc.reason}", file=str(file)) from None
        docs.extend(load_text(text, file=str(file)))
    return docs


@dataclass(frozen=True)
class LoadedPolicy:
    objects: tuple[PolicyObject, ...]
    warnings: tuple[PolicyWarning, ...]
    sources: dict[str, str]  # object key -> "file:line"


def parse_documents(
    documents: Sequence[Document], *, known_services: Collection[str] | None = None
) -> LoadedPolicy:
    """Validate documents as one batch; errors carry the file and line of their document."""
    objects: list[PolicyObject] = []
    sources: dict[str, str] = {}
    errors: list[PolicyError] = []
    refused_hosts: set[str] = set()
    for doc in documents:
        obj, problems = check_object(doc.data)
        errors.extend(p.with_source(doc.source) for p in problems)
        if obj is not None:
            objects.append(obj)
            sources.setdefault(obj.key, doc.source)
        elif isinstance(doc.data, Mapping) and doc.data.get("kind") == TRAFFIC_POLICY:
            spec = doc.data.get("spec")
            host = spec.get("host") if isinstance(spec, Mapping) else None
            refused_hosts.add(host if isinstance(host, str) else "")
    # Cross-object problems are reported in the same round as per-object ones, except
    # those a refused TrafficPolicy may cause (its subsets are unknown until it is fixed).
    cross = check_set(objects, known_services)
    for e in cross.errors:
        if refused_hosts and e.kind == ROUTE and e.path.endswith(".subset"):
            continue
        errors.append(e.with_source(sources.get(f"{e.kind}/{e.name}")))
    if errors:
        raise PolicyError.collect(errors)
    return LoadedPolicy(tuple(objects), cross.warnings, sources)


def load_policy(path: str | Path, *, known_services: Collection[str] | None = None) -> LoadedPolicy:
    """Read and validate a file or directory: what ``policy apply -f`` does before sending."""
    return parse_documents(load_path(path), known_services=known_services)


def dump_yaml(objects: Iterable[PolicyObject]) -> str:
    """Multi-document YAML in the canonical field layout; loads back to equal objects."""
    import yaml

    return yaml.safe_dump_all(
        [obj.to_dict() for obj in objects], sort_keys=False, default_flow_style=False
    )


def dump_json(objects: Iterable[PolicyObject], *, indent: int | None = 2) -> str:
    """A JSON list of objects; loads back to equal objects."""
    return json.dumps([obj.to_dict() for obj in objects], indent=indent, ensure_ascii=False)
