"""The policy model: six kinds of objects as frozen dataclasses.

Field names follow Istio's VirtualService / DestinationRule / AuthorizationPolicy (and
Linkerd's retry budget) so a mesh user recognises them. Objects are built by
:mod:`peermesh.policy.validate`, never by hand from user input, so every instance here
has already passed validation. ``to_dict()`` gives the canonical document form (camelCase
keys, durations as strings, empty fields omitted); parsing that form again yields an equal
object, which is what makes content hashes and round trips stable.

One module per kind (``route``, ``traffic_policy``, ``authorization``, ``mesh_config``,
``join_token``, ``committee_change``); ``common`` holds the kind names and durations,
``objects`` the kinds.
"""

from peermesh.policy.model.authorization import *
from peermesh.policy.model.committee_change import *
from peermesh.policy.model.common import *
from peermesh.policy.model.join_token import *
from peermesh.policy.model.mesh_config import *
from peermesh.policy.model.objects import *
from peermesh.policy.model.route import *
from peermesh.policy.model.traffic_policy import *
