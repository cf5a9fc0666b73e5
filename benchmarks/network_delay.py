"""(2) Connection reuse under real network delay: sequential ``invoke`` over TLS, 20 ms RTT.

The promptwire app (dummy engine, echo) is served over TLS with a self-signed certificate made at
run time, reached through ``benchmarks.delay_proxy``, which holds every chunk 10 ms in each
direction and charges a new connection one extra round trip for TCP's handshake. Each contender
makes sequential calls; the proxy counts the connections and round trips they pay.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from benchmarks.common import (
    PYTHON,
    BenchResult,
    Measurement,
    Ratio,
    finish,
    free_port,
    parse_args,
    percentile,
    ratios,
    server_process,
    words,
)
from benchmarks.delay_proxy import ProxyControl
from benchmarks.servers import make_certificate

DELAY = 0.010
RTT = 2 * DELAY

Call = Callable[[str], str]


@contextmanager
def delayed_tls_endpoint(directory: Path) -> Iterator[tuple[str, ProxyControl]]:
    """The TLS server behind the delay proxy: yields the proxied URL and the proxy's control."""
    cert, key = make_certificate(directory)
    server_port, proxy_port, control_port = free_port(), free_port(), free_port()
    with ExitStack() as stack:
        stack.enter_context(
            server_process(
                [
                    PYTHON,
                    "-m",
                    "benchmarks.servers",
                    "tls",
                    "--port",
                    str(server_port),
                    "--certfile",
                    str(cert),
                    "--keyfile",
                    str(key),
                ],
                f"https://127.0.0.1:{server_port}/health",
                verify=str(cert),
            )
        )
        proxied = f"https://127.0.0.1:{proxy_port}/"
        stack.enter_context(
            server_process(
                [
                    PYTHON,
                    "-m",
                    "benchmarks.delay_proxy",
                    "--port",
                    str(proxy_port),
                    "--target-port",
                    str(server_port),
                    "--control-port",
                    str(control_port),
                    "--delay",
                    str(DELAY),
                ],
                proxied + "health",
                verify=str(cert),
            )
        )
        control = ProxyControl(control_port)
        stack.callback(control.close)
        # Every client trusts the certificate through the variables its library reads.
        os.environ["SSL_CERT_FILE"] = str(cert)
        os.environ["REQUESTS_CA_BUNDLE"] = str(cert)
        os.environ.pop("SSL_CERT_DIR", None)
        yield proxied, control


def promptwire_call(url: str) -> tuple[Call, Callable[[], None]]:
    from promptwire import PromptwireLLM

    llm = PromptwireLLM(endpoint_url=url)
    return llm.invoke, llm.close


def community_call(url: str) -> tuple[Call, Callable[[], None]]:
    from langchain_community.llms import Modal

    llm = Modal()
    llm.endpoint_url = url
    return llm.invoke, lambda: None


def httpx_call(url: str) -> tuple[Call, Callable[[], None]]:
    client = httpx.Client(timeout=60.0)

    def call(prompt: str) -> str:
        response = client.post(url, json={"prompt": prompt})
        response.raise_for_status()
        text: str = response.json()["prompt"]
        return text

    return call, client.close


def run(quick: bool) -> BenchResult:
    calls = 10 if quick else 40
    reps = 2 if quick else 5
    contenders = {
        "promptwire": promptwire_call,
        "raw httpx.Client": httpx_call,
        "langchain_community Modal": community_call,
    }
    p50: dict[str, list[float]] = {name: [] for name in contenders}
    trips: dict[str, list[float]] = {name: [] for name in contenders}
    connections: dict[str, list[float]] = {name: [] for name in contenders}
    prompt = words(12)
    with tempfile.TemporaryDirectory() as tmp, delayed_tls_endpoint(Path(tmp)) as (url, proxy):
        for rep in range(reps):
            names = list(contenders)
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                call, close = contenders[name](url)
                try:
                    call(prompt)  # warm-up: imports, first connection (not counted)
                    proxy.reset()
                    latencies = []
                    for _ in range(calls):
                        started = time.perf_counter()
                        if call(prompt) != prompt:
                            raise RuntimeError(f"{name}: wrong reply")
                        latencies.append(time.perf_counter() - started)
                    counted = proxy.stats()
                finally:
                    close()
                p50[name].append(percentile(latencies, 50) * 1000)
                trips[name].append((counted.turns + counted.connections) / calls)
                connections[name].append(counted.connections / calls)
    result = BenchResult(
        key="network_delay",
        title="2. Connection reuse under 20 ms round trips (TLS)",
        setup=(
            f"Sequential `invoke` of a 12-word prompt, {calls} calls per repetition after one "
            f"warm-up call, through a loopback proxy holding every chunk {DELAY * 1000:.0f} ms "
            f"each way (RTT {RTT * 1000:.0f} ms) to the promptwire app over TLS (self-signed "
            "certificate made at run time). Round trips per call are counted by the proxy: new "
            "connections (TCP handshake) plus client turns (TLS handshake flights and requests)."
        ),
        quick=quick,
    )
    for name in contenders:
        result.measurements += [
            Measurement(name, "p50 latency", "ms", p50[name]),
            Measurement(name, "round trips per call", "RTT", trips[name]),
            Measurement(name, "new connections per call", "", connections[name]),
        ]
    pw, raw, community = (p50[n] for n in contenders)
    result.ratios = [
        Ratio(
            "promptwire p50 latency / raw httpx",
            ratios(pw, raw),
            target=1.2,
            op="<=",
            note="same repetition",
        ),
        Ratio(
            "langchain_community Modal p50 latency / promptwire",
            ratios(community, pw),
            note="how much longer each call takes with the community class",
        ),
    ]
    result.notes.append(
        "The community class calls `requests.post` without a session, so every call opens a new "
        "TCP connection and does a new TLS handshake."
    )
    return result


def main() -> None:
    args = parse_args(__doc__ or "")
    started = time.perf_counter()
    finish(run(args.quick), started, args.json)


if __name__ == "__main__":
    main()
