"""(7) Start-up cost: wall time and peak memory of a fresh process that imports an LLM class and
makes one call, as a serverless caller pays on every cold start.

The floor imports only langchain-core's ``LLM`` base and httpx and makes the call with httpx.
Each child also reports whether it imported anything heavy (modal, FastAPI, uvicorn, torch).
Peak memory is the child's maximum resident set size, from ``wait4``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

from benchmarks.common import (
    PYTHON,
    BenchResult,
    Measurement,
    Ratio,
    clean_env,
    finish,
    parse_args,
    promptwire_serve,
    ratios,
)

HEAVY = ("modal", "fastapi", "uvicorn", "torch", "starlette", "exllamav2", "transformers")

REPORT = f"""
import json, sys
heavy = [m for m in {HEAVY!r} if m in sys.modules]
print(json.dumps({{"reply": reply, "heavy": heavy, "modules": len(sys.modules)}}))
"""

PROGRAMS = {
    "floor (langchain-core LLM + httpx)": """
import os
from langchain_core.language_models.llms import LLM
import httpx
reply = httpx.post(os.environ["URL"], json={"prompt": "hi"}).json()["prompt"]
""",
    "promptwire": """
import os
from promptwire import PromptwireLLM
reply = PromptwireLLM(endpoint_url=os.environ["URL"]).invoke("hi")
""",
    "langchain_community Modal": """
import os
from langchain_community.llms import Modal
llm = Modal()
llm.endpoint_url = os.environ["URL"]
reply = llm.invoke("hi")
""",
}


def cold_start(program: str, url: str, cwd: str) -> tuple[float, float, dict[str, object]]:
    """Run ``program`` in a fresh interpreter: (wall seconds, peak RSS MiB, its report)."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [PYTHON, "-c", program + REPORT],
        env=clean_env({"URL": url}),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Read the output first (a full pipe would block the child), then reap it with its rusage.
    out, err = child.stdout.read(), child.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"the child failed: {err.decode()[-2000:]}")
    report: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    if report["reply"] != "hi":
        raise RuntimeError(f"wrong reply {report['reply']!r}")
    return elapsed, usage.ru_maxrss / 1024, report


def run(quick: bool) -> BenchResult:
    reps = 2 if quick else 9
    wall: dict[str, list[float]] = {name: [] for name in PROGRAMS}
    rss: dict[str, list[float]] = {name: [] for name in PROGRAMS}
    reports: dict[str, dict[str, object]] = {}
    with promptwire_serve(echo=True) as server, tempfile.TemporaryDirectory() as cwd:
        for program in PROGRAMS.values():  # warm-up: the OS file cache
            cold_start(program, server.url, cwd)
        for rep in range(reps):
            names = list(PROGRAMS)
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                seconds, mib, reports[name] = cold_start(PROGRAMS[name], server.url, cwd)
                wall[name].append(seconds)
                rss[name].append(mib)
    result = BenchResult(
        key="startup",
        title="7. Start-up cost (cold process, one call)",
        setup=(
            "A fresh `python -c` process imports the class, makes one call to `promptwire serve` "
            "(dummy engine, echo) and exits; wall time from spawn to exit, peak RSS from "
            f"`wait4`. {reps} runs each, interleaved, after one untimed run each (file cache)."
        ),
        quick=quick,
    )
    for name in PROGRAMS:
        result.measurements += [
            Measurement(name, "wall time", "s", wall[name]),
            Measurement(name, "peak memory", "MiB", rss[name]),
        ]
    floor = "floor (langchain-core LLM + httpx)"
    result.ratios = [
        Ratio("promptwire wall time / floor", ratios(wall["promptwire"], wall[floor]), 1.1, "<="),
        Ratio("promptwire peak memory / floor", ratios(rss["promptwire"], rss[floor]), 1.1, "<="),
        Ratio(
            "langchain_community Modal wall time / floor",
            ratios(wall["langchain_community Modal"], wall[floor]),
        ),
    ]
    for name, report in reports.items():
        heavy = ", ".join(report["heavy"]) or "none"  # type: ignore[arg-type]
        result.notes.append(
            f"{name}: {report['modules']} modules loaded; heavy modules imported: {heavy}."
        )
    return result


def main() -> None:
    args = parse_args(__doc__ or "")
    started = time.perf_counter()
    finish(run(args.quick), started, args.json)


if __name__ == "__main__":
    main()
