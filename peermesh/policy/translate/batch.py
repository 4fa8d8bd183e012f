"""A whole ``-f FILE|DIR`` batch: foreign documents translated, peermesh ones kept, and every
problem of every document (translation and validation) collected in one round."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from peermesh.policy.errors import PolicyError
from peermesh.policy.loader import Document
from peermesh.policy.model import MESH_CONFIG
from peermesh.policy.translate import Unhonoured, is_foreign, merge_fragments, translate
from peermesh.policy.validate import check_object


@dataclass(frozen=True)
class Batch:
    """What a batch becomes: peermesh documents (in input order) and every problem found."""

    documents: tuple[Document, ...]
    unhonoured: tuple[tuple[Unhonoured, str], ...]  # with the "file:line" it came from
    errors: tuple[PolicyError, ...]  # translation problems and validation errors together
    translated: frozenset[str] = frozenset()  # keys of the objects made by translation

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [dict(doc.data) for doc in self.documents]


def translate_documents(documents: Sequence[Document], *, trust_domain: str) -> Batch:
    out: list[Document] = []
    unhonoured: list[tuple[Unhonoured, str]] = []
    errors: list[PolicyError] = []
    mesh: list[tuple[dict[str, Any], Document]] = []
    checked: list[Document] = []
    for doc in documents:
        if not is_foreign(doc.data):
            out.append(doc)
            checked.append(doc)
            continue
        result = translate(doc.data, trust_domain=trust_domain)
        for problem in result.problems:
            unhonoured.append((problem, doc.source))
            errors.append(problem.to_error(doc.source))
        for obj in result.objects:
            if obj["kind"] == MESH_CONFIG:
                mesh.append((obj, doc))
            else:
                out.append(Document(obj, doc.file, doc.line))
                if not result.problems:  # else its problems already say what to fix
                    checked.append(out[-1])
    if mesh:
        out.append(
            Document(merge_fragments([m for m, _ in mesh]), mesh[0][1].file, mesh[0][1].line)
        )
    if mesh and not unhonoured:
        checked.append(out[-1])
    for doc in checked:
        _, problems = check_object(doc.data)
        errors.extend(p.with_source(doc.source) for p in problems)
    translated = frozenset(
        f"{doc.data['kind']}/{doc.data['name']}" for doc in out if doc not in documents
    )
    return Batch(tuple(out), tuple(unhonoured), tuple(errors), translated)
