"""What the chat-client tests hand a model: a structured-output schema and a tool function."""

from __future__ import annotations

from pydantic import BaseModel


class Person(BaseModel):
    """Someone."""

    name: str
    age: int


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"
