"""Writes BENCHMARKS.md (tables) and PNG plots (matplotlib) from the benchmarks' JSON results."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import ROOT, BenchResult, Measurement, Ratio, spread

ORDER = [
    "batch",
    "network_delay",
    "client_cpu",
    "streaming",
    "server",
    "gpu",
    "startup",
    "openai_compat",
    "event_loop",
    "aiohttp_transport",
    "real_model",
    "router",
    "engine_process",
    "thread_wait",  # python -m benchmarks.thread_wait --json benchmarks/results/thread_wait.json
]
GPU_COMMAND = "uv run python -m benchmarks.gpu"


def load_results(directory: Path) -> dict[str, BenchResult]:
    results = {}
    for path in sorted(directory.glob("*.json")):
        result = BenchResult.from_json(path.read_text(encoding="utf-8"))
        results[result.key] = result
    return dict(sorted(results.items(), key=lambda kv: ORDER.index(kv[0])))


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _noise(samples: Sequence[float]) -> str:
    if len(samples) < 3:
        return "n/a"
    return f"±{spread(samples) * 50:.0f}%"


def _range(samples: Sequence[float]) -> str:
    return f"{_fmt(min(samples))}-{_fmt(max(samples))}"


def _verdict(ratio: Ratio) -> str:
    if ratio.met is None:
        return ""
    return "**met**" if ratio.met else "**MISSED**"


def _target(ratio: Ratio) -> str:
    return f"{ratio.op} {ratio.target:g}" if ratio.target is not None else "—"


# -- plots ---------------------------------------------------------------------------------------


def plot_result(result: BenchResult, path: Path) -> None:
    """One panel per metric: each contender's median, with whiskers from min to max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics: dict[str, list[Measurement]] = {}
    for m in result.measurements:
        metrics.setdefault(m.metric, []).append(m)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics) + 1, 3.6), squeeze=False)
    for ax, (metric, items) in zip(axes[0], metrics.items(), strict=True):
        names = [m.contender for m in items]
        medians = [m.median for m in items]
        low = [m.median - min(m.samples) for m in items]
        high = [max(m.samples) - m.median for m in items]
        colors = ["#1f77b4" if n.startswith("promptwire") else "#999999" for n in names]
        ax.barh(range(len(items)), medians, xerr=[low, high], color=colors, capsize=3)
        ax.set_yticks(range(len(items)), [_wrap(n) for n in names], fontsize=8)
        ax.invert_yaxis()
        unit = items[0].unit
        better = "lower is better" if items[0].lower_is_better else "higher is better"
        ax.set_xlabel(f"{metric} ({unit}); {better}" if unit else f"{metric}; {better}", fontsize=8)
        values = [v for v in medians if v > 0]
        if values and max(values) / min(values) > 30:
            ax.set_xscale("log")
        for i, value in enumerate(medians):
            ax.annotate(
                _fmt(value), (value, i), xytext=(4, 4), textcoords="offset points", fontsize=7
            )
    fig.suptitle(result.title + (" (quick run)" if result.quick else ""), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_summary(results: Sequence[BenchResult], path: Path) -> None:
    """Every ratio that has a target, as headroom over it (> 1: met)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[tuple[str, float, float, float]] = []
    for result in results:
        for r in result.ratios:
            if r.target is None:
                continue

            def headroom(value: float, r: Ratio = r) -> float:
                if r.op == ">=":
                    return value / r.target  # type: ignore[operator]
                # At or below zero (an HTTP overhead can be), a "<=" target is met by any
                # factor: drawn as 100x, so the bar stays on the log scale and in order.
                return r.target / max(value, r.target / 100)  # type: ignore[operator]

            values = [headroom(s) for s in r.samples]
            rows.append((r.name, headroom(r.median), min(values), max(values)))
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    names = [_wrap(row[0], 48) for row in rows]
    medians = [row[1] for row in rows]
    errors = [
        [m - row[2] for m, row in zip(medians, rows, strict=True)],
        [row[3] - m for m, row in zip(medians, rows, strict=True)],
    ]
    colors = ["#2ca02c" if m >= 1 else "#d62728" for m in medians]
    ax.barh(range(len(rows)), medians, xerr=errors, color=colors, capsize=3)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("measured / target (for '≤' targets: target / measured); > 1 means met")
    for i, value in enumerate(medians):
        ax.annotate(f"{value:.2f}x", (value, i), xytext=(4, 4), textcoords="offset points")
    ax.set_title("promptwire against its targets (median, whiskers min-max)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _wrap(text: str, width: int = 26) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines)


# -- markdown ------------------------------------------------------------------------------------


def render(results: dict[str, BenchResult], directory: Path, command: str) -> str:
    quick = any(r.quick for r in results.values())
    cpu_results = [r for k, r in results.items() if k != "gpu"]
    machine = cpu_results[0].machine if cpu_results else {}
    loads = ", ".join(
        f"{r.key} {r.machine.get('load_average_at_start', ['?'])[0]}" for r in cpu_results
    )
    total = sum(r.seconds for r in cpu_results)
    noises = sorted(
        spread(m.samples) * 50 for r in cpu_results for m in r.measurements if len(m.samples) >= 3
    )
    noise_range = (
        f"{noises[0]:.0f}% to {noises[-1]:.0f}% (median {noises[len(noises) // 2]:.0f}%)"
        if noises
        else "n/a"
    )
    lines = [
        "# Benchmarks",
        "",
        "promptwire against `langchain_community.llms.Modal` (the class it replaces), raw httpx "
        "and bare FastAPI, measured side by side. Generated by `benchmarks/` "
        f"(`{command}`); do not edit by hand.",
        "",
    ]
    if quick:
        lines += ["> **Quick run**: few repetitions, smaller workloads; a smoke test only.", ""]
    lines += [
        f"- Run on {dt.date.today().isoformat()}: Python {machine.get('python', '?')}, "
        f"{machine.get('cpus', '?')} CPUs, {machine.get('memory_gib', '?')} GiB, "
        f"{machine.get('platform', '?')}; CPU suite took {total / 60:.1f} min.",
        "- Every ratio is computed from numbers measured in the same run: one ratio per "
        "repetition (contenders run back to back, in rotating order), and the table gives the "
        "median and the range over repetitions. Servers run in their own processes on "
        "127.0.0.1.",
        "- **Noise.** The machine has 2 cores, shared with other work (1-minute load average "
        f"when each benchmark started: {loads}). The *noise* column is half the interquartile "
        "range of the repetitions, as a percentage of their median; *range* is min-max. In this "
        f"run it went from {noise_range} over all measurements: latencies set by the simulated "
        "network or engine are steady, CPU-bound figures (benchmarks 3 and 5) are the noisy "
        "ones. Treat differences smaller than the noise as ties.",
        "",
        "## Targets",
        "",
        "| Benchmark | Ratio | Median | Range | Target | |",
        "|---|---|---|---|---|---|",
    ]
    for result in cpu_results:
        for r in result.ratios:
            if r.target is None:
                continue
            lines.append(
                f"| {result.title} | {r.name} | **{r.median:.3g}** | {_range(r.samples)} "
                f"(n={len(r.samples)}) | {_target(r)} | {_verdict(r)} |"
            )
    lines += ["", "![Targets](" + _rel(directory / "summary.png") + ")", ""]
    lines += FINDINGS
    for key in ORDER:
        if key == "gpu":
            lines += _gpu_section(results.get("gpu"), directory)
            continue
        if key in results:
            lines += _section(results[key], directory)
    return "\n".join(lines).rstrip() + "\n"


FINDINGS = [
    "## What the benchmarks found, and what was changed",
    "",
    "Fixed in promptwire because a benchmark showed it losing (each its own commit):",
    "",
    "- **The async connection pool.** httpcore 1.0's pool rescans all its connections several "
    "times per request (work quadratic in its size; encode/httpcore#1035). With one pool and 64 "
    "requests in flight that bookkeeping cost more CPU than the requests themselves (benchmark 1: "
    "raw httpx, one `AsyncClient`). promptwire's client now spreads concurrent async requests "
    "over pools of at most 8 connections, taking the pool with the most free connections (the "
    "first among equals, so sequential calls keep reusing one connection), all sharing one SSL "
    "context (each httpx client otherwise loads the CA bundle again).",
    "- **`batch`/`abatch` honour the config's `max_concurrency`.** LangChain's `BaseLLM` cuts a "
    "batch with `max_concurrency` into waves of that size and ran each wave at the model's own "
    "limit (16 by default): `abatch(prompts, config={'max_concurrency': 64})` had at most 16 "
    "requests in flight. The whole batch now goes to one `generate` with the config's limit, "
    "new requests starting as others finish.",
    "- **Racing pool creation.** The sync pool, the SSL context and the model's client were made "
    "lazily without a lock; a batch's threads reached them together and each made its own (52 "
    "httpx clients for one 256-prompt batch, all but one leaked with their connections). They "
    "are now made once under a lock.",
    "- **Server tail latency.** Under load the cyclic garbage collector's full collections "
    "rescanned the whole start-up heap (modules, FastAPI, pydantic schemas), 25-35 ms each, "
    "about 1.5 times a second, while requests waited: `promptwire serve` had 2.4x the bare app's "
    "p99 at the same throughput. The app now calls `gc.freeze()` once the engine has started "
    "(after a collection; unfrozen at shutdown), which takes that heap out of their reach.",
    "- **`ainvoke`** awaits its single request directly (no task, no semaphore), and `astream` "
    "closes the client stream the moment it ends, returning the connection at once.",
    "- **Client CPU per call** (benchmark 3 missed its 1.5x target at 1.63x/1.60x). Half of "
    "httpx's own CPU per request went to its cookie jar: every reply is handed to urllib's "
    "`CookieJar` through adapter objects that re-parse the URL. The protocol is stateless, so "
    "promptwire's pools were made httpx clients without a jar (which also keeps one caller's "
    "cookies off another's requests). The endpoint URL is parsed once (and checked when the "
    "model is made), and the retry loop, whose set-up cost more than a local request, is entered "
    "only after a failure worth retrying. That brought promptwire's HTTP layer to about 0.8-0.9x "
    "raw httpx's CPU. The client's split into modules (issue 14) gave the pools a public "
    "`CookieJar` that stores nothing instead, which httpx still handed every reply through those "
    "adapters (about a tenth of httpx's CPU per call). promptwire's own clients again keep no "
    "jar (their `cookies` never store and never read a reply; a test checks that replies are "
    "not read) and build each request from their own headers rather than through "
    "`build_request`, which merged URL, headers, query and cookies anew for every request. In "
    "three runs interleaved with three of the split's code on a noisy machine: invoke 1.28-1.35x "
    "raw httpx (was 1.35-1.51x), ainvoke 1.31-1.42x (was 1.42-1.49x), the HTTP layer "
    "0.86-0.92x (was 0.97-1.05x; benchmark 3).",
    "- **Server cost per request** (benchmark 5 measured `promptwire serve` at 0.87x bare "
    "FastAPI's requests/s and 1.15x its CPU per request; issue 22). Profiled under the load "
    "generator (py-spy, then the protocol and app driven in-process), the extra CPU went mostly "
    "to a worker-thread round trip for every request's `prepare` and to a task plus "
    "`asyncio.wait` for every reply's disconnect watcher. Engines now mark a `prepare` that "
    "returns at once for a plain prompt with `@quick_prepare` (the default one and the dummy "
    "engine's are; an override is unmarked again), and such requests are prepared on the loop; "
    "conversations still go to the thread. The work is awaited in the request's task, and the "
    "watcher task starts only if it has to wait (1.47x -> 1.26x -> 1.15x CPU in a 4-round A/B "
    "on this shared machine). Body and send deadlines set their timer only once the task waits "
    "(`server/_deadline.py`: no anyio cancel scope per streamed event), `delta` events are "
    "encoded with `pydantic_core.to_json` (byte for byte the same, 5.5 -> 0.44 us each), and "
    "plain requests skip the schema-budget and capability checks. Every guard stays: body "
    "deadline, send timeout, disconnect cancellation, header deadline, connection cap, "
    "smuggling refusals. Now 1.05x bare FastAPI's requests/s and 1.00x its CPU per request; a "
    "256-token stream costs 0.56x the CPU per token of a bare FastAPI + sse-starlette endpoint. "
    "Then the parser: the connection guards (header deadline, connection cap and shedding, "
    "send timeout, JSON refusals) were written over uvicorn's h11 protocol only; they became "
    "one mixin over either of uvicorn's protocols (`server/_connections.py`), and `promptwire "
    "serve` runs on httptools (llhttp, in C) where it is installed (`PROMPTWIRE_HTTP`, h11 the "
    "fallback), every guard tested on both parsers: 1.49x the requests/s of the same server "
    "on h11 and 1.45x bare FastAPI on h11 (the stretch goal was 1.2x), at 0.96x the "
    "requests/s of bare FastAPI on httptools. Last, the prompt route is matched first: every "
    "request used to try `/openapi.json`, `/metrics` and `/health` before it (0.96x -> 1.02x "
    "bare FastAPI on httptools, 0.97x -> 1.02x on h11, in two runs of benchmark 5).",
    "- **The OpenAI routes** (benchmark 8 first measured `/v1/completions` at 0.67x the prompt "
    "route's requests/s). They were an `APIRouter` included in the app, which FastAPI matches as "
    "a nested router (about 15 µs more per request); the prompt request was built with "
    "pydantic's `model_construct` (slower than validating it); replies went through `json.dumps` "
    "and an error object was made for every request. Routes on the app itself, validation, "
    "pydantic's encoder and lazy errors brought it to 0.92-0.96x (0.92x after the server's "
    "hardening, which both routes pay).",
    "",
    "Not changed, and why:",
    "",
    "- **LangChain's own per-call machinery** (callback managers, run bookkeeping, and for "
    "`ainvoke` several extra event-loop turns from `asyncio.gather` over callbacks) is paid by "
    "every `LLM` subclass. Benchmark 3 measures the smallest LangChain LLM making the same call "
    "with raw httpx: that floor alone costs about 1.4x raw httpx's CPU on this machine (more "
    "for `ainvoke`), which would leave no room under the 1.5x target had promptwire's HTTP "
    "layer not become cheaper than raw httpx. Skipping LangChain's machinery would drop "
    "callbacks and tracing, so it stays.",
    "- **Start-up**: promptwire's client path imports pydantic-settings (the largest part of "
    "what it adds over the floor), tenacity and httpx-sse, and nothing heavy (modal, FastAPI, "
    "uvicorn, torch are absent; see the notes of benchmark 7). The community class is cheaper "
    "than the floor on a plain-HTTP call because it uses `requests` and never imports httpx or "
    "loads a CA bundle.",
    "- **The async transport** (benchmark 10). httpx over aiohttp (`httpx-aiohttp`, what the "
    "openai SDK offers for high concurrency) costs less client CPU than promptwire's sharded "
    "httpx pools and is as fast or faster in wall time, so promptwire takes it as "
    "`http_async_client=HttpxAiohttpClient()`. It is not the default: it would put aiohttp on "
    "the client path, which keeps to httpx; httpx-aiohttp 0.2.0 turns every "
    "`aiohttp.ClientConnectionError`, a server hanging up on a request already sent included, "
    "into `httpx.ConnectTimeout` (as a review of the openai SDK's copy found, "
    "openai/openai-python#3594), and sends no trace events, so promptwire repeats no connection "
    "error through it unless `retry_unsafe` is set (measured on the fault server: such a "
    "request was sent 3 times before that rule, once after); and aiohttp's own cookie jar, "
    "which stores cookies from host names, is out of promptwire's reach.",
    "- **Server**: `promptwire serve` does more than the bare app per request (strict "
    "validation, size and in-flight limits, a disconnect watcher that cancels generation, "
    "protocol error bodies), about 60 µs of app time per request, small beside uvicorn's own "
    "HTTP handling. The bare app is measured as users write it (it does not freeze its heap).",
    "",
]


def _section(result: BenchResult, directory: Path) -> list[str]:
    """A benchmark's section; ``<key>.context.md`` beside its JSON, when there is one, says
    what the run's figures need to be read with (the machine's load that day, say)."""
    lines = [f"## {result.title}", ""]
    context = directory / f"{result.key}.context.md"
    if context.exists():
        lines += [context.read_text(encoding="utf-8").strip(), ""]
    lines += [
        result.setup,
        "",
        "| Contender | Metric | Median | Range | Noise | n |",
        "|---|---|---|---|---|---|",
    ]
    for m in result.measurements:
        unit = f" {m.unit}" if m.unit else ""
        lines.append(
            f"| {m.contender} | {m.metric} | **{_fmt(m.median)}**{unit} | {_range(m.samples)} | "
            f"{_noise(m.samples)} | {len(m.samples)} |"
        )
    lines += ["", "| Ratio (measured side by side) | Median | Range | Target | | Note |"]
    lines.append("|---|---|---|---|---|---|")
    for r in result.ratios:
        lines.append(
            f"| {r.name} | **{r.median:.3g}** | {_range(r.samples)} | {_target(r)} | "
            f"{_verdict(r)} | {r.note} |"
        )
    lines.append("")
    for note in result.notes:
        lines += [f"- {note}"]
    if result.notes:
        lines.append("")
    lines += [f"![{result.title}]({_rel(directory / (result.key + '.png'))})", ""]
    return lines


def _gpu_section(result: BenchResult | None, directory: Path) -> list[str]:
    if result is None:
        return [
            "## 6. GPU: ExLlamaV2 served over HTTP",
            "",
            "**No figures yet.** One H200 was lent once (2026-12-04, 15 minutes of device "
            "time; torch 2.11.0+cu130, no flash-attn, so the engine ran unpaged): exllamav2's "
            "extension built in 163 s with 16 jobs, and the GPU tests passed (55 passed, 3 "
            "skipped: the two API-key checks of a server without a key and the community "
            "class's echo check, in 89 s). `benchmarks.gpu --quick` did not finish in what was "
            "left (233 s, then 280 s on the same machine): it had built the model, measured "
            "the generator and the engine in-process and started `promptwire serve`, and was "
            "still in the HTTP phase when stopped; it printed nothing in between then, and now "
            "prints a line per step and keeps what it measured in `gpu.partial.json` when "
            "stopped. The run is prepared as one command, `benchmarks/gpu_run.sh`, for a "
            "CUDA machine without network access or flash-attn, such as the lent H200 (Python "
            "3.12 with a CUDA build of torch, transformers, pytest and nvcc): gather the wheels "
            "on a machine with PyPI with `benchmarks/gpu_wheels.sh .whl` (promptwire's packages, "
            "exllamav2 0.3.2 and what such an image lacks, about 16 MB), then run "
            "`benchmarks/gpu_run.sh --wheels .whl` on the GPU machine. It compiles exllamav2's "
            "CUDA extension for that GPU only (`TORCH_CUDA_ARCH_LIST` set to its compute "
            "capability, `MAX_JOBS` to its CPU count), runs the GPU tests (`pytest -m gpu "
            "tests/exllama/test_gpu_engine.py`) and `python -m benchmarks.gpu --quick`, each "
            "step within what is left of 570 seconds, and leaves its log, phase timings, test "
            "report and `gpu.json` in `$OUT`; copy `gpu.json` to `benchmarks/results/` and run "
            "`uv run --group bench python -m benchmarks --report-only` to put the figures here. "
            "The full run is "
            f"`{GPU_COMMAND}` on a machine with the GPU stack of "
            "`plugins/modal_exllama/README.md`; without CUDA it exits with status 2 and names "
            "what is missing. Without flash-attn the engine runs unpaged (one sequence at a "
            "time) and the result's setup says so. The benchmark builds a random-weight Llama of "
            "1.1B parameters (TinyLlama's shape, FP16) and a tokenizer whose every id decodes to "
            "text at run time and measures, greedy, 1, 16 and 64 concurrent streams of 256 new "
            "tokens: ExLlamaV2's dynamic generator driven in-process (the floor), promptwire's "
            "`BatchingEngine` in-process, `promptwire serve` over HTTP through promptwire's "
            "client (serving overhead), and transformers `generate` on the same weights, time to "
            "first token counted at the first text in all three; plus the fraction of the GPU's "
            "memory-bandwidth roofline (data-sheet bandwidth / bytes read per decoded token; a "
            "measured device copy is reported beside it) that single-stream decode reaches.",
            "",
        ]
    return _section(result, directory)


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def write_report(directory: Path, out: Path, command: str) -> None:
    results = load_results(directory)
    for result in results.values():
        plot_result(result, directory / f"{result.key}.png")
    plot_summary([r for k, r in results.items() if k != "gpu"], directory / "summary.png")
    out.write_text(render(results, directory, command), encoding="utf-8")
