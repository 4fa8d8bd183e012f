"""Strict validation of policy documents, with errors that say what, where, why and what to do.

Everything a user or a peer hands us passes through :func:`parse_object`, which either
returns a frozen model object or raises :class:`PolicyError` listing *every* problem found
(each with kind, name, a field path such as ``spec.http[0].route[1].weight`` and a reason).
Checks that need several objects at once (subsets referenced by routes, one TrafficPolicy
per host) live in :func:`check_set`; problems that are legal but probably unintended (a
route to a service no agent fronts) come back as :class:`PolicyWarning` and never refuse.

One module per kind (``route``, ``traffic_policy``, ``authorization``, ``mesh_config``,
``join_token``, ``committee_change``) over the shared field walker (``walker``) and leaf
fields (``common``); ``objects`` checks one whole object, ``sets`` several together.
"""

from peermesh.policy.errors import PolicyError, PolicyWarning
from peermesh.policy.validate.common import spiffe_id_problem
from peermesh.policy.validate.objects import (
    MAX_DEPTH,
    MAX_OBJECT_BYTES,
    canonical_json,
    check_object,
    check_object_canonical,
    normalize,
    parse_object,
    shape_problem,
)
from peermesh.policy.validate.sets import (
    SetCheck,
    ValidationReport,
    check_set,
    hosts_of,
    validate_documents,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_OBJECT_BYTES",
    "PolicyError",
    "PolicyWarning",
    "SetCheck",
    "ValidationReport",
    "canonical_json",
    "check_object",
    "check_object_canonical",
    "check_set",
    "hosts_of",
    "normalize",
    "parse_object",
    "shape_problem",
    "spiffe_id_problem",
    "validate_documents",
]
