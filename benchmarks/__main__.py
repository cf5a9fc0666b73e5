"""Run every CPU benchmark and write BENCHMARKS.md with tables and PNG plots.

    uv run --group bench python -m benchmarks                # the full CPU suite (~10 minutes)
    uv run --group bench python -m benchmarks --quick        # a smoke run (results/quick/)
    uv run --group bench python -m benchmarks --only batch   # some; the report keeps the others
    uv run --group bench python -m benchmarks --report-only  # rebuild the report from the JSON
    uv run python -m benchmarks.gpu                          # the GPU benchmark, on a CUDA machine

Each benchmark runs in its own process (``python -m benchmarks.<name> --json ...``), so one
benchmark's imports, threads and garbage do not weigh on the next.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from benchmarks.common import PYTHON, RESULTS_DIR, ROOT, clean_env
from benchmarks.report import write_report

CPU_BENCHMARKS = [
    "batch",
    "network_delay",
    "client_cpu",
    "streaming",
    "server",
    "startup",
    "openai_compat",
    "event_loop",
    "aiohttp_transport",
    "real_model",
    "router",
    "engine_process",
]
TIME_LIMIT = 900  # seconds for one benchmark
#: real_model builds llama-server the first time (benchmarks/build_llama_server.sh).
TIME_LIMITS = {"real_model": 3600 + TIME_LIMIT}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Run promptwire's CPU benchmarks."
    )
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--only", nargs="+", choices=CPU_BENCHMARKS, help="run only these")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report")
    args = parser.parse_args()

    directory = RESULTS_DIR / "quick" if args.quick else RESULTS_DIR
    out = directory / "BENCHMARKS.md" if args.quick else ROOT / "BENCHMARKS.md"
    directory.mkdir(parents=True, exist_ok=True)
    failed = []
    if not args.report_only:
        for name in args.only or CPU_BENCHMARKS:
            started = time.perf_counter()
            command = [
                PYTHON,
                "-m",
                f"benchmarks.{name}",
                "--json",
                str(directory / f"{name}.json"),
            ]
            if args.quick:
                command.append("--quick")
            print(f"-- {name}", flush=True)
            try:
                subprocess.run(
                    command,
                    check=True,
                    cwd=ROOT,
                    env=clean_env(),
                    timeout=TIME_LIMITS.get(name, TIME_LIMIT),
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                print(f"!! {name} failed: {exc}", file=sys.stderr)
                failed.append(name)
            print(f"   ({time.perf_counter() - started:.0f} s)", flush=True)
    how = "uv run --group bench python -m benchmarks" + (" --quick" if args.quick else "")
    write_report(directory, out, how)
    print(f"wrote {out.relative_to(ROOT)} and plots in {directory.relative_to(ROOT)}/")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
