"""Files of a run folder: strict JSON, metrics.csv cells, atomic writes with fsync.

* ``summary.json`` and ``config.json`` are written atomically (temp file in the same folder,
  fsync, ``os.replace``): after a crash at any moment the file holds either the old or the new
  content, both valid JSON.
* Non-finite floats (NaN, +inf, -inf) are written as an EMPTY cell in metrics.csv and as JSON
  ``null`` in the JSON files, so nothing NaN ever looks like a result and every file is strict
  JSON / plain CSV.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import stat
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping


def now_iso() -> str:
    """Current UTC time, ISO 8601 with microseconds and ``+00:00``."""
    return datetime.now(timezone.utc).isoformat()


def jsonable(value: Any, where: str) -> Any:
    """A copy of ``value`` that ``json.dumps(allow_nan=False)`` accepts.

    Non-finite floats become None; tuples and sets become lists; numpy/torch scalars
    become Python numbers; paths become str. ``where`` names the value in the error
    raised (TypeError) for anything else.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be str, got {k!r} ({type(k).__name__})")
            out[k] = jsonable(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", 1) == 0:
        return jsonable(item(), where)
    raise TypeError(f"{where}: cannot store {type(value).__name__} {value!r} as JSON")


def dumps(value: Any, where: str, indent: int | None = None) -> str:
    return json.dumps(jsonable(value, where), allow_nan=False, indent=indent, ensure_ascii=False)


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename in it survives a power cut (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, replace.

    A crash at any moment leaves ``path`` with either its old or its new content. The
    temp file is named ``.<name>.<random>.tmp`` and removed when the write fails.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text (newlines kept as written)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def csv_cell(value: Any) -> str:
    """One metrics.csv cell: empty for None and non-finite floats, shortest repr for floats."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        f = float(value)
        return repr(f) if math.isfinite(f) else ""
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", 1) == 0:
        return csv_cell(item())
    raise TypeError(f"metrics value {value!r} of type {type(value).__name__} is not a number or a str")




#: The most a run's JSON file (config.json, summary.json, a --config file) may hold.
MAX_JSON_BYTES = 16 * 2 ** 20
#: The most metrics.csv may hold (1,000 epochs of 16 arms is about 3 MB).
MAX_METRICS_BYTES = 512 * 2 ** 20
MAX_EVENTS_BYTES = 64 * 2 ** 20  # events.jsonl: a line per peak, switch, divergence ... (a few KiB in practice)
MAX_JSON_DEPTH = 64  # nesting of a run file's JSON; what the project writes is 4 deep at most


class UnreadableFile(ValueError):
    """A file that is refused before it is read: a link, not a regular file, or too large."""


def read_bounded(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of the regular file `path`, refusing (UnreadableFile) a symbolic link (a run
    folder's file pointing elsewhere, e.g. at /etc/passwd), anything but a regular file (a device
    such as /dev/zero, a FIFO) and more than `limit` bytes. FileNotFoundError when it is missing."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if os.path.islink(path):
            raise UnreadableFile(f"{os.fspath(path)} is a symbolic link; it is not followed") from None
        raise exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(f"{os.fspath(path)} is not a regular file")
        if info.st_size > limit:
            raise UnreadableFile(f"{os.fspath(path)} holds {info.st_size} bytes, more than the {limit} allowed")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:  # grew while it was read
                raise UnreadableFile(f"{os.fspath(path)} holds more than the {limit} bytes allowed")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def parse_json(text: str, name: str):
    """(value, None) for JSON text, else (None, what is wrong), naming `name`. Nesting deeper
    than MAX_JSON_DEPTH is refused, so that nothing which later walks the value (an export, a
    page) meets a RecursionError."""
    try:
        value = json.loads(text)
    except RecursionError:
        return None, f"{name} is nested too deeply to be read"
    except ValueError as exc:
        return None, f"{name} is not valid JSON ({str(exc)[:200]})"
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        return None, f"{name} is nested too deeply to be read (more than {MAX_JSON_DEPTH} levels)"
    return value, None


def _depth_exceeds(value, limit: int) -> bool:
    """Whether lists and objects in `value` nest deeper than `limit` (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def read_json_object(path: Path) -> tuple[dict | None, str | None]:
    """(dict, None) for a readable JSON object file, else (None, what is wrong)."""
    try:
        text = read_bounded(path, MAX_JSON_BYTES).decode("utf-8")
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except UnreadableFile as exc:
        return None, f"{path.name} cannot be read: {str(exc).replace(os.fspath(path), 'it')}"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path.name} cannot be read ({exc.__class__.__name__}: {exc})"
    value, problem = parse_json(text, path.name)
    if problem:
        return None, problem
    if not isinstance(value, dict):
        return None, f"{path.name} does not hold a JSON object"
    return value, None


