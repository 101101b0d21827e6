"""Dataset fingerprints (a hash over sample ids, texts, labels and image bytes) and the other content hashes of run
ids: an adapter's, a text's, a configuration's.

Recorded in every result (and part of the run id) so that numbers from different data versions are never
silently mixed: relabelled answer types or question types change it as much as a changed answer does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.types import Sample


def image_digest(sample: Sample, known: dict[Path, str] | None = None) -> list[str]:
    """The sha256 of each of the sample's images ("missing" for one that cannot be read). `known`: digests of image
    files already read, by path, filled in as files are read (several questions are asked about one image: PathVQA
    has about 7 per image, SLAKE 11), so each file is read and hashed once."""
    digests = []
    for ref in sample.images:
        path = ref.path if known is not None and ref.data is None and ref.reader is None else None
        if path is not None and known is not None and path in known:
            digests.append(known[path])
            continue
        try:
            digest = hashlib.sha256(ref.read_bytes()).hexdigest()
        except OSError:
            digest = "missing"
        if path is not None and known is not None:
            known[path] = digest
        digests.append(digest)
    return digests


def image_digests(samples: Iterable[Sample]) -> dict[str, list[str]]:
    """`image_digest` of every sample by id, each image file read once."""
    known: dict[Path, str] = {}
    return {sample.id: image_digest(sample, known) for sample in samples}


#: the sample field `cluster_by: image_content` reads: a digest of the sample's image bytes, set once the split is
#: fingerprinted (the images are read then), for sources whose images have no names (hub copies)
IMAGE_CONTENT = "image_content"


def content_cluster(digests: list[str]) -> str:
    """One sample's IMAGE_CONTENT value: samples showing byte-identical images share it."""
    return hashlib.sha256("\n".join(digests).encode("ascii")).hexdigest()[:16]


def _labels(fields: dict[str, Any]) -> dict[str, Any]:
    """The sample's fields (answer_type after the closed rule, question_type, organ, ...) that are plain data (not
    IMAGE_CONTENT: derived from the image bytes, which are hashed already)."""
    plain = (str, int, float, bool, type(None), list, tuple, dict)
    return {k: v for k, v in sorted(fields.items()) if isinstance(v, plain) and k != IMAGE_CONTENT}


# Version 2 (harness 0.1.0 after 2026-11-23) hashes the labels too; version-1 fingerprints were plain
# "sha256:<hex>". A different version means the data cannot be compared, not that it differs.
FINGERPRINT_VERSION = 2


def fingerprint_version(fingerprint: str) -> int:
    """The version a recorded fingerprint was made with ("v2-sha256:..." -> 2, "sha256:..." -> 1)."""
    head = fingerprint.split("-", 1)[0]
    return int(head[1:]) if head.startswith("v") and head[1:].isdigit() else 1


def dataset_fingerprint(samples: Iterable[Sample], images: bool = True,
                        digests_by_id: dict[str, list[str]] | None = None) -> str:
    """sha256 over (id, question, answer, image digests, fields) of every sample, in id order, marked with
    FINGERPRINT_VERSION. `images=False` leaves the image bytes out (a cheap fingerprint of the texts and labels,
    for a model that learns from them alone); it is marked `-text`, never equal to a full one. `digests_by_id`: the
    samples' image digests when already computed."""
    samples = sorted(samples, key=lambda s: s.id)
    if images and digests_by_id is None:
        digests_by_id = image_digests(samples)
    h = hashlib.sha256()
    for sample in samples:
        digests = digests_by_id[sample.id] if images and digests_by_id is not None else []
        record = [sample.id, sample.question or "", sample.answer, digests, _labels(sample.fields)]
        h.update(json.dumps(record, ensure_ascii=False, default=str).encode("utf-8"))
        h.update(b"\n")
    return f"v{FINGERPRINT_VERSION}{'' if images else '-text'}-sha256:" + h.hexdigest()[:32]


def reference_digest(row: dict[str, Any]) -> str:
    """Digest of what a predictions.jsonl line is judged against (id, question, reference, answer type), written
    with the line by `harness run`: a line edited by hand afterwards no longer matches it."""
    record = [row.get("id"), row.get("question"), row.get("answer"), row.get("answer_type")]
    return hashlib.sha256(json.dumps(record, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def text_hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def config_hash(obj: object) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


#: the files of an adapter folder that loading reads (PEFT; vLLM, which also reads added-token embeddings; the
#: pefomed plugin's projection): only these enter an adapter's hash; a model card, training logs, kept checkpoints
#: or a .DS_Store change no output
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # the LoRA weights PEFT saves (one of them)
ADAPTER_FILES = ("adapter_config.json", *ADAPTER_WEIGHTS, "projection.safetensors", "new_embeddings.safetensors",
                 "new_embeddings.bin")


def adapter_hash(path) -> str:
    """sha256 over the names and bytes of the ADAPTER_FILES an adapter folder has (each file's digest as
    harness.file_digests keeps it), marked `files-sha256:` (older runs hashed every file of the folder: `sha256:`)."""
    from pathlib import Path

    from harness.file_digests import file_sha256

    root = Path(path)
    h = hashlib.sha256()
    for name in ADAPTER_FILES:
        file = root / name
        if file.is_file():
            h.update(name.encode("utf-8") + b"\0" + bytes.fromhex(file_sha256(file)))
    return "files-sha256:" + h.hexdigest()[:16]
