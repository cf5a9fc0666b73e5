"""Compatible both ways with langchain_community.llms.Modal, and the guide's code runs as is."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from langchain_core.prompts import PromptTemplate
from pydantic import BaseModel

from tests.support.servers import serve_asgi

QUESTION = "What NFL team won the Super Bowl in the year Justin Beiber was born?"
TEMPLATE = """Question: {question}

Answer: Let's think step by step."""


class Request(BaseModel):
    prompt: str


def guide_endpoint() -> FastAPI:
    """The LangChain guide's dummy endpoint, as a plain FastAPI app (no promptwire in it)."""
    web_app = FastAPI()

    @web_app.post("/")
    def web(request: Request) -> dict[str, str]:
        _ = request  # ignore input
        return {"prompt": "hello world"}

    return web_app


@pytest.fixture(scope="module")
def guide_url() -> Iterator[str]:
    with serve_asgi(guide_endpoint()) as server:
        yield server.url


def run_the_guide(endpoint_url: str) -> str:
    """The guide's code, with only ``from promptwire import Modal`` changed. (``LLMChain`` now
    lives in ``langchain_classic``; langchain 1.x removed ``langchain.chains``.)"""
    from langchain_classic.chains import LLMChain
    from promptwire import Modal

    prompt = PromptTemplate.from_template(TEMPLATE)
    llm = Modal(endpoint_url=endpoint_url)
    llm_chain = LLMChain(prompt=prompt, llm=llm)
    return llm_chain.run(QUESTION)


def test_guide_code_against_promptwire_serve(dummy_url: str) -> None:
    assert run_the_guide(dummy_url) == "hello world"


def test_guide_code_against_the_guide_fastapi_endpoint(guide_url: str) -> None:
    assert run_the_guide(guide_url) == "hello world"


def test_streaming_from_a_server_that_does_not_stream(guide_url: str) -> None:
    from promptwire import Modal

    assert list(Modal(endpoint_url=guide_url).stream("hi")) == ["hello world", ""]


def test_langchain_community_modal_against_promptwire_serve(echo_url: str) -> None:
    from langchain_community.llms import Modal as CommunityModal

    llm = CommunityModal()
    llm.endpoint_url = echo_url  # its constructor drops endpoint_url into model_kwargs
    assert llm.invoke("Identify yourself, bot!") == "Identify yourself, bot!"
    chain = PromptTemplate.from_template(TEMPLATE) | llm
    assert chain.invoke({"question": QUESTION}) == TEMPLATE.format(question=QUESTION)
