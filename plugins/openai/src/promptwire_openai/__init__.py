"""promptwire backend ``openai``: the LangChain models on any OpenAI-compatible server."""
