"""Atomic file output, safe loading and locked output directories: a killed command never leaves a
half-written file, and two commands never write the same directory at once."""
from __future__ import annotations

import math

import functools
import inspect
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import IO, Any, TypeVar

try:
    import fcntl
except ImportError:  # Windows: directories are not locked
    fcntl = None  # type: ignore[assignment]

import yaml

from rcnas.errors import BadInput

logger = logging.getLogger(__name__)


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


_held: set[Path] = set()  # the directories this process holds: a nested call on one of them goes on


@contextmanager
def exclusive(directory: str | Path, wait: bool = False) -> Iterator[None]:
    """Hold `directory/.lock` while the block runs, so a second process writing the same directory (a
    second command, or a worker left over from a killed comparison) fails at once instead of
    interleaving its writes with ours (`wait`: it waits its turn instead, for a shared cache entry
    that the first writer fills and the next one reads). The OS drops the lock when its holder dies,
    however it dies, so a lock is never stale. A directory this call created and left empty is
    removed again."""
    directory = Path(directory)
    key = directory.resolve()
    created = not directory.exists()
    f = None if key in _held or fcntl is None else _lock(directory, wait)  # Windows: no lock
    directory.mkdir(parents=True, exist_ok=True)
    if f is None:
        yield
        return
    _held.add(key)
    _remove_stale_temporaries(directory)
    try:
        yield
    finally:
        _held.discard(key)
        # failed before any work: leave nothing behind. Still holding the lock here, so no other
        # process can be between taking this file and finding it gone (see _lock)
        if created and [p.name for p in directory.iterdir()] == [".lock"]:
            (directory / ".lock").unlink()
            with suppress(OSError):
                directory.rmdir()
        f.close()


def _remove_stale_temporaries(directory: Path) -> None:
    """`atomic_write`'s temporaries (`.NAME.XXXXXXXX.tmp`) left by a writer killed mid-save: whoever
    holds the directory's lock is its only writer, so any found now are stale."""
    stale = [p for p in directory.rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        logger.info("removed %d stale temporary file(s) under %s", len(stale), directory)


def _lock(directory: Path, wait: bool = False) -> IO[str] | None:
    """`directory/.lock`, open and flock-ed; None (and a warning) where the file system cannot lock."""
    lock = directory / ".lock"
    while True:
        directory.mkdir(parents=True, exist_ok=True)
        try:
            f = open(lock, "a+", encoding="utf-8")  # noqa: SIM115 (held open as long as the lock)
        except FileNotFoundError:  # its holder removed the directory after a failed start: again
            continue
        try:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise BadInput(f"{directory} is in use by {holder}; wait for it to end or stop it, "
                           "or write to another --out") from None
        except OSError as e:  # e.g. a network file system without locks
            f.close()
            logger.warning("cannot lock %s (%s); going on without the lock", directory, e)
            return None
        try:
            current = os.stat(lock).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            f.seek(0)
            f.truncate()
            f.write(f"rcnas pid {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
            return f
        f.close()  # we locked a file its holder had just removed: take the new one


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


def json_safe(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None: strict JSON, which most parsers need
    (Python's json writes a bare NaN that JavaScript's, jq's and Go's refuse)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_yaml(path: str | Path, obj: Any) -> Path:
    return write_text(path, yaml.safe_dump(obj, sort_keys=False))


YAML_MAX_BYTES = 10 << 20     # configs, tasks and architectures are a few KB
YAML_MAX_NODES = 1_000_000    # values once every alias (*name) is expanded: "billion laughs" stop here
YAML_MAX_DEPTH = 64           # nesting: a config is a handful of levels deep


def _check_yaml_shape(text: str, path: Path) -> None:
    """Refuse, from the event stream alone (nothing built), YAML whose aliases expand to more values
    than any config holds, or whose nesting would exhaust the recursion of the loader and of our checks."""
    if len(text) > YAML_MAX_BYTES:
        raise BadInput(f"{path} is {len(text):,} characters; a YAML config is at most {YAML_MAX_BYTES:,}")
    sizes: dict[str, int] = {}      # anchor -> values it expands to
    open_: list[list] = [[None, 0]]  # [anchor, values so far] per open collection
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            open_.append([event.anchor, 1])
            if len(open_) > YAML_MAX_DEPTH:
                raise BadInput(f"{path} nests more than {YAML_MAX_DEPTH} levels deep; a config needs a few")
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, n = open_.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, n = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            anchor, n = None, sizes.get(event.anchor, 1)
        else:
            continue
        if anchor is not None:
            sizes[anchor] = n
        open_[-1][1] += n
        if open_[-1][1] > YAML_MAX_NODES:
            raise BadInput(f"{path} expands to more than {YAML_MAX_NODES:,} values through its aliases (*name); "
                           "write the values out instead")


def read_yaml(path: str | Path) -> Any:
    """Read YAML with the safe loader; a missing or malformed file is a `BadInput`."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        _check_yaml_shape(text, path)
        return yaml.safe_load(text)
    except UnicodeDecodeError:
        raise BadInput(f"{path} is not a UTF-8 text file; save the YAML as UTF-8 text") from None
    except (ValueError, OverflowError) as e:  # a number beyond what Python converts (4,300+ digits)
        if isinstance(e, BadInput):
            raise
        raise BadInput(f"{path} holds a number too long to read; write it with fewer digits") from None
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
