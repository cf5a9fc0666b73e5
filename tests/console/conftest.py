"""Fixtures of the browser tier: one chromium per test module, a fresh context (its own
sessionStorage) per test, with what the page did recorded (``tests.support.browser``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import CHROMIUM, WAIT_MS, Tab


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    opened = Tab(page, context)
    page.on("console", lambda message: opened.messages.append((message.type, message.text)))
    page.on("pageerror", lambda error: opened.errors.append(str(error)))
    page.on("request", lambda request: opened.requests.append((request.url, request.headers)))
    try:
        yield opened
    finally:
        context.close()
