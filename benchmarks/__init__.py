"""promptwire's benchmarks: measured side by side, not tests (see __main__ for the command)."""
