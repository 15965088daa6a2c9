"""The benchmark's readable table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

COLUMNS = {
    "bulk": ["enqueue_jobs_per_s", "processed_jobs_per_s", "wall_jobs_per_s"],
    "scale": ["history_jobs", "processed_jobs_per_s"],
    "latency": ["p50_ms", "p95_ms", "p99_ms", "max_ms"],
    "shell": ["relay_jobs_per_s", "plain_loop_spawns_per_s", "ratio", "wall_ratio"],
    "rated": ["limit_jobs_per_s", "held_jobs_per_s", "deviation_pct", "most_starts_in_1s"],
    "keyed": ["enqueue_jobs_per_s", "processed_jobs_per_s"],
    "grpc": ["processed_jobs_per_s", "wall_jobs_per_s"],
}


def print_table(results: list[dict[str, object]]) -> None:
    table = Table(title="Relay benchmarks")
    for column in ("backend", "scenario", "figures"):
        table.add_column(column)
    for r in results:
        scenario = str(r["scenario"])
        figures = ", ".join(f"{k}={r[k]}" for k in COLUMNS.get(scenario, []) if k in r)
        table.add_row(str(r["backend"]), scenario, figures)
    Console().print(table)
