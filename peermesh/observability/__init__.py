"""Observability: per-request records, access logs, tracing, golden metrics, mesh view.

The proxies call :class:`peermesh.observability.hub.Observability` at the start and the
end of every request; everything else here reads live agent state on demand.
"""
