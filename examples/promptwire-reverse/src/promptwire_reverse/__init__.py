"""promptwire backend ``reverse``: a worked example of a third-party plugin."""
