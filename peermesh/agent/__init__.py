"""The agent: the composition root, the only package that knows every component.

``root`` builds and runs the components and hands each the small typed handles it needs;
``state`` adapts the running parts to the read-only views observability and the CA take;
``devmesh`` runs a loopback mesh of agents in one process (demo, benchmarks, tests).
"""

from peermesh.agent.root import Agent

__all__ = ["Agent"]
