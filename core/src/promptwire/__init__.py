"""promptwire: call your own LLM behind a prompt endpoint from LangChain."""
