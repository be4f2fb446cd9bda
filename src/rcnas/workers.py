"""Worker processes that end with the process that started them.

A pool's worker stays busy for minutes to hours (a comparison's worker runs a whole `rcnas run`). When
its parent is killed (SIGKILL, `kill PID`, a scheduler's preemption) nothing tells the worker: it would
go on writing its run directory unattended, beside the rerun that resumes it. So each worker watches
its parent and exits once it is gone; what it leaves resumes (outputs are atomic, runs checkpoint).
"""
from __future__ import annotations

import os
import threading
import time


def exit_with_parent(parent: int, poll_seconds: float = 1.0) -> None:
    """Pool initializer: end this process (status 1) as soon as `parent` is no longer its parent."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
