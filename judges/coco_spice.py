"""SPICE (optional, `--judge-arg spice=true`) with pycocoevalcap's `spice-1.0.jar`, run as its `Spice` class runs it.

SPICE parses sentences with Stanford CoreNLP 3.6.0, whose two jars pycocoevalcap downloads (about 400 MB) on first
use. The harness never downloads: when the jars are missing it says which files to put where.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from harness.errors import UserError
from harness.judges.coco_java import coco_dir
from harness.paths import cache_dir

CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
CORENLP_ZIP = "https://nlp.stanford.edu/software/stanford-corenlp-full-2015-12-09.zip"


def spice_dir() -> Path:
    """pycocoevalcap's spice folder, after checking that the CoreNLP jars SPICE needs are in its lib/."""
    folder = coco_dir() / "spice"
    lib = folder / "lib"
    missing = [name for name in CORENLP_JARS if not (lib / name).is_file()]
    if missing:
        raise UserError(
            f"SPICE needs the Stanford CoreNLP 3.6.0 jars {' and '.join(missing)} in {lib} (the harness does not "
            f"download them): take them from {CORENLP_ZIP} (folder stanford-corenlp-full-2015-12-09/) and copy "
            f"them there, or leave SPICE off"
        )
    return folder


def run_spice(java: str, references: list[str], predictions: list[str], workdir: Path) -> list[float | None]:
    """Per-sample SPICE F ('All'), None where SPICE gives no number (pycocoevalcap's NaN)."""
    folder = spice_dir()
    in_file, out_file = workdir / "spice-input.json", workdir / "spice-output.json"
    items = [{"image_id": i, "test": pred, "refs": [ref]} for i, (ref, pred) in enumerate(zip(references, predictions))]
    in_file.write_text(json.dumps(items, indent=2))
    spice_cache = cache_dir() / "spice-cache"
    spice_cache.mkdir(parents=True, exist_ok=True)
    cmd = [java, "-jar", "-Xmx8G", str(folder / "spice-1.0.jar"), str(in_file), "-cache", str(spice_cache),
           "-out", str(out_file), "-subset", "-silent"]
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise UserError(f"SPICE (Java) failed (exit {done.returncode}): {tail or 'no message'}")
    by_id = {item["image_id"]: item["scores"]["All"]["f"] for item in json.loads(out_file.read_text())}
    out: list[float | None] = []
    for i in range(len(items)):
        try:
            value = float(by_id[i])
        except (KeyError, TypeError, ValueError):
            value = math.nan
        out.append(None if math.isnan(value) else value)
    return out
