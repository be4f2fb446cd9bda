"""Atomic file output and safe loading: a killed command never leaves a half-written file."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
