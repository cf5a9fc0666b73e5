"""What every benchmark shares: result records, statistics, and servers run in their own process.

Servers always run in a separate process on 127.0.0.1, so the client being measured owns its
process (CPU time, GIL) alone. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
PYTHON = sys.executable
PROMPTWIRE_CLI = str(Path(PYTHON).with_name("promptwire"))
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

warnings.filterwarnings("ignore", category=DeprecationWarning)


# -- result records ----------------------------------------------------------------------------


@dataclass
class Measurement:
    """Repeated samples of one metric for one contender (one sample per repetition)."""

    contender: str
    metric: str
    unit: str
    samples: list[float]
    lower_is_better: bool = True

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass
class Ratio:
    """A ratio measured side by side: one sample per repetition, from the same repetition's
    numbers. ``target`` is met when the median is ``op`` the target."""

    name: str
    samples: list[float]
    target: float | None = None
    op: Literal[">=", "<="] = ">="
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.median >= self.target if self.op == ">=" else self.median <= self.target


@dataclass
class BenchResult:
    key: str
    title: str
    setup: str
    measurements: list[Measurement] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    quick: bool = False
    seconds: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)

    def measurement(self, contender: str, metric: str) -> Measurement:
        return next(m for m in self.measurements if m.contender == contender and m.metric == metric)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> BenchResult:
        data = json.loads(text)
        data["measurements"] = [Measurement(**m) for m in data["measurements"]]
        data["ratios"] = [Ratio(**r) for r in data["ratios"]]
        return cls(**data)


def spread(samples: Sequence[float]) -> float:
    """Noise of repeated samples: the interquartile range relative to the median (0 with fewer
    than 3 samples); min and max are reported beside it."""
    if len(samples) < 3:
        return 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    median = statistics.median(samples)
    return (q3 - q1) / median if median else 0.0


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Pairwise ratios of two contenders' samples taken in the same repetitions."""
    return [a / b for a, b in zip(numerators, denominators, strict=False) if b]


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import psutil  # type: ignore[import-untyped]

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil is a dev dependency
        pass
    return info


# -- command line of one benchmark -------------------------------------------------------------


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run")
    parser.add_argument("--json", type=Path, help="write the result here as JSON")
    return parser.parse_args()


def finish(result: BenchResult, started: float, out: Path | None) -> None:
    """Print a short summary of ``result`` and write it as JSON to ``out``."""
    result.seconds = round(time.perf_counter() - started, 1)
    result.machine = machine_info()
    print(f"== {result.title} ({result.seconds:.0f} s)")
    for m in result.measurements:
        print(
            f"  {m.contender:<34} {m.metric:<24} median {m.median:12.4g} {m.unit:<6}"
            f" noise ±{spread(m.samples) * 50:.0f}%  n={len(m.samples)}"
        )
    for r in result.ratios:
        verdict = {True: "MET", False: "MISSED", None: ""}[r.met]
        target = f" (target {r.op} {r.target:g}: {verdict})" if r.target is not None else ""
        print(f"  ratio {r.name}: {r.median:.3g}{target}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result.to_json() + "\n", encoding="utf-8")


# -- processes ---------------------------------------------------------------------------------


#: How OpenMP threads wait (llama.cpp's): never inherited from this process, where an engine
#: loaded in-process has set them (each server sets its own, or runs with OpenMP's default).
OPENMP_WAIT = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any ``PROMPTWIRE_*`` or LangChain tracing variable or the
    OpenMP wait variables (``OPENMP_WAIT``), plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROMPTWIRE_", "LANGCHAIN_", "LANGSMITH_")) and k not in OPENMP_WAIT
    }
    env["PYTHONWARNINGS"] = "ignore"
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(
    url: str,
    process: subprocess.Popen[bytes],
    *,
    verify: Any = True,
    timeout: float = START_TIMEOUT,
) -> None:
    """Poll ``url`` until it answers 200, the process dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(url, timeout=2.0, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} was not ready within {timeout:g}s")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


@contextmanager
def server_process(
    command: Sequence[str],
    health_url: str,
    env: Mapping[str, str] | None = None,
    verify: Any = True,
    timeout: float = START_TIMEOUT,
    quiet: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until the block ends, once ``health_url`` answers 200 (``quiet``: its
    standard error thrown away too)."""
    process = subprocess.Popen(
        list(command),
        env=clean_env(env),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if quiet else None,
    )
    try:
        wait_ready(health_url, process, verify=verify, timeout=timeout)
        yield process
    finally:
        stop_process(process)


@dataclass(frozen=True)
class DummyServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]


@contextmanager
def promptwire_serve(
    *,
    echo: bool = False,
    first_token_delay: float = 0.0,
    tokens_per_second: float | None = None,
    settings: Mapping[str, str] | None = None,
    cli: str = PROMPTWIRE_CLI,
) -> Iterator[DummyServer]:
    """``promptwire serve --backend modal_dummy`` (the real CLI) in its own process; ``settings``:
    more ``PROMPTWIRE_*`` variables for it; ``cli``: another installation's ``promptwire``."""
    port = free_port()
    env = {
        "PROMPTWIRE_MODAL_DUMMY__ECHO": "true" if echo else "false",
        "PROMPTWIRE_MODAL_DUMMY__FIRST_TOKEN_DELAY": str(first_token_delay),
        "PROMPTWIRE_LOAD_PLUGINS": "modal_dummy",
        **(settings or {}),
    }
    if tokens_per_second is not None:
        env["PROMPTWIRE_MODAL_DUMMY__TOKENS_PER_SECOND"] = str(tokens_per_second)
    command = [
        cli,
        "serve",
        "--backend",
        "modal_dummy",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    url = f"http://127.0.0.1:{port}/"
    with server_process(command, url + "health", env) as process:
        yield DummyServer(url, port, process)


def run_loadgen(
    port: int,
    duration: float,
    body: str,
    *,
    path: str = "/",
    connections: int = 16,
    warmup: float = 0.5,
) -> dict[str, float]:
    """One run of ``benchmarks.loadgen`` in its own process (the measuring process stays idle);
    its JSON result, or an error if any request was answered with one."""
    command = [PYTHON, "-m", "benchmarks.loadgen", "--port", str(port)]
    command += ["--connections", str(connections), "--duration", str(duration)]
    command += ["--warmup", str(warmup), "--path", path, "--body", body]
    completed = subprocess.run(
        command,
        capture_output=True,
        check=True,
        text=True,
        timeout=duration + warmup + 60,
        cwd=ROOT,
        env=clean_env(),
    )
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    if result["errors"]:
        raise RuntimeError(f"{path}: {result['errors']} requests answered with errors")
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as file:
        fields = file.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def words(count: int, seed: int = 0) -> str:
    """A prompt of ``count`` distinct words."""
    return " ".join(f"word{seed}-{i}" for i in range(count))
