"""Dataset fingerprints: a hash over sample ids, texts and image bytes.

Recorded in every result so that numbers from different data versions are never silently mixed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from harness.types import Sample


def image_digest(sample: Sample) -> list[str]:
    digests = []
    for ref in sample.images:
        try:
            digests.append(hashlib.sha256(ref.read_bytes()).hexdigest())
        except OSError:
            digests.append("missing")
    return digests


def dataset_fingerprint(samples: Iterable[Sample]) -> str:
    """sha256 over (id, question, answer, image digests) of every sample, in id order."""
    h = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: s.id):
        record = [sample.id, sample.question or "", sample.answer, image_digest(sample)]
        h.update(json.dumps(record, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return "sha256:" + h.hexdigest()[:32]


def text_hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def config_hash(obj: object) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def directory_hash(path) -> str:
    """sha256 over the relative names and bytes of every file under `path` (an adapter directory)."""
    from pathlib import Path

    root = Path(path)
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(root)).encode("utf-8") + b"\0")
        h.update(hashlib.sha256(file.read_bytes()).digest())
    return "sha256:" + h.hexdigest()[:16]
