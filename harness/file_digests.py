"""Content hashes of local model checkpoints (every byte of every file), computed once per file version.

A local checkpoint enters the run id by its content: weights merged or edited in place and saved back give another
run. Hashing a 7B model reads ~14 GB, so each file's sha256 is kept in the harness cache under what the file
system says of that version of it (resolved path, size, modification and change times in ns, inode): a file
written again (even with its old modification time restored) has another change time and is read again.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from harness.io import atomic_write_json
from harness.paths import cache_dir

CACHE_FILE = "file-digests.json"
KEPT_ENTRIES = 5000  # the newest ones; an entry is ~150 bytes
ANNOUNCE_BYTES = 1 << 30  # say so on stderr when this much has to be read
CACHED_FROM_BYTES = 64 << 20  # smaller files are read every time (cheap, and two writes within one tick of the
#                               file system's clock could leave one size and time)


def _version_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for piece in iter(lambda: fh.read(1 << 22), b""):
            digest.update(piece)
    return digest.hexdigest()


def _read_cache(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or damaged: recomputed
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def file_digests(files: list[Path], what: Path) -> dict[Path, str]:
    """The sha256 (hex) of each file; a large file is read only for a version of it not seen before. `what` names
    the whole in the note said when much has to be read."""
    store = cache_dir() / CACHE_FILE
    known = _read_cache(store)
    sizes = {path: path.stat().st_size for path in files}
    keys = {path: _version_key(path) for path in files if sizes[path] >= CACHED_FROM_BYTES}
    unread = [path for path in files if keys.get(path) not in known]
    if sum(sizes[path] for path in unread) >= ANNOUNCE_BYTES:
        print(f"hashing {what} ({sum(sizes[p] for p in unread) / 2**30:.1f} GiB, once per version of its files: "
              "the run id names its content)", file=sys.stderr)
    digests = {path: known[keys[path]] for path in files if path not in unread}
    for path in unread:
        digests[path] = _sha256(path)
        if path in keys:
            known[keys[path]] = digests[path]
    if any(path in keys for path in unread):
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(store, dict(list(known.items())[-KEPT_ENTRIES:]))
        except OSError:
            pass  # a read-only cache only costs the hashing again next time
    return digests


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of one file's bytes, cached per version of the file."""
    return file_digests([path], path)[path]


def folder_fingerprint(folder: Path) -> str:
    """`content-sha256:` over the relative names and contents of the folder's files (hidden ones left out)."""
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    digests = file_digests(files, folder)
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}\0{digests[path]}\0".encode())
    return "content-sha256:" + digest.hexdigest()[:16]
