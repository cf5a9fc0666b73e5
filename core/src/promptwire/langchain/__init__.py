"""The LangChain models: ``PromptwireLLM`` (``llm``), ``ChatPromptwire`` (``chat``) and ``Modal``
(``compat``, the drop-in for ``langchain_community.llms.Modal``), beside the settings and client
they share (``_endpoint_model``), the messages' translation (``_chat_messages``) and the stop guard
(``_stop_guard``). Import them from ``promptwire``; this package imports none of its modules, so
``PromptwireLLM`` alone does not load the chat model's imports."""

__all__: list[str] = []
