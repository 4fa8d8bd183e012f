"""``/peermesh.v1/`` control RPCs: typed methods, their router, their client and ``RpcError``."""

from .errors import RpcError
from .method import ControlRequest, Empty, Opaque, RpcMethod

__all__ = ["ControlRequest", "Empty", "Opaque", "RpcError", "RpcMethod"]
