"""promptwire backend: an ExLlamaV2 model."""
