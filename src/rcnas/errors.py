"""User-facing errors. `BadInput` means the user can fix it: the CLI prints its one line and exits 2."""
from __future__ import annotations


class BadInput(ValueError):
    """Bad input (unknown name, missing file, impossible budget, malformed config).

    The message is one line that names what is wrong and how to fix it.
    """


class RunFailure(RuntimeError):
    """A failure while running (exit status 1), e.g. a candidate evaluation that kept failing."""
