"""Threshold-CA test helpers: the loopback meshes of ``peermesh.agent.devmesh``; a secret check."""

from __future__ import annotations

from pathlib import Path

from certs.ed25519_group import Scalar
from certs.frost import lagrange_coefficient
from peermesh.agent.devmesh import CaMesh, bootstrap_mesh, ca_agent_config, free_port_pair
from peermesh.ca.state import CaState
from peermesh.net.rpc import Opaque, RpcMethod

__all__ = [
    "CaMesh",
    "bootstrap_mesh",
    "ca_agent_config",
    "free_port_pair",
    "reconstruct_root_secret",
]


def reconstruct_root_secret(data_dirs: list[Path]) -> bytes:
    """TEST ONLY: Lagrange-combine t signers' shares into the root secret (32-byte scalar).

    Exists so tests can prove the secret appears nowhere else; the agent never does this.
    """
    shares = []
    for d in data_dirs:
        loaded = CaState(d).load_share()
        assert loaded is not None, f"{d} holds no share"
        shares.append(loaded[1])
    ids = [s.identifier for s in shares]
    secret = Scalar.ZERO
    for s in shares:
        secret = secret + lagrange_coefficient(ids, s.identifier) * s.secret
    return secret.to_bytes()


def raw_method(name: str) -> RpcMethod[Opaque, Opaque]:
    """A control method whose body goes out exactly as given: what a hostile peer sends."""
    return RpcMethod(name, Opaque, Opaque)
