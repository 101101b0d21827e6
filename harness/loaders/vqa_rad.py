"""Loader for the official VQA-RAD release (Lau et al. 2018, OSF): one json with every pair plus an image folder.

Layout: `VQA_RAD Dataset Public.json` (2,248 records: qid, phrase_type, image_name, image_organ, question,
question_type, answer, answer_type, ...) and `VQA_RAD Image Folder/synpic*.jpg`.
Splits follow MEVF / LLaVA-Med / PeFoMed: test = phrase_type in {test_freeform, test_para} (451 pairs),
train = phrase_type in {freeform, para} (1,797). phrase_type is matched case-insensitively after stripping; a
record without one, or with any other value, is an error (it would silently change a split's size).
Quirks of the real file handled here: answer_type with stray whitespace ("CLOSED "), answers that are JSON
numbers, qid given once as a string; question_type values such as "POS, PRES" are kept as given (stripped).
Source options: `json_file`, `image_dir`, `test_phrase_types`, `train_phrase_types`. A record with a null or
blank answer is skipped with a warning (see mevf_json); the real file has none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.loaders.common import SplitSamples, norm, record_label, require_data_dir
from harness.loaders.mevf_json import MEVF_FIELDS, read_records, vqa_samples
from harness.task_config import SourceConfig

OPTIONS = ("json_file", "image_dir", "test_phrase_types", "train_phrase_types")

JSON_FILE = "VQA_RAD Dataset Public.json"
IMAGE_DIR = "VQA_RAD Image Folder"
TEST_PHRASE_TYPES = ("test_freeform", "test_para")
TRAIN_PHRASE_TYPES = ("freeform", "para")
SPLITS = ("train", "test")


def _json_file(source: SourceConfig) -> str:
    return str(source.options.get("json_file", JSON_FILE))


def expected_files(source: SourceConfig, split: str) -> list[str]:
    return [_json_file(source)]


def _phrase_types(source: SourceConfig, key: str, default: tuple[str, ...]) -> list[str]:
    return [norm(t) for t in source.options.get(key, default)]


def select_split(records: list[dict[str, Any]], source: SourceConfig, path: Path,
                 want_test: bool) -> tuple[list[dict[str, Any]], list[int]]:
    """The records of one split and their positions in the file; every record's phrase_type must be known."""
    mapping = {**MEVF_FIELDS, **source.fields}
    phrase_key, id_key = mapping.get("phrase_type", "phrase_type"), mapping.get("id")
    test_types = _phrase_types(source, "test_phrase_types", TEST_PHRASE_TYPES)
    train_types = _phrase_types(source, "train_phrase_types", TRAIN_PHRASE_TYPES)
    expected = f"test: {', '.join(test_types)}; train: {', '.join(train_types)}"
    chosen, positions = [], []
    for i, rec in enumerate(records):
        value = norm(rec.get(phrase_key))
        if value not in test_types and value not in train_types:
            label = record_label(i, rec.get(id_key) if id_key else None, id_key)
            found = (f"has {phrase_key} {rec[phrase_key]!r}" if value
                     else f"has a blank {phrase_key}" if phrase_key in rec else f"lacks {phrase_key}")
            raise UserError(f"{path}: {label} {found}, which decides its split; expected one of ({expected})")
        if (value in test_types) == want_test:
            chosen.append(rec)
            positions.append(i)
    return chosen, positions


def load(source: SourceConfig, split: str, data_dir: Path | None, kind: str) -> SplitSamples:
    name = source.split_name(split)
    if name not in SPLITS:
        raise UserError(f"source '{source.name}' (vqa-rad-official) has no split '{split}'; its splits: train, test")
    root = require_data_dir(data_dir, source.name, expected_files(source, split))
    path = root / _json_file(source)
    chosen, positions = select_split(read_records(path), source, path, want_test=name == "test")
    image_root = root / str(source.options.get("image_dir", IMAGE_DIR))
    return vqa_samples(chosen, source=source, path=path, image_root=image_root, default_fields=MEVF_FIELDS,
                       positions=positions)
