"""The console guide's screenshots (docs/images/console*.png), taken from real servers by the
same Playwright and system chromium as the browser tests:

    uv run python docs/screenshots.py

``console.png``: SmolLM2 on the llama.cpp backend (the dummy engine without it) under a little
load from four threads, its charts after about a minute, and a question answered in "Try it".
``console-key.png``: a server with an API key, as the page first shows it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

IMAGES = Path(__file__).resolve().parent / "images"
LOAD_SECONDS = 60
PROMPTS = [
    "Which city is the capital of France?",
    "Name three colours.",
    "What is two plus two?",
    "Write one sentence about the sea.",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serve(*args: str, env: dict[str, str]) -> Iterator[str]:
    port = _free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTWIRE_")}
    command = [sys.executable, "-c", "from promptwire.cli import main; main()", "serve"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning", *args],
        env={**child_env, **env},
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _load(url: str, stop: threading.Event, index: int) -> None:
    with httpx.Client(timeout=120) as client:
        turn = index
        while not stop.is_set():
            prompt = PROMPTS[turn % len(PROMPTS)]
            turn += 1
            body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 48}
            client.post(url + "v1/chat/completions", json=body)


def main() -> None:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise SystemExit("no chromium: apt-get install chromium")
    IMAGES.mkdir(exist_ok=True)
    if importlib.util.find_spec("promptwire_llamacpp") is not None:
        model = ["--backend", "llamacpp"]
        env = {"PROMPTWIRE_LLAMACPP__PARALLEL": "4", "PROMPTWIRE_LLAMACPP__THREADS": "2"}
    else:
        model = ["--backend", "modal_dummy"]
        env = {"PROMPTWIRE_MODAL_DUMMY__TOKENS_PER_SECOND": "20"}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        page = browser.new_page(viewport={"width": 1280, "height": 940})
        page.set_default_timeout(120_000)
        with _serve(*model, env=env) as url:
            page.goto(url + "console")
            stop = threading.Event()
            threads = [threading.Thread(target=_load, args=(url, stop, i)) for i in range(4)]
            for thread in threads:
                thread.start()
            try:
                page.wait_for_timeout(LOAD_SECONDS * 1000)
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
            page.get_by_label("System message").fill("Answer in one sentence.")
            page.get_by_label("Prompt").fill(PROMPTS[0])
            page.get_by_label("Temperature").fill("0")
            page.get_by_label("Max tokens").fill("64")
            page.get_by_role("button", name="Send").click()
            page.wait_for_function(
                "() => /completion tokens/.test(document.getElementById('reply-stats').textContent)"
            )
            page.wait_for_timeout(3000)
            page.screenshot(path=IMAGES / "console.png", full_page=True)
        with _serve("--backend", "modal_dummy", "--api-key", "secret-key", env={}) as url:
            page.goto(url + "console")
            page.get_by_label("API key").wait_for()
            page.wait_for_timeout(1500)
            page.screenshot(
                path=IMAGES / "console-key.png", clip={"x": 0, "y": 0, "width": 1280, "height": 520}
            )
        browser.close()
    for name in ("console.png", "console-key.png"):
        print(IMAGES / name, (IMAGES / name).stat().st_size // 1024, "KiB")


if __name__ == "__main__":
    main()
