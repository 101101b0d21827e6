"""File writing that never loses work: atomic replace for documents, fsync'd appends for JSONL streams (the lock
that keeps two harness processes from changing one folder at once: folder_lock.py).

Atomic writes keep the mode of the file they replace (a new file gets the usual mode under the umask, not
mkstemp's private 0600), so a shared results folder or leaderboard stays readable to others. Reading a JSON
document a user may have edited (read_json_object) gives a one-line error naming the file; so does a user's
file that is not UTF-8 text (read_user_text, read_jsonl).
"""

from __future__ import annotations

import codecs
import errno
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from harness.errors import UserError, not_utf8


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


NEW_FILE_MODE = 0o666 & ~_umask()  # read once at import, in the main thread (umask is process-wide)
NEW_DIR_MODE = NEW_FILE_MODE | ((NEW_FILE_MODE & 0o444) >> 2)  # a folder: searchable wherever readable


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    if path.is_dir():  # os.replace would fail naming the temporary file, not the path the user gave
        raise IsADirectoryError(errno.EISDIR, "is a directory, expected a file path", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = NEW_FILE_MODE
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise


def make_readable(folder: Path) -> None:
    """Give `folder` (from mkdtemp: 0700) and everything in it the modes of a new file or folder under the umask:
    safetensors writes its files 0600, which a vLLM server or a colleague running as another user cannot read."""
    for path in [Path(folder), *Path(folder).rglob("*")]:
        os.chmod(path, NEW_DIR_MODE if path.is_dir() else NEW_FILE_MODE)


def _naming(exc: OSError, path: Path) -> OSError:
    """`exc` as it concerns `path`, the file the caller asked for, not the temporary file beside it (the CLI's
    one-line error names `filename`)."""
    if exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror, str(path))


def strict_json(obj: Any, path: Path, **options: Any) -> str:
    """`obj` as standard JSON text for the file `path`: a NaN or infinity (which json.dumps would write as the
    non-standard `NaN`, unreadable by other tools) is a one-line error naming the file and where the value is."""
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, **options)
    except ValueError:
        where, value = non_finite(obj, "") or ("?", "NaN")
        raise UserError(f"{path}: not written: the value at '{where or '(top level)'}' is {value}, which JSON "
                        "cannot hold (expected a finite number or null; a file written by an older version, or a "
                        "plugin, holds it)") from None


def non_finite(obj: Any, where: str) -> tuple[str, float] | None:
    """(dotted path, value) of the first NaN or infinity in a JSON-like value."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where, obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found = non_finite(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


class RepeatedKey(ValueError):
    """A JSON object of a user's file names one key twice: the last value would silently win."""

    def __init__(self, key: str, first: Any, second: Any) -> None:
        def shown(value: Any) -> str:
            text = json.dumps(value, ensure_ascii=False)
            return text if len(text) <= 40 else text[:37] + "..."

        super().__init__(f"an object repeats the key {json.dumps(key, ensure_ascii=False)} (values {shown(first)} "
                         f"and {shown(second)}; the last would silently win): keep the one meant")


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise RepeatedKey(key, out[key], value)
        out[key] = value
    return out


def loads_user_json(text: str) -> Any:
    """json.loads for a file a user wrote or edited: an object that repeats a key raises RepeatedKey (a ValueError,
    not a JSONDecodeError) instead of keeping the last value (a hand edit or merge slip that changes a label)."""
    return json.loads(text, object_pairs_hook=_no_repeated_keys)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, strict_json(data, path, indent=2, sort_keys=False) + "\n")


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object (a manifest, an adapter_config.json); a one-line error naming the
    file when it is unreadable, not JSON, or not an object."""
    try:
        data = loads_user_json(read_user_text(path))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RepeatedKey as exc:
        raise UserError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def read_user_text(path: Path) -> str:
    """The text of a file a user wrote or edited (a byte-order mark dropped); one that is not UTF-8 is a one-line
    error naming the file, the line and the first bad byte. OSError (no such file) is left to the caller."""
    return decode_user_bytes(Path(path).read_bytes(), path)


def decode_user_bytes(raw: bytes, path: Path, *, line: int = 1, offset: int = 0, where: str | None = None,
                      advice: str = "save it as UTF-8") -> str:
    """`raw`, the bytes of the file `path` from its line `line` and byte `offset` on, as text (a byte-order mark at
    the start of the file dropped); bytes that are not UTF-8 are a one-line error naming the file (or `where`),
    the line and the offset of the first bad byte in the file."""
    bom = len(codecs.BOM_UTF8) if offset == 0 and raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        line += raw.count(b"\n", 0, bom + exc.start)
        raise not_utf8(where or f"{path}:{line}", exc, offset=offset + bom, advice=advice) from None


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(strict_json(r, path) + "\n" for r in rows))


def append_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append whole lines and fsync, so a kill leaves at most one partial trailing line."""
    blob = "".join(strict_json(r, path) + "\n" for r in rows)
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:  # a full disk: one line naming the file (a torn line left is cut off by the next run)
        raise _naming(exc, path) from None


def read_jsonl(path: Path, *, repair_tail: bool = False, skip_torn_tail: bool = False,
               check: Callable[[dict[str, Any]], str | None] | None = None, hint: str = "") -> list[dict[str, Any]]:
    """Read a JSONL file. With `repair_tail`, a torn last line (from a kill mid-write) is cut off the file;
    with `skip_torn_tail` it is only left out (for a reader that does not own the file).

    Any other malformed line is a user error naming the file and line (and `hint`: how to recover), and so is a
    row for which `check` returns a problem ("missing field 'id'").
    """
    path = Path(path)
    rows: list[dict[str, Any]] = []
    with open(path, "rb") as fh:
        raw = fh.read()
    good_end = 0
    lines = raw.split(b"\n")
    for lineno, line in enumerate(lines, start=1):
        is_last = lineno == len(lines)
        line_start = good_end  # every line before this one was good (a bad one raises)
        if not line.strip():
            good_end += len(line) + (0 if is_last else 1)
            continue
        if (repair_tail or skip_torn_tail) and is_last:
            # A last line without its newline was cut mid-write (or is being written): leave it out; the owner
            # (repair_tail) cuts it off, and its sample is redone.
            if repair_tail:
                with open(path, "r+b") as fh:
                    fh.truncate(good_end)
            break
        try:
            row = loads_user_json(decode_user_bytes(line, path, line=lineno, offset=line_start))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg}){hint}") from None
        except RepeatedKey as exc:
            raise UserError(f"{path}:{lineno}: {exc}{hint}") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}{hint}")
        problem = check(row) if check is not None else None
        if problem:
            raise UserError(f"{path}:{lineno}: {problem}")
        rows.append(row)
        good_end += len(line) + (0 if is_last else 1)
    return rows


def jsonl_objects(lines: Iterable[str], path: Path, holds: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a user's JSONL file. A line that is not a JSON object is a
    one-line error naming the file and line; `holds` says what an object should hold ("id, answer, prediction")."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = loads_user_json(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        except RepeatedKey as exc:
            raise UserError(f"{path}:{lineno}: {exc}") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object with {holds}")
        if (where := lone_surrogate(row)) is not None:
            raise UserError(f"{path}:{lineno}: field '{where}' holds {SURROGATE_HINT}")
        yield lineno, row


def lone_surrogate(value: Any, where: str = "") -> str | None:
    """Where in `value` (a JSON document) a string holds a lone surrogate ("\\udc80" escaped in the JSON: not text,
    and nothing can write or hash it as UTF-8), as "field 'answer'" or "records[3].question"; None when none does."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "a text"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        inner = (f"{where}.{key}" if where else key) if isinstance(key, str) else f"{where}[{key}]"
        found = lone_surrogate(item, inner)
        if found is not None:
            return found
    return None


SURROGATE_HINT = "a lone surrogate escape (\\ud800-\\udfff), which is not text; write the file as UTF-8 text"


def iter_batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
