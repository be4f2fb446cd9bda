"""User-facing errors. `BadInput` means the user can fix it: the CLI prints its one line and exits 2."""
from __future__ import annotations

import reprlib
from typing import Any

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 120, 120
_REPR.maxtuple = _REPR.maxlist = _REPR.maxdict = _REPR.maxset = 6
_REPR.repr_int = lambda x, level: show(x) if x.bit_length() > 64 else repr(x)  # type: ignore[method-assign]


class BadInput(ValueError):
    """Bad input (unknown name, missing file, impossible budget, malformed config).

    The message is one line that names what is wrong and how to fix it.
    """


class RunFailure(RuntimeError):
    """A failure while running (exit status 1), e.g. a candidate evaluation that kept failing."""


def show(value: Any, limit: int = 200) -> str:
    """`repr(value)` as an error message may print it: at most `limit` characters, and never the
    thousands of digits of a huge integer (whose repr Python refuses past 4,300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"{'-' if value < 0 else ''}an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
