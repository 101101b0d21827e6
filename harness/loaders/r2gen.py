"""Loader for the R2Gen report-generation layout (IU-Xray; Chen et al., EMNLP 2020).

Layout: `annotation.json` = {"train": [...], "val": [...], "test": [...]}, each record
    {"id": "CXR2384_IM-0942", "report": "...", "image_path": ["CXR2384_IM-0942/0.png", ".../1.png"],
     "split": "train"}
and `images/<image_path>`. One sample per study with all its views (2069 / 296 / 590 studies).
Source option `per_image: true` gives PeFoMed's variant: one sample per image, id "<study>/<view index>"
(view index = position of the image within its study; an `image_path` given as a single string, as in
PeFoMed's own per-image file, counts in file order). Other options: `annotation`, `image_dir`.
The report is kept as written; judges apply the lowercasing/cleaning that papers use. A study whose report is
null or blank is skipped with all its views (listed in the result's `skipped`; the Task warns): an empty
reference would make the lexical metrics meaningless. The real R2Gen annotation has none. A report that is not
text, an image_path that is not a non-empty list of path strings, a record whose `split` field is missing or
differs from the list it is in, a study repeated with the same image (per_image: a study may repeat only with other
images, as in PeFoMed's one-record-per-image file) and R2Gen's MIMIC-CXR annotation (records with
subject_id/study_id, images at p10/p10000032/s5.../x.jpg: credentialed data) are errors naming the record.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.loaders.common import SplitSamples, inside, norm, record_label, reference_text, require_data_dir
from harness.loaders.mevf_json import read_json, shown
from harness.task_config import SourceConfig
from harness.types import ImageRef, Sample

OPTIONS = ("annotation", "image_dir", "per_image")
FIELD_KEYS = ("id", "answer", "image", "split")  # no breakdowns: a report has none in the file

ANNOTATION = "annotation.json"
IMAGE_DIR = "images"
PER_IMAGE_SOURCE = "r2gen-per-image"  # the source of tasks/iu-xray.yaml that sets per_image: true
# R2Gen's MIMIC-CXR annotation has the same layout: its records carry the patient and study numbers and its
# images sit at MIMIC-CXR-JPG's p<2 digits>/p<subject>/s<study>/<dicom>.jpg; IU-Xray has neither.
MIMIC_KEYS = ("subject_id", "study_id")
MIMIC_PATH = re.compile(r"(^|/)p\d{2}/p\d{8}/s\d{8}/")


def expected_files(source: SourceConfig, split: str) -> list[str]:
    return [str(source.options.get("annotation", ANNOTATION))]


def _records(source: SourceConfig, split: str, root: Path) -> tuple[Path, list[dict[str, Any]]]:
    path = root / expected_files(source, split)[0]
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected an object {{\"train\": [...], \"val\": [...], \"test\": [...]}}")
    name = source.split_name(split)
    if name not in data:
        raise UserError(f"{path} has no split '{name}'; its splits: {', '.join(data)}")
    records = data[name]
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UserError(f"{path}: split '{name}' must be a list of study records")
    return path, records


def load(source: SourceConfig, split: str, data_dir: Path | None, kind: str) -> SplitSamples:
    root = require_data_dir(data_dir, source.name, expected_files(source, split))
    path, records = _records(source, split, root)
    name = source.split_name(split)
    mapping = {"id": "id", "answer": "report", "image": "image_path", "split": "split", **source.fields}
    image_root = root / str(source.options.get("image_dir", IMAGE_DIR))
    per_image = bool(source.options.get("per_image", False))
    samples = SplitSamples()
    views_seen: dict[str, int] = {}
    images_seen: dict[tuple[str, str], int] = {}  # (study, image path) -> the record that gave it first
    skipped_studies: list[str] = []
    for i, rec in enumerate(records):
        label = f"split '{name}' " + record_label(i, rec.get(mapping["id"]), mapping["id"])
        missing = [mapping[k] for k in ("id", "answer", "image", "split") if mapping[k] not in rec]
        _refuse_mimic(rec, mapping["image"], path, label)
        if missing:
            raise UserError(f"{path}: {label} lacks {', '.join(missing)} (it has {', '.join(sorted(rec))})")
        study, paths, report = _checked(rec, mapping, path, label)
        _check_split_field(rec[mapping["split"]], name, path, label, mapping["split"])
        for image in paths:
            first = images_seen.setdefault((study, image.strip()), i)
            if per_image and first != i:  # without per_image a repeated study is refused below, with advice
                raise UserError(
                    f"{path}: study id '{study}' appears twice in split '{split}' (records {first} and {i}, both with "
                    f"image {shown(image)}); expected each image of a study once"
                )
        refs = [ImageRef(name=str(p), path=inside(image_root, str(p), f"{path}: {label}")) for p in paths]
        if not per_image:
            if report is None:
                samples.skipped.append(record_label(i, study, mapping["id"]))
                skipped_studies.append(study)
            else:
                samples.append(
                    Sample(id=study, images=refs, answer=report, fields={"study_id": study, "views": len(refs)})
                )
            continue
        for ref in refs:
            view = views_seen.get(study, 0)
            views_seen[study] = view + 1  # a skipped view keeps its index: the other views' ids do not move
            if report is None:
                samples.skipped.append(record_label(i, f"{study}/{view}", "id"))
                continue
            samples.append(
                Sample(
                    id=f"{study}/{view}",
                    images=[ref],
                    answer=report,
                    fields={"study_id": study, "view": view, "views": 1},
                )
            )
    repeated = [sid for sid, n in Counter([s.id for s in samples] + skipped_studies).items() if n > 1]
    if repeated:
        dup = repeated[0]
        where = [i for i, rec in enumerate(records) if str(rec.get(mapping["id"], "")).strip() == dup][:2]
        raise UserError(
            f"{path}: study id '{dup}' appears twice in split '{split}'"
            + (f" (records {where[0]} and {where[1]})" if len(where) == 2 else "")
            + ("" if per_image else f"; a file with one record per image (PeFoMed's) is read with --source "
               f"{PER_IMAGE_SOURCE} (the source with option per_image: true)")
        )
    return samples


def _refuse_mimic(rec: dict[str, Any], image_key: str, path: Path, label: str) -> None:
    """Refuse R2Gen's MIMIC-CXR annotation: credentialed data must not run (and be judged) as public IU-Xray."""
    keys = [k for k in MIMIC_KEYS if k in rec]
    images = rec.get(image_key)
    images = [images] if isinstance(images, str) else images if isinstance(images, list) else []
    mimic_path = next((p for p in images if isinstance(p, str) and MIMIC_PATH.search(p)), None)
    if keys or mimic_path:
        sign = f"has {' and '.join(keys)}" if keys else f"has image path {shown(mimic_path)}"
        raise UserError(f"{path}: {label} {sign}: this looks like MIMIC-CXR (credentialed, not IU-Xray, whose ids "
                        "look like CXR2384_IM-0942); refusing to evaluate it as a public dataset")


def _check_split_field(value: Any, name: str, path: Path, label: str, key: str) -> None:
    """A record's split field must name the list it is in: a record filed under another split would silently move
    a study between train and test."""
    if not isinstance(value, str) or norm(value) != norm(name):  # matched as phrase_type and q_lang are
        raise UserError(f"{path}: {label} has {key} {shown(value)}; expected {shown(name)} (the split whose list "
                        "holds the record)")


def _checked(rec: dict[str, Any], mapping: dict[str, str], path: Path, label: str) -> tuple[str, list[str], Any]:
    """(study id, image paths, report or None when null/blank) of a record; a wrong type is an error."""
    study, paths, report = (rec[mapping[k]] for k in ("id", "image", "answer"))
    if isinstance(study, bool) or not isinstance(study, (str, int)) or not str(study).strip():
        raise UserError(f"{path}: {label} has {mapping['id']} {shown(study)}; expected the study id (a string)")
    paths = [paths] if isinstance(paths, str) else paths  # PeFoMed's per-image file: one path string
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.strip() for p in paths):
        raise UserError(f"{path}: {label} has {mapping['image']} {shown(rec[mapping['image']])}; expected a "
                        "non-empty list of image paths (strings)")
    if report is not None and not isinstance(report, str):
        raise UserError(f"{path}: {label} has {mapping['answer']} {shown(report)}; expected the report text (a string)")
    return str(study).strip(), paths, reference_text(report)
