"""Atomic file output, safe loading and locked output directories: a killed command never leaves a
half-written file, and two commands never write the same directory at once."""
from __future__ import annotations

import functools
import inspect
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

try:
    import fcntl
except ImportError:  # Windows: directories are not locked
    fcntl = None  # type: ignore[assignment]

import yaml

from rcnas.errors import BadInput


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` then rename the temporary file over `path` (same directory, atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def exclusive(directory: str | Path) -> Iterator[None]:
    """Hold `directory/.lock` while the block runs, so a second process writing the same directory (a
    second command, or a worker left over from a killed comparison) fails at once instead of
    interleaving its writes with ours. The OS drops the lock when its holder dies, however it dies,
    so a lock is never stale."""
    directory = Path(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / ".lock"
    try:
        if fcntl is None:
            yield
            return
        with open(lock, "a+", encoding="utf-8") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise BadInput(f"{directory} is in use by {holder}; wait for it to end or stop it, "
                               "or write to another --out") from None
            f.seek(0)
            f.truncate()
            f.write(f"rcnas pid {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
            yield  # closing the file releases the lock
    finally:
        if created and {p.name for p in directory.iterdir()} <= {lock.name}:  # failed before any work
            lock.unlink(missing_ok=True)
            directory.rmdir()


F = TypeVar("F", bound=Callable[..., Any])


def exclusive_out(fn: F) -> F:
    """Run `fn` holding the lock of its `out` directory argument (none when `out` is None)."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        out = bound.arguments["out"]
        with exclusive(out) if out is not None else nullcontext():
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_yaml(path: str | Path, obj: Any) -> Path:
    return write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_yaml(path: str | Path) -> Any:
    """Read YAML with the safe loader; a missing or malformed file is a `BadInput`."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"file not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BadInput(f"{path} is not a UTF-8 text file; save the YAML as UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        if isinstance(e, yaml.constructor.ConstructorError):  # e.g. !!python/object tags
            raise BadInput(f"{path} is not plain YAML{where}: {e.problem}; "
                           "remove the tag, only plain mappings, lists and scalars are read") from None
        raise BadInput(f"{path} is not valid YAML{where}: fix the syntax") from None


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BadInput(f"{path} is not a UTF-8 JSON file; delete it or restore it") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{path} is not valid JSON (line {e.lineno}); delete it or restore it") from None
