"""``peermesh agent``: run the sidecar beside one service."""

from __future__ import annotations

import gc
import logging
import signal
import sys
from typing import Any

import click
import trio

from peermesh.cli.options import config_options
from peermesh.config import SETTINGS, AgentConfig, ConfigError

GC_GEN0_THRESHOLD = 10_000  # allocations between gen-0 collections (CPython default: 700)


@click.command()
@config_options(SETTINGS)
def agent(**values: Any) -> None:
    """Run the sidecar agent beside one service."""
    try:
        config = AgentConfig.build(**values)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        trio.run(_run_agent, config)
    except (OSError, BaseExceptionGroup) as exc:
        fatal = _fatal(exc)
        if fatal is None:
            raise
        raise click.ClickException(str(fatal)) from None
    sys.exit(0)


def _fatal(exc: BaseException) -> OSError | None:
    """The OSError that stopped the agent (a listener that cannot open, a data dir that is
    gone), also from inside the task groups it surfaces through; anything else is a bug."""
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc if isinstance(exc, OSError) else None


async def _run_agent(config: AgentConfig) -> None:
    from gossip.codec import KeyfileError
    from peermesh.agent import Agent
    from peermesh.core.endpoint import EndpointError
    from peermesh.policy.store import PolicyStoreCorrupt

    try:
        node = Agent(config)
    except (EndpointError, KeyfileError, OSError, PolicyStoreCorrupt) as exc:
        raise click.ClickException(str(exc)) from None
    if not node.tls.loaded:
        logging.getLogger("peermesh").warning(
            "no certificate in %s yet (%s); mTLS is refused until one appears",
            config.data_dir,
            node.tls.last_reload_error,
        )
    # Modules, config and compiled policy built so far live as long as the agent: moving
    # them out of the collector's reach and collecting gen 0 less often keeps the cyclic
    # GC from rescanning them under load, which is where its pauses come from.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    async with trio.open_nursery() as nursery:

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                count = 0
                async for _ in signals:
                    count += 1
                    if count == 1:
                        node.request_shutdown()
                    else:
                        nursery.cancel_scope.cancel()  # second signal: stop now

        nursery.start_soon(on_signals)
        await node.run()  # returns once the graceful drain is over
        nursery.cancel_scope.cancel()


COMMANDS: tuple[click.Command, ...] = (agent,)
