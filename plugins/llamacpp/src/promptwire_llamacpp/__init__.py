"""promptwire backend ``llamacpp``: any GGUF model served by llama.cpp."""
