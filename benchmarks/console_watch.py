"""What watching the console costs the server: benchmark 5's ``promptwire serve`` (httptools,
metrics on) under the same load generator, with and without a watcher of ``/console`` open.

The console's page asks ``GET /console/stats`` once a second while it is visible, and nothing
else while nobody sends a prompt. One server, loaded in turns, watched and not, the order
reversed each round (the runs of a pair adjacent): requests/s and the server process's CPU per
request, then the same for benchmark 5's 256-token streams. The watcher runs in a process of its
own: a poller that asks exactly what the page asks (``--watcher http``, the default), or the page
itself in headless chromium (``--watcher browser``: Playwright and the system's chromium, which
also takes CPU from the 2 cores the server and the load generator share, so there CPU per
request is the figure to read, not requests/s).

    uv run python -m benchmarks.console_watch [--quick] [--watcher http|browser] [--json OUT]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from benchmarks.common import (
    PYTHON,
    ROOT,
    BenchResult,
    Measurement,
    Ratio,
    clean_env,
    finish,
    promptwire_serve,
    ratios,
)
from benchmarks.server import BODY, STREAM_BODY, STREAM_SETTINGS, load, load_stream

WATCHED = "watched"
UNWATCHED = "not watched"
POLL_SECONDS = 1.0


def poll(url: str) -> None:
    """The page's own traffic while it is open: the stats once a second, on one connection."""
    with httpx.Client(timeout=30) as client:
        while True:
            started = time.monotonic()
            client.get(url + "console/stats").raise_for_status()
            time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - started)))


def browse(url: str) -> None:
    """The page itself, in headless chromium, until killed."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        page = browser.new_page()
        page.goto(url + "console")
        while True:
            page.wait_for_timeout(1000)


@contextmanager
def watcher(url: str, kind: str) -> Iterator[None]:
    command = [PYTHON, "-m", "benchmarks.console_watch", f"--{kind}-only", url]
    process = subprocess.Popen(command, cwd=ROOT, env=clean_env(), stdout=subprocess.DEVNULL)
    try:
        # Started (its imports, the browser's start) before the run: once its first poll is
        # counted and a second has passed, it only polls.
        seen = _stats_requests(url)
        deadline = time.monotonic() + 60
        while _stats_requests(url) == seen:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} watcher did not start ({process.returncode})")
            time.sleep(0.1)
        time.sleep(1.0)
        yield
    finally:
        process.kill()
        process.wait(10)


def run(quick: bool, kind: str) -> BenchResult:
    duration = 1.5 if quick else 4.0
    rounds = 2 if quick else 9
    samples: dict[str, dict[str, list[float]]] = {}
    stats_before = stats_after = 0
    with ExitStack() as stack:
        served = stack.enter_context(
            promptwire_serve(settings={**STREAM_SETTINGS, "PROMPTWIRE_HTTP": "httptools"})
        )
        port, pid, url = served.port, served.process.pid, served.url
        load(port, 1.0)  # warm-up
        load(port, 1.0, body=STREAM_BODY)
        stats_before = _stats_requests(url)
        for round_ in range(rounds):
            print(f"  round {round_ + 1}/{rounds}", file=sys.stderr, flush=True)
            order = [WATCHED, UNWATCHED] if round_ % 2 == 0 else [UNWATCHED, WATCHED]
            for name in order:
                with watcher(url, kind) if name == WATCHED else ExitStack():
                    for key, value in load(port, duration, pid).items():
                        samples.setdefault(name, {}).setdefault(key, []).append(value)
                    for key, value in load_stream(port, duration, pid).items():
                        samples.setdefault(name + ", 256-token stream", {}).setdefault(
                            key, []
                        ).append(value)
        stats_after = _stats_requests(url)
    result = BenchResult(
        key="console_watch",
        title="Watching the console: benchmark 5 with /console open",
        setup=(
            f"One `promptwire serve` (httptools, metrics on: benchmark 5's first server, its "
            f"reply for the streams {len(STREAM_SETTINGS['PROMPTWIRE_MODAL_DUMMY__REPLY'])} "
            f"characters, 256 tokens), loaded by benchmark 5's load generator (16 keep-alive "
            f"connections; request `{BODY}`, then `{STREAM_BODY}`), {duration:g} s per run, "
            f"{rounds} rounds, each round one run watched and one not, adjacent, the order "
            f"reversed each round. Watcher: "
            + (
                "a process asking `GET /console/stats` once a second on one keep-alive "
                "connection, as the page does while it is open and visible"
                if kind == "http"
                else "the page itself in headless chromium (Playwright, the system's chromium)"
            )
            + ". The load generator, the server and the watcher share the 2 cores."
        ),
        quick=quick,
    )
    for name, figures in samples.items():
        if "stream" in name:
            result.measurements += [
                Measurement(
                    name, "streamed tokens/s", "tok/s", figures["tokens_s"], lower_is_better=False
                ),
                Measurement(name, "server CPU per token", "us", figures["cpu_us_token"]),
            ]
            continue
        result.measurements += [
            Measurement(name, "requests/s", "req/s", figures["rps"], lower_is_better=False),
            Measurement(name, "p99 latency", "ms", figures["p99_ms"]),
            Measurement(name, "server CPU per request", "us", figures["cpu_us"]),
        ]
    on, off = samples[WATCHED], samples[UNWATCHED]
    on_s, off_s = samples[WATCHED + ", 256-token stream"], samples[UNWATCHED + ", 256-token stream"]
    result.ratios = [
        Ratio("requests/s, watched / not watched", ratios(on["rps"], off["rps"]), 0.97, ">="),
        Ratio("server CPU per request, watched / not watched", ratios(on["cpu_us"], off["cpu_us"])),
        Ratio(
            "256-token stream: streamed tokens/s, watched / not watched",
            ratios(on_s["tokens_s"], off_s["tokens_s"]),
            0.97,
            ">=",
        ),
        Ratio(
            "256-token stream: server CPU per token, watched / not watched",
            ratios(on_s["cpu_us_token"], off_s["cpu_us_token"]),
        ),
    ]
    result.notes.append(
        f"The stats were asked {stats_after - stats_before} times during the runs "
        "(the server's own count of GET /console/stats)."
    )
    return result


def _stats_requests(url: str) -> int:
    """How many times ``/console/stats`` was answered, from the server's own metrics."""
    text = httpx.get(url + "metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith("promptwire_requests_total{") and 'route="/console/stats"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run")
    parser.add_argument("--json", type=Path, help="write the result here as JSON")
    parser.add_argument("--watcher", choices=("http", "browser"), default="http")
    parser.add_argument("--http-only", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--browser-only", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.http_only:
        poll(args.http_only)
        return
    if args.browser_only:
        browse(args.browser_only)
        return
    started = time.perf_counter()
    finish(run(args.quick, args.watcher), started, args.json)


if __name__ == "__main__":
    main()
