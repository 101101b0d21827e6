"""The dataset fingerprint changes whenever the data a score depends on changes, labels included.

A copy of VQA-RAD (official layout, written from phantom cases) whose answer types were relabelled must not
resume the old run and print its stale open/closed numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from format_writers import cases, write_vqa_rad_official

from harness.plugin_manager import tasks
from harness.task import Task

DATA_FILE = "VQA_RAD Dataset Public.json"


def fingerprint(data_dir: Path) -> str:
    return Task(tasks().get("vqa-rad"), data_dir=data_dir).fingerprint()


def relabel(src: Path, dst: Path, edit) -> None:
    """A copy of `src` (images linked) whose annotation records pass through `edit`."""
    dst.mkdir()
    (dst / "VQA_RAD Image Folder").symlink_to(src / "VQA_RAD Image Folder")
    records = json.loads((src / DATA_FILE).read_text())
    (dst / DATA_FILE).write_text(json.dumps([edit(dict(r)) for r in records]))


def test_labels_enter_the_fingerprint_and_the_run_id(tmp_path):
    original = tmp_path / "original"
    write_vqa_rad_official(original, cases(4, seed=7))
    flip = {"CLOSED": "OPEN", "OPEN": "CLOSED"}

    def open_to_closed(rec: dict) -> dict:
        if str(rec["phrase_type"]).startswith("test") and rec["answer_type"].strip() == "OPEN":
            rec["answer_type"] = flip[rec["answer_type"].strip()]
        return rec

    relabel(original, tmp_path / "relabelled", open_to_closed)
    relabel(original, tmp_path / "organs", lambda r: {**r, "image_organ": "ABD"})
    relabel(original, tmp_path / "same", lambda r: r)
    base = fingerprint(original)
    assert fingerprint(tmp_path / "same") == base  # the same data elsewhere: the same fingerprint
    assert fingerprint(tmp_path / "relabelled") != base
    assert fingerprint(tmp_path / "organs") != base  # a breakdown field changes a reported number too

    def run(data_dir: Path) -> dict:
        proc = subprocess.run([sys.executable, "-m", "harness", "run", "--model", "prior", "--task", "vqa-rad",
                               "--data-dir", str(data_dir), "--judge", "exact", "--runs-dir", str(tmp_path / "runs"),
                               "--no-progress"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        out = sorted((tmp_path / "runs").glob("*/results.json"), key=lambda p: p.stat().st_mtime)[-1]
        return json.loads(out.read_text())

    before, after = run(original), run(tmp_path / "relabelled")
    assert after["run_id"] != before["run_id"]  # a new run, not the old one resumed
    assert after["task"]["fingerprint"] == fingerprint(tmp_path / "relabelled")

    def closed_n(results: dict) -> int:
        return results["judges"][0]["breakdowns"]["answer_type"]["CLOSED"]["accuracy"]["n"]

    n_open = sum(1 for r in json.loads((original / DATA_FILE).read_text())
                 if str(r["phrase_type"]).startswith("test") and r["answer_type"].strip() == "OPEN")
    assert n_open > 0 and closed_n(after) == closed_n(before) + n_open


def test_an_adapters_hash_reads_only_what_loading_reads(tmp_path):
    """Every file of the folder was hashed: editing the adapter's model card (README.md, which PEFT writes), a
    .DS_Store, training logs or kept checkpoints made another run id (and re-generated everything)."""
    from harness.fingerprint import adapter_hash

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    first = adapter_hash(adapter)
    (adapter / "README.md").write_text("# my model card, edited")
    (adapter / ".DS_Store").write_bytes(b"\0")
    (adapter / "checkpoints" / "step-100").mkdir(parents=True)
    (adapter / "checkpoints" / "step-100" / "adapter_model.safetensors").write_bytes(b"older weights")
    (adapter / "manifest.json").write_text("{}")
    assert adapter_hash(adapter) == first and first.startswith("files-sha256:")
    (adapter / "adapter_model.safetensors").write_bytes(b"other weights")
    second = adapter_hash(adapter)
    (adapter / "adapter_config.json").write_text('{"r": 16}')
    third = adapter_hash(adapter)
    (adapter / "projection.safetensors").write_bytes(b"pefomed projection")
    assert len({first, second, third, adapter_hash(adapter)}) == 4
