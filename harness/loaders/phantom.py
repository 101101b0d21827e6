"""Loader for the `phantom` format: synthetic cases from harness.phantom, generated once into the cache.

Source options (task YAML): `seed` (default 0), `n_train` (300), `n_test` (100). The train split is drawn
with generator seed 2*seed and the test split with 2*seed+1, so the two never share a case. Files go to
`cache_dir()/phantom/<hash of generator version, seed, n>/`: `images/<case_id>_<view>.png`, `cases.json`,
and last the marker `complete.json`; a folder without the marker (a killed generation) is generated again.
One process generates at a time (a lock file beside the marker, `folder_lock.exclusive`): another one that needs
the same cases waits, then finds them complete; only the lock holder removes temporary files, so it never deletes
those another process is still writing.
PNGs are written with stored (uncompressed) deflate blocks by our own encoder, so their bytes do not depend on
the zlib build of the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.folder_lock import exclusive
from harness.io import atomic_write_json, atomic_write_text
from harness.loaders.common import closed_label
from harness.paths import cache_dir
from harness.task_config import SourceConfig
from harness.types import ImageRef, Sample

DEFAULTS = {"seed": 0, "n_train": 300, "n_test": 100}
OPTIONS = tuple(DEFAULTS)
FIELD_KEYS: tuple[str, ...] = ()  # generated: nothing to map
SPLIT_OFFSET = {"train": 0, "test": 1}
MARKER = "complete.json"
GENERATION_LOCK = ".generating.lock"
MAX_CASES = 100_000


def expected_files(source: SourceConfig, split: str) -> list[str]:
    return []


def load(source: SourceConfig, split: str, data_dir: Path | None, kind: str) -> list[Sample]:
    seed, n = split_parameters(source, split)
    folder = ensure_generated(seed, n)
    cases = json.loads((folder / "cases.json").read_text(encoding="utf-8"))
    return [s for case in cases for s in _case_samples(case, folder, kind, source.closed_rule)]


def split_parameters(source: SourceConfig, split: str) -> tuple[int, int]:
    """(generator seed, number of cases) of one split, from the source options."""
    options = dict(source.options or {})
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise UserError(
            f"source '{source.name}' (phantom): unknown option {', '.join(unknown)}; "
            f"allowed options: {', '.join(DEFAULTS)}"
        )
    values = {**DEFAULTS, **options}
    for key, value in values.items():
        low, high = (0, 2**62) if key == "seed" else (1, MAX_CASES)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise UserError(
                f"source '{source.name}' (phantom): option '{key}' is {value!r}; "
                f"expected an integer from {low} to {high}"
            )
    name = source.split_name(split)
    if name not in SPLIT_OFFSET:
        raise UserError(f"source '{source.name}' (phantom) has no split '{split}'; its splits: train, test")
    return 2 * values["seed"] + SPLIT_OFFSET[name], values[f"n_{name}"]


def cache_folder(seed: int, n: int) -> Path:
    from harness.phantom import GENERATOR_VERSION

    key = json.dumps({"version": GENERATOR_VERSION, "seed": seed, "n": n}, sort_keys=True)
    return cache_dir() / "phantom" / hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def ensure_generated(seed: int, n: int) -> Path:
    """Generate the cases of (seed, n) into the cache unless a complete copy is already there (waiting while
    another process generates them)."""
    folder = cache_folder(seed, n)
    if _is_complete(folder, seed, n):
        return folder
    with exclusive(folder, GENERATION_LOCK, what=f"the phantom data {folder}", transient=True):
        if not _is_complete(folder, seed, n):  # else another process generated it while this one waited
            _generate(folder, seed, n)
    return folder


def _generate(folder: Path, seed: int, n: int) -> None:
    """Write the cases of (seed, n) into `folder` (locked by the caller), the marker last."""
    from harness.phantom import GENERATOR_VERSION, generate_cases

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / MARKER).unlink(missing_ok=True)
    for leftover in folder.glob("**/.*.tmp"):  # temp files of a killed generation
        leftover.unlink(missing_ok=True)
    records = []
    for case in generate_cases(n, seed):
        names = []
        for view, image in zip(case.VIEW_NAMES, case.views):
            name = f"images/{case.case_id}_{view}.png"
            atomic_write_bytes(folder / name, encode_png(image))
            names.append(name)
        records.append({
            "case_id": case.case_id, "organ": case.organ, "modality": case.modality, "images": names,
            "findings": case.findings, "qa": [asdict(q) for q in case.qa], "report": case.report,
            "caption": case.caption,
        })
    atomic_write_text(folder / "cases.json", json.dumps(records, indent=1) + "\n")
    marker = {"generator_version": GENERATOR_VERSION, "seed": seed, "n": n, "cases": len(records)}
    atomic_write_json(folder / MARKER, marker)


def _is_complete(folder: Path, seed: int, n: int) -> bool:
    from harness.phantom import GENERATOR_VERSION

    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        cases = json.loads((folder / "cases.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if marker != {"generator_version": GENERATOR_VERSION, "seed": seed, "n": n, "cases": n} or len(cases) != n:
        return False
    return all((folder / name).is_file() for case in cases for name in case["images"])


def _case_samples(case: dict[str, Any], folder: Path, kind: str, closed_rule: str | None) -> list[Sample]:
    refs = [ImageRef(name=name, path=folder / name) for name in case["images"]]
    base = {"organ": case["organ"], "modality": case["modality"], "case_id": case["case_id"]}
    if kind == "vqa":
        samples = []
        for k, qa in enumerate(case["qa"]):
            fields = {
                "answer_type": closed_label(qa["answer"], qa["answer_type"], closed_rule),
                "question_type": qa["question_type"],
                **base,
            }
            samples.append(Sample(f"{case['case_id']}-q{k}", refs[:1], qa["answer"], qa["question"], fields))
        return samples
    if kind == "report":
        return [Sample(case["case_id"], refs, case["report"], None, {**base, "views": ["frontal", "lateral"]})]
    if kind == "caption":
        return [Sample(case["case_id"], refs[:1], case["caption"], None, base)]
    raise UserError(f"the phantom format serves task kinds vqa, report and caption, not '{kind}'")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encode_png(image: Any) -> bytes:
    """8-bit grayscale PNG of a gray image (PIL or array; RGB uses its first channel), byte-for-byte portable."""
    import numpy as np  # here, not at module level: `harness list` reads OPTIONS and must stay light

    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 3:
        pixels = pixels[:, :, 0]
    height, width = pixels.shape
    raw = np.zeros((height, width + 1), dtype=np.uint8)  # filter byte 0 (None) before each row
    raw[:, 1:] = pixels
    data = raw.tobytes()
    blocks = []
    for start in range(0, max(len(data), 1), 65535):
        chunk = data[start : start + 65535]
        final = 1 if start + 65535 >= len(data) else 0
        blocks.append(struct.pack("<BHH", final, len(chunk), len(chunk) ^ 0xFFFF) + chunk)
    stream = b"\x78\x01" + b"".join(blocks) + struct.pack(">I", zlib.adler32(data))

    def chunk_bytes(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk_bytes(b"IHDR", header) + chunk_bytes(b"IDAT", stream) + chunk_bytes(
        b"IEND", b""
    )
