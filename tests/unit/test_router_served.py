"""The member that served a call rides on the reply without changing anything else of it."""

from __future__ import annotations

from promptwire.client.wire import Reply
from promptwire.protocol import StreamDone
from promptwire.router._served import routed_done, routed_reply, served_by


def test_a_routed_reply_keeps_every_field_and_the_servers_extras() -> None:
    reply = Reply.model_validate(
        {
            "prompt": "hi",
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            "x_extra": [1],
        }
    )
    routed = routed_reply(reply, "http://a/")
    assert routed.model_dump(exclude={"endpoint"}) == reply.model_dump()
    assert routed.model_extra == {"x_extra": [1]}
    assert served_by(routed) == {"endpoint": "http://a/"} and served_by(reply) == {}


def test_a_routed_stream_end_keeps_its_fields() -> None:
    done = StreamDone.model_validate({"done": True, "finish_reason": "length"})
    routed = routed_done(done, "http://b/")
    assert routed.model_dump(exclude={"endpoint"}) == done.model_dump()
    assert served_by(routed) == {"endpoint": "http://b/"}
