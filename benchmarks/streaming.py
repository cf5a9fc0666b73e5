"""(4) Streaming: time to first token through ``PromptwireLLM.stream`` vs the server's own.

The dummy engine (echo) waits a set first-token delay, then streams one word per interval. The
server's own first-token time is that delay, and, measured on the wire, the first ``delta`` event
a raw httpx SSE reader sees. The community class cannot stream: its first text is the whole reply.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import httpx

from benchmarks.common import (
    BenchResult,
    Measurement,
    Ratio,
    finish,
    parse_args,
    promptwire_serve,
    ratios,
    words,
)

FIRST_TOKEN_DELAY = 0.25
TOKENS_PER_SECOND = 40.0
PROMPT_WORDS = 20

# A contender's call returns (seconds to the first text, seconds to the whole reply).
Timing = tuple[float, float]
Call = Callable[[str], Timing]


def _timed_stream(chunks: Iterator[str], started: float, prompt: str) -> Timing:
    first = None
    text = ""
    for chunk in chunks:
        if chunk and first is None:
            first = time.perf_counter() - started
        text += chunk
    total = time.perf_counter() - started
    _check(text, prompt)
    return first or total, total


def promptwire_stream(url: str) -> tuple[Call, Callable[[], None]]:
    from promptwire import PromptwireLLM

    llm = PromptwireLLM(endpoint_url=url)

    def call(prompt: str) -> Timing:
        return _timed_stream(llm.stream(prompt), time.perf_counter(), prompt)

    return call, llm.close


def promptwire_astream(url: str) -> tuple[Call, Callable[[], None]]:
    from promptwire import PromptwireLLM

    loop = asyncio.new_event_loop()
    llm = PromptwireLLM(endpoint_url=url)

    async def run(prompt: str) -> Timing:
        started = time.perf_counter()
        first = None
        text = ""
        async for chunk in llm.astream(prompt):
            if chunk and first is None:
                first = time.perf_counter() - started
            text += chunk
        total = time.perf_counter() - started
        _check(text, prompt)
        return first or total, total

    def close() -> None:
        loop.run_until_complete(llm.aclose())
        loop.close()

    return lambda prompt: loop.run_until_complete(run(prompt)), close


def httpx_sse(url: str) -> tuple[Call, Callable[[], None]]:
    """The wire: a raw httpx reader of the server's event stream."""
    client = httpx.Client(timeout=60.0)

    def deltas(response: httpx.Response) -> Iterator[str]:
        event = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "delta":
                yield json.loads(line[5:])["text"]

    def call(prompt: str) -> Timing:
        started = time.perf_counter()
        body = {"prompt": prompt, "stream": True}
        with client.stream("POST", url, json=body) as response:
            return _timed_stream(deltas(response), started, prompt)

    return call, client.close


def community_invoke(url: str) -> tuple[Call, Callable[[], None]]:
    from langchain_community.llms import Modal

    llm = Modal()
    llm.endpoint_url = url

    def call(prompt: str) -> Timing:
        started = time.perf_counter()
        text = llm.invoke(prompt)
        total = time.perf_counter() - started
        _check(text, prompt)
        return total, total

    return call, lambda: None


def _check(text: str, prompt: str) -> None:
    if text != prompt:
        raise RuntimeError(f"wrong reply: {text[:60]!r}")


def run(quick: bool) -> BenchResult:
    reps = 3 if quick else 9
    contenders: dict[str, Callable[[str], tuple[Call, Callable[[], None]]]] = {
        "raw httpx SSE reader (the wire)": httpx_sse,
        "promptwire stream": promptwire_stream,
        "promptwire astream": promptwire_astream,
        "langchain_community Modal invoke": community_invoke,
    }
    first: dict[str, list[float]] = {name: [] for name in contenders}
    total: dict[str, list[float]] = {name: [] for name in contenders}
    prompt = words(PROMPT_WORDS)
    with promptwire_serve(
        echo=True, first_token_delay=FIRST_TOKEN_DELAY, tokens_per_second=TOKENS_PER_SECOND
    ) as server:
        calls = {name: make(server.url) for name, make in contenders.items()}
        try:
            for call, _ in calls.values():  # warm-up: imports, first connection
                call(prompt)
            for rep in range(reps):
                names = list(contenders)
                for name in names[rep % len(names) :] + names[: rep % len(names)]:
                    ttft, whole = calls[name][0](prompt)
                    first[name].append(ttft * 1000)
                    total[name].append(whole * 1000)
        finally:
            for _, close in calls.values():
                close()
    engine_total = FIRST_TOKEN_DELAY + (PROMPT_WORDS - 1) / TOKENS_PER_SECOND
    result = BenchResult(
        key="streaming",
        title="4. Streaming: time to first token",
        setup=(
            f"`promptwire serve` with the dummy engine echoing a {PROMPT_WORDS}-word prompt: "
            f"{FIRST_TOKEN_DELAY * 1000:.0f} ms before the first word (the server's own "
            f"first-token time), then {TOKENS_PER_SECOND:g} words/s (whole reply "
            f"{engine_total * 1000:.0f} ms in the engine). One client object per contender, warmed "
            "up by one call (kept-alive connection)."
        ),
        quick=quick,
    )
    for name in contenders:
        result.measurements += [
            Measurement(name, "time to first token", "ms", first[name]),
            Measurement(name, "time to whole reply", "ms", total[name]),
        ]
    wire = first["raw httpx SSE reader (the wire)"]
    result.ratios = [
        Ratio(
            "promptwire stream TTFT / server first token (engine delay)",
            [t / (FIRST_TOKEN_DELAY * 1000) for t in first["promptwire stream"]],
            note=f"the engine waits {FIRST_TOKEN_DELAY * 1000:.0f} ms",
        ),
        Ratio(
            "promptwire stream TTFT / raw SSE reader TTFT",
            ratios(first["promptwire stream"], wire),
            note="the client's own added latency to the first token",
        ),
        Ratio(
            "langchain_community Modal TTFT / promptwire stream TTFT",
            ratios(first["langchain_community Modal invoke"], first["promptwire stream"]),
            note="the community class shows nothing until the whole reply is in",
        ),
    ]
    return result


def main() -> None:
    args = parse_args(__doc__ or "")
    started = time.perf_counter()
    finish(run(args.quick), started, args.json)


if __name__ == "__main__":
    main()
