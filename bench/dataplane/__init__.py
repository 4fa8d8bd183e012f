"""Data-plane benchmark: direct vs peermesh (each HTTP/2 engine) vs HAProxy, one nginx upstream.

``python -m bench.dataplane`` (or ``make bench``) starts, on 127.0.0.1 only:

* one nginx serving a 1 KiB file (HTTP/1.1 port for the proxies, h2c port for "direct");
* **peermesh**, twice: agent A (outbound, h2c from the load generator) → mTLS HTTP/2 →
  agent B (inbound) → nginx over HTTP/1.1, one pair on the nghttp2 engine and one pair on
  the h2 engine (``--h2-engine``);
* **HAProxy reference**: HAProxy A (h2c from the load generator) → TLS 1.3 mTLS, ALPN h2 →
  HAProxy B → nginx over HTTP/1.1, with the same dev-CA Ed25519 certificates.

It measures, per setup: latency at fixed request rates (open loop, h2load: requests
paced one at a time, and in bursts as `h2load --rps` sends them), the
closed-loop maximum request rate, CPU seconds per 1000 requests and RSS of every
sidecar; prints a report and writes it between the ``bench:dataplane`` markers of
``docs/benchmarks.md``. Every process is stopped and the temp dir removed at the end,
also on Ctrl-C.

Modules, by concern: ``model`` (constants, ``BenchError``, result records), ``tools``
(finding h2load/nginx/haproxy, versions), ``setup`` (certificates, nginx and HAProxy
configs, starting every process), ``measure`` (RSS, CPU, liveness), ``load`` (h2load runs:
preflight, closed and open loop), ``report`` (the markdown) and ``cli`` (options, the run,
``main``).
"""

from __future__ import annotations

from bench.dataplane.cli import main, parse_args, run_benchmark
from bench.dataplane.model import BenchError, Options, Setup
from bench.dataplane.report import render

__all__ = ["BenchError", "Options", "Setup", "main", "parse_args", "render", "run_benchmark"]
