"""A load generator that runs inside one lab host and logs every request outcome.

``python -m chaos.loadgen --source h1 --service orders --rate 10 --duration 60 --out F``
sends GET requests at a fixed rate (open loop: a slow reply never delays the next
request) to the host's sidecar outbound (127.0.0.1:15001, ``Host: <service>``) and
writes one JSON line per request: start time (wall clock, shared by all namespaces
of the machine), latency, status (0 = no reply), the sidecar's error text, attempts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any


def one_request(
    source: str, service: str, path: str, timeout: float, proxy: tuple[str, int]
) -> dict[str, Any]:
    start = time.time()
    t0 = time.monotonic()
    record: dict[str, Any] = {"t": start, "src": source, "svc": service, "status": 0}
    conn = http.client.HTTPConnection(*proxy, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": service})
        reply = conn.getresponse()
        body = reply.read()
        record["status"] = reply.status
        record["attempts"] = int(reply.getheader("x-peermesh-attempts") or 0)
        if reply.status != 200:
            record["error"] = (
                reply.getheader("x-peermesh-error") or body[:120].decode("utf-8", "replace")
            ).strip()
    except TimeoutError:
        record["error"] = f"client timeout after {timeout:g} s"
    except (OSError, http.client.HTTPException) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"[:160]
    finally:
        conn.close()
    record["lat"] = time.monotonic() - t0
    return record


def generate(
    out: IO[str],
    *,
    source: str,
    service: str,
    rate: float,
    duration: float,
    timeout: float = 10.0,
    path: str = "/",
    proxy: tuple[str, int] = ("127.0.0.1", 15001),
) -> int:
    lock = threading.Lock()
    sent = 0

    def task() -> None:
        record = one_request(source, service, path, timeout, proxy)
        with lock:
            out.write(json.dumps(record) + "\n")
            out.flush()

    interval = 1.0 / rate
    begin = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(8, int(rate * (timeout + 1)))) as pool:
        while duration <= 0 or time.monotonic() - begin < duration:
            pool.submit(task)
            sent += 1
            next_at = begin + sent * interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    return sent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chaos.loadgen")
    parser.add_argument("--source", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=0.0, help="0 = until killed")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--path", default="/")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with open(args.out, "a") as out:
        generate(
            out,
            source=args.source,
            service=args.service,
            rate=args.rate,
            duration=args.duration,
            timeout=args.timeout,
            path=args.path,
        )


if __name__ == "__main__":
    main()
