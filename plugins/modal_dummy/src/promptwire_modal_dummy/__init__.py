"""promptwire backend: the hello-world endpoint."""
