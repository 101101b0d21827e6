"""Content hashes of local model checkpoints (every byte of the files loading reads), computed once per file version.

A local checkpoint enters the run id by its content: weights merged or edited in place and saved back give another
run. Only the folder's own files that `from_pretrained` reads count (configs, weights and their index, tokenizer,
processor and chat-template files: not a model card, logs or a trainer's `checkpoint-*/` subfolders beside them).
Hashing a 7B model reads ~14 GB, so a large file's sha256 is kept in the harness cache (and in this process) under
what the file system says of that version of it (resolved path, size, modification and change times in ns, inode):
a file written again, even with its old modification time restored, has another change time and is read again.
Processes sharing a cache (array jobs hashing their checkpoints at once) add their digests one at a time, under a
lock beside the file (`folder_lock.exclusive`), so none writes over what another added since it read the file.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from harness.folder_lock import exclusive
from harness.io import atomic_write_json
from harness.paths import cache_dir

CACHE_FILE = "file-digests.json"
CACHE_LOCK = f".{CACHE_FILE}.lock"
KEPT_ENTRIES = 5000  # the newest ones; an entry is ~150 bytes
ANNOUNCE_BYTES = 1 << 30  # say so on stderr when this much has to be read
CACHED_FROM_BYTES = 64 << 20  # smaller files are read every time (cheap, and two writes within one tick of the
#                               file system's clock could leave one size and time)
#: what loading a checkpoint reads (weights, configs, tokenizer and processor files, remote code)
LOADED_SUFFIXES = (".json", ".safetensors", ".bin", ".pt", ".pth", ".model", ".jinja", ".txt", ".tiktoken", ".py")

# files with those suffixes that loading never reads: harness finetune's record of a full-model output (its times
# differ between two trainings of the same weights), and what transformers' Trainer leaves beside a checkpoint
NOT_LOADED = ("manifest.json", "trainer_state.json", "training_args.bin", "all_results.json", "train_results.json",
              "eval_results.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt")

_memo: dict[str, str] = {}  # this process's digests by file version: a run asks more than once
_unwritable_said = False


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


def _remember(found: dict[str, str]) -> None:
    """Add `found` to the cache file, merged with what other processes wrote since it was read."""
    global _unwritable_said
    store = cache_dir() / CACHE_FILE
    try:
        with exclusive(store.parent, CACHE_LOCK, owned=(CACHE_FILE,), what=f"the checkpoint digests {store}"):
            merged = {**_read_cache(store), **found}
            atomic_write_json(store, dict(list(merged.items())[-KEPT_ENTRIES:]))
    except OSError as exc:
        if not _unwritable_said:
            _unwritable_said = True
            print(f"note: cannot keep checkpoint digests in {store} ({exc.strerror or exc}): large checkpoint "
                  "files are read again by each harness command", file=sys.stderr)


def file_digests(files: list[Path], what: Path) -> dict[Path, str]:
    """The sha256 (hex) of each file; a large file is read only for a version of it not seen before. `what` names
    the whole in the note said when much has to be read."""
    sizes = {path: path.stat().st_size for path in files}
    keys = {path: _version_key(path) for path in files if sizes[path] >= CACHED_FROM_BYTES}
    if any(key not in _memo for key in keys.values()):
        _memo.update(_read_cache(cache_dir() / CACHE_FILE))
    unread = [path for path in files if keys.get(path) not in _memo]
    if sum(sizes[path] for path in unread) >= ANNOUNCE_BYTES:
        print(f"hashing {what} ({sum(sizes[p] for p in unread) / 2**30:.1f} GiB, once per version of its files: "
              "the run id names its content)", file=sys.stderr)
    digests = {path: _memo[keys[path]] for path in files if path not in unread}
    found: dict[str, str] = {}
    for path in unread:
        digests[path] = _sha256(path)
        if path in keys and _version_key(path) == keys[path]:  # not written to while it was read
            found[keys[path]] = digests[path]
    if found:
        _memo.update(found)
        _remember(found)
    return digests


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of one file's bytes, cached per version of the file."""
    return file_digests([path], path)[path]


def checkpoint_files(folder: Path, leave_out: tuple[str, ...] = NOT_LOADED) -> list[Path]:
    """The files of a checkpoint folder that loading reads (its own, not hidden, with a LOADED_SUFFIXES suffix, not
    one of `leave_out`)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in LOADED_SUFFIXES and p.name not in leave_out)


def folder_fingerprint(folder: Path, leave_out: tuple[str, ...] = NOT_LOADED) -> str:
    """`content-sha256:` over the names and contents of the checkpoint files of `folder` (`leave_out=()`: as the
    harness of 2026-11-24 named it, counting NOT_LOADED files too)."""
    files = checkpoint_files(folder, leave_out)
    digests = file_digests(files, folder)
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{digests[path]}\0".encode())
    return "content-sha256:" + digest.hexdigest()[:16]
