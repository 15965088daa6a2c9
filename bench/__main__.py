"""``python -m bench`` (``make bench``): every scenario on every backend; JSON lines, then a table.

    python -m bench --backends sqlite --scenarios bulk,latency --jobs 5000

Each scenario gets a fresh store: a new SQLite file, a new PostgreSQL database, a new Redis key prefix.
PostgreSQL and Redis servers are started here from their pip wheels, like the tests do, with their
durable settings (fsync on; Redis with AOF and appendfsync everysec).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import scenarios
from bench.servers import postgres_urls, redis_urls, sqlite_urls
from bench.table import print_table

ROOT = Path(__file__).resolve().parents[1]
SERVERS: dict[str, Callable[[Path], Iterator[Callable[[str], str]]]] = {
    "sqlite": sqlite_urls,
    "postgres": postgres_urls,
    "redis": redis_urls,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="sqlite,postgres,redis")
    p.add_argument("--scenarios", default="bulk,latency,shell,scale,rated,keyed,grpc")
    p.add_argument("--jobs", type=int, default=20_000, help="jobs in the bulk and scale runs")
    p.add_argument("--history", type=int, default=1_000_000, help="finished jobs stored before scale")
    p.add_argument("--rate", type=float, default=200.0, help="jobs/s in the latency run")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the latency run")
    p.add_argument("--shell-jobs", type=int, default=2_000)
    p.add_argument("--limit-rate", type=float, default=1_000.0, help="jobs/s of the rated queue")
    p.add_argument("--limit-seconds", type=float, default=10.0, help="length of the rated run")
    p.add_argument("--processes", type=int, default=os.cpu_count() or 2, help="worker processes")
    p.add_argument("--concurrency", type=int, default=200, help="slots per worker process")
    p.add_argument("--profile", type=Path, help="write py-spy profiles of the workers to this directory")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return p.parse_args(argv)


def run_one(name: str, url: str, args: argparse.Namespace, backend: str) -> scenarios.Result:
    if name == "bulk":
        return scenarios.bulk(backend, url, args.jobs, args.processes, args.concurrency)
    if name == "latency":
        return scenarios.latency(backend, url, args.rate, args.seconds, args.processes)
    if name == "shell":
        return scenarios.shell(backend, url, args.shell_jobs, args.processes, args.concurrency)
    if name == "scale":
        return scenarios.scale(backend, url, args.jobs, args.history, args.processes, args.concurrency)
    if name == "rated":
        return scenarios.rated(
            backend, url, args.limit_rate, args.limit_seconds, args.processes, args.concurrency
        )
    if name == "grpc":
        return scenarios.grpc(backend, url, args.jobs, args.processes, args.concurrency)
    if name == "keyed":
        return scenarios.keyed(backend, url, args.jobs, args.processes, args.concurrency)
    raise SystemExit(f"unknown scenario {name!r}")


def machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        path = Path(tmp)
        path.chmod(0o755)  # PostgreSQL runs as an unprivileged user and must traverse it
        yield path


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.profile is not None and shutil.which("py-spy") is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    results: list[dict[str, object]] = []
    for backend in args.backends.split(","):
        with scratch() as tmp, contextmanager(SERVERS[backend])(tmp) as fresh_url:
            for name in args.scenarios.split(","):
                scenarios.PROFILE.directory = args.profile
                scenarios.PROFILE.label = f"{backend}-{name}"
                started = time.perf_counter()
                try:
                    result = run_one(name, fresh_url(name), args, backend).as_json()
                finally:
                    scenarios.close_apps()
                result["elapsed_s"] = round(time.perf_counter() - started, 1)
                print(json.dumps(result), flush=True)
                results.append(result)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine": machine(), "results": results}, indent=2))
    print_table(results)
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1:]))
