"""METEOR's paraphrase index is built once into the harness cache (about 180 MB): a build killed part-way (kill -9,
a job's time limit) is never used, and what it left is removed by the next lexical judge to start, not kept forever
beside the finished index."""

from __future__ import annotations

import gzip
import subprocess
import sys

from harness.judges.meteor_paraphrase import INDEX_VERSION, load_index
from harness.processes import temp_tag


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_what_a_killed_index_build_left_is_removed_and_a_running_build_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    table = tmp_path / "paraphrase-en.gz"
    with gzip.open(table, "wb") as fh:
        fh.write(b"0.5\nbig\nlarge\n0.25\nsmall dog\nlittle dog\n")
    parent = tmp_path / "cache" / "meteor-paraphrase"
    parent.mkdir(parents=True)
    host = temp_tag().split(".")[0]
    killed = parent / f".build.{host}.{dead_pid()}.k1ll3d"  # a build killed part-way
    killed.mkdir()
    (killed / "tokens.npy").write_bytes(bytes(1 << 16))
    running = parent / f".build.{temp_tag()}.runn1ng"  # one still building (this process stands for it)
    running.mkdir()
    index = load_index(table)
    assert index is not None and index.entries == 2
    assert not killed.exists() and running.is_dir()
    assert sorted(p.name for p in parent.iterdir() if not p.name.startswith(".")) == [
        f"v{INDEX_VERSION}-{table.stat().st_size}-{table.stat().st_mtime_ns}"]
    killed.mkdir()  # killed while another process finished the index: the next judge to start removes it
    assert load_index(table) is not None and not killed.exists()


def test_the_index_is_readable_by_the_other_users_of_a_shared_cache(tmp_path, monkeypatch):
    """The index folder came out of mkdtemp with mode 0700: a colleague sharing the harness cache could not read it
    (and could not build it either, the folder being there)."""
    import stat

    from harness.io import NEW_DIR_MODE, NEW_FILE_MODE  # the modes under this process's umask

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    table = tmp_path / "paraphrase-en.gz"
    with gzip.open(table, "wb") as fh:
        fh.write(b"0.5\nbig\nlarge\n")
    assert load_index(table) is not None
    (folder,) = [p for p in (tmp_path / "cache" / "meteor-paraphrase").iterdir() if not p.name.startswith(".")]
    assert NEW_DIR_MODE & 0o055 and stat.S_IMODE(folder.stat().st_mode) == NEW_DIR_MODE
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {NEW_FILE_MODE}
