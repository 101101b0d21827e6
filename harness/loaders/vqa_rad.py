"""Loader for the official VQA-RAD release (Lau et al. 2018, OSF): one json with every pair plus an image folder.

Layout: `VQA_RAD Dataset Public.json` (2,248 records: qid, phrase_type, image_name, image_organ, question,
question_type, answer, answer_type, ...) and `VQA_RAD Image Folder/synpic*.jpg`.
Splits follow MEVF / LLaVA-Med / PeFoMed: test = phrase_type in {test_freeform, test_para} (451 pairs),
train = every other record (1,797). Quirks of the real file handled here: answer_type with stray whitespace
("CLOSED "), answers that are JSON numbers, qid given once as a string; question_type values such as
"POS, PRES" are kept as given (stripped). Source options: `json_file`, `image_dir`, `test_phrase_types`.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import UserError
from harness.loaders.common import require_data_dir
from harness.loaders.mevf_json import MEVF_FIELDS, read_records, vqa_samples
from harness.task_config import SourceConfig
from harness.types import Sample

JSON_FILE = "VQA_RAD Dataset Public.json"
IMAGE_DIR = "VQA_RAD Image Folder"
TEST_PHRASE_TYPES = ("test_freeform", "test_para")
SPLITS = ("train", "test")


def _json_file(source: SourceConfig) -> str:
    return str(source.options.get("json_file", JSON_FILE))


def expected_files(source: SourceConfig, split: str) -> list[str]:
    return [_json_file(source)]


def load(source: SourceConfig, split: str, data_dir: Path | None, kind: str) -> list[Sample]:
    name = source.split_name(split)
    if name not in SPLITS:
        raise UserError(f"source '{source.name}' (vqa-rad-official) has no split '{split}'; its splits: train, test")
    root = require_data_dir(data_dir, source.name, expected_files(source, split))
    path = root / _json_file(source)
    records = read_records(path)
    test_types = set(source.options.get("test_phrase_types", TEST_PHRASE_TYPES))
    phrase_key = {**MEVF_FIELDS, **source.fields}.get("phrase_type", "phrase_type")
    want_test = name == "test"
    chosen = [r for r in records if (str(r.get(phrase_key, "")).strip() in test_types) == want_test]
    image_root = root / str(source.options.get("image_dir", IMAGE_DIR))
    return vqa_samples(chosen, source=source, path=path, image_root=image_root, default_fields=MEVF_FIELDS)
