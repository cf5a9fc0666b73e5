"""An engine in a process of its own, supervised by the server (``ProcessEngine``).

Native code (llama.cpp, exllamav2) can abort the process it runs in, and a slow native step can
hold the GIL for seconds. Run in a child process, a crash fails only the requests in flight (a
typed ``EngineProcessDied``), the server restarts the engine while ``/health`` says so, and no
engine step, however slow, stalls the HTTP side.
"""

from promptwire.engine.process._child_handle import EngineProcessDied
from promptwire.engine.process._engine import ProcessEngine, RestartPolicy

__all__ = ["EngineProcessDied", "ProcessEngine", "RestartPolicy"]
