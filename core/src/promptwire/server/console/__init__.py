"""The console: ``GET /console``, a page to try the model and watch the server (``_routes``),
and the figures it charts, ``GET /console/stats`` (``_stats``). Its files are under ``static/``;
the chart library, uPlot, is vendored from npm under ``static/vendor/uplot/``."""

from promptwire.server.console._routes import (
    CONSOLE_PATH,
    CONTENT_SECURITY_POLICY,
    SHELL_PATHS,
    STATS_PATH,
    add_console_routes,
)

__all__ = [
    "CONSOLE_PATH",
    "CONTENT_SECURITY_POLICY",
    "SHELL_PATHS",
    "STATS_PATH",
    "add_console_routes",
]
