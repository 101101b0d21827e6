"""Loader for the ROCOv2 / ImageCLEFmedical caption release (Rückert et al., Scientific Data 2024).

Layout (defaults, each overridable by a source option; `{split}` and `{id}` are filled in):
    captions  "{split}_captions.csv"   header ID,Caption
    concepts  "{split}_concepts.csv"   header ID,CUIs with the CUIs joined by ';' (optional: read when present)
    image     "{split}/{id}.jpg"
Splits: train / valid / test. The caption is the reference; `fields["cuis"]` holds the image's UMLS CUIs.
Column names follow the source's `fields` mapping (id, answer, cuis). An empty or repeated id is an error naming
the CSV line; a row with an empty caption is skipped (listed in the result's `skipped` as "line N (ID x)"; the
Task warns).
"""

from __future__ import annotations

import csv
from pathlib import Path

from harness.errors import UserError
from harness.loaders.common import SplitSamples, record_label, reference_text, require_data_dir
from harness.task_config import SourceConfig
from harness.types import ImageRef, Sample

CAPTIONS = "{split}_captions.csv"
CONCEPTS = "{split}_concepts.csv"
IMAGE = "{split}/{id}.jpg"
OPTIONS = ("captions", "concepts", "image")


def _option(source: SourceConfig, key: str, default: str, split: str) -> str:
    pattern = str(source.options.get(key, default))
    try:
        return pattern.format(split=source.split_name(split), id="{id}")
    except (KeyError, IndexError, ValueError):
        raise UserError(
            f"source '{source.name}': options.{key} {pattern!r} may only use the placeholders {{split}} and {{id}}"
        ) from None


def expected_files(source: SourceConfig, split: str) -> list[str]:
    return [_option(source, "captions", CAPTIONS, split)]


def _read_csv(path: Path, columns: list[str]) -> list[dict[str, str]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                raise UserError(
                    f"{path}:1: header lacks column {', '.join(missing)} (has {', '.join(header) or 'nothing'}); "
                    "map other names with the source's `fields`"
                )
            return list(reader)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise UserError(f"{path}: malformed CSV ({exc})") from None


def split_cuis(value: object) -> list[str]:
    """CUIs as a list: ROCOv2's CSV joins them with ';', the hub copy stores a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [c.strip() for c in value.split(";") if c.strip()]
    return [str(c).strip() for c in value]  # type: ignore[attr-defined]


def load(source: SourceConfig, split: str, data_dir: Path | None, kind: str) -> SplitSamples:
    captions_name = _option(source, "captions", CAPTIONS, split)
    root = require_data_dir(data_dir, source.name, [captions_name])
    mapping = {"id": "ID", "answer": "Caption", "cuis": "CUIs", **source.fields}
    captions_path = root / captions_name
    rows = _read_csv(captions_path, [mapping["id"], mapping["answer"]])
    concepts_path = root / _option(source, "concepts", CONCEPTS, split)
    cuis: dict[str, list[str]] | None = None
    if concepts_path.is_file():
        cuis = {
            (r[mapping["id"]] or "").strip(): split_cuis(r[mapping["cuis"]])
            for r in _read_csv(concepts_path, [mapping["id"], mapping["cuis"]])
        }
    image_pattern = _option(source, "image", IMAGE, split)
    samples = SplitSamples()
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        image_id = (row[mapping["id"]] or "").strip()
        if not image_id:
            raise UserError(f"{captions_path}:{line}: empty {mapping['id']}")
        if image_id in seen:
            raise UserError(f"{captions_path}:{line}: {mapping['id']} '{image_id}' appears twice")
        seen.add(image_id)
        caption = reference_text(row[mapping["answer"]])
        if caption is None:
            samples.skipped.append(record_label(line, image_id, mapping["id"], unit="line"))
            continue
        rel = image_pattern.format(id=image_id)
        fields = {} if cuis is None else {"cuis": cuis.get(image_id, [])}
        samples.append(
            Sample(
                id=image_id,
                images=[ImageRef(name=rel, path=root / rel)],
                answer=caption,
                fields=fields,
            )
        )
    return samples
