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
