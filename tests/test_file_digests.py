"""Local checkpoints enter run ids by the sha256 of every byte; large files' digests are kept per file version."""

from __future__ import annotations

import hashlib
import json
import os

from harness import file_digests
from harness.file_digests import folder_fingerprint


def test_every_byte_counts_and_a_large_file_is_read_once_per_version(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(file_digests, "CACHED_FROM_BYTES", 1 << 20)
    folder = tmp_path / "model"
    folder.mkdir()
    weights, config = folder / "model.safetensors", folder / "config.json"
    weights.write_bytes(bytes(3 << 20))
    config.write_text("{}")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "lock").write_text("left by a download")  # hidden: not the model
    first = folder_fingerprint(folder)
    cached = json.loads((tmp_path / "cache" / file_digests.CACHE_FILE).read_text())
    assert list(cached.values()) == [hashlib.sha256(bytes(3 << 20)).hexdigest()]  # the large file only

    reads, sha256 = [], file_digests._sha256
    monkeypatch.setattr(file_digests, "_sha256", lambda path: reads.append(path.name) or sha256(path))
    assert folder_fingerprint(folder) == first and reads == ["config.json"]  # the large one's from the cache
    stat = weights.stat()
    with open(weights, "r+b") as fh:  # one byte in the middle, the modification time put back
        fh.seek(3 << 19)
        fh.write(b"\x01")
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed = folder_fingerprint(folder)
    assert changed != first and reads[-2:] == ["config.json", "model.safetensors"]  # read again: a new version
    (folder / ".cache" / "lock").write_text("another")
    (folder / "README.md").write_text("an edited model card")
    (folder / "checkpoint-500").mkdir()  # a trainer's checkpoint kept beside the model: not loaded
    (folder / "checkpoint-500" / "optimizer.pt").write_bytes(bytes(1 << 20))
    assert folder_fingerprint(folder) == changed  # none of these is what loading reads
    # a full fine-tune's manifest.json (its times differ between two trainings of the same weights) and what
    # transformers' Trainer saves beside a checkpoint are not read by loading either
    (folder / "manifest.json").write_text('{"started": "2026-11-25T01:00:00+00:00"}')
    (folder / "trainer_state.json").write_text("{}")
    (folder / "training_args.bin").write_bytes(b"args")
    assert folder_fingerprint(folder) == changed
    (folder / "generation_config.json").write_text("{}")  # but a config loading reads counts
    assert folder_fingerprint(folder) != changed


def test_an_unwritable_cache_is_said_once_and_a_process_reads_a_file_version_once(tmp_path, monkeypatch, capsys):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "not-a-folder"))
    monkeypatch.setattr(file_digests, "CACHED_FROM_BYTES", 1 << 20)
    monkeypatch.setattr(file_digests, "_unwritable_said", False)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(bytes(2 << 20))
    reads, sha256 = [], file_digests._sha256
    monkeypatch.setattr(file_digests, "_sha256", lambda path: reads.append(path.name) or sha256(path))
    assert folder_fingerprint(folder) == folder_fingerprint(folder) == folder_fingerprint(folder)
    assert reads == ["model.safetensors"]  # a run asks for it several times
    assert capsys.readouterr().err.count("note: cannot keep checkpoint digests in") == 1


def test_two_processes_recording_digests_at_once_keep_both(tmp_path, monkeypatch):
    """Array jobs hashing their own checkpoints at once: each read the digest file, added its own and wrote it
    back, so the last writer dropped what the others added meanwhile (6 processes finishing together kept 2 of 6
    digests), and the next commands read those 14 GB checkpoints again. Here this test is a process that has read
    the file and is about to write it back when another one finishes hashing."""
    import subprocess
    import sys

    from harness.folder_lock import exclusive
    from harness.io import atomic_write_json

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    mine, other = tmp_path / "mine.safetensors", tmp_path / "other.safetensors"
    for path in (mine, other):
        with open(path, "wb") as fh:
            fh.truncate(file_digests.CACHED_FROM_BYTES)  # large enough to be kept (sparse: no disk used)
    store = tmp_path / "cache" / file_digests.CACHE_FILE
    with exclusive(store.parent, file_digests.CACHE_LOCK):
        read = file_digests._read_cache(store)
        hash_other = "import sys; from pathlib import Path; from harness.file_digests import file_sha256; " \
                     "file_sha256(Path(sys.argv[1]))"
        proc = subprocess.Popen([sys.executable, "-c", hash_other, str(other)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        said = proc.stderr.readline()  # its note that it waits, or "" once it has ended without waiting
        atomic_write_json(store, {**read, file_digests._version_key(mine): file_digests._sha256(mine)})
    assert proc.wait(timeout=60) == 0, said + proc.stderr.read()
    kept = json.loads(store.read_text())
    assert set(kept) == {file_digests._version_key(mine), file_digests._version_key(other)}
    assert f"is using the checkpoint digests {store}; waiting for it to finish" in said
