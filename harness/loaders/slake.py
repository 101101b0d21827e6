"""Loader for the SLAKE 1.0 release (Liu et al., ISBI 2021): one json per split plus `imgs/`.

Layout: `train.json`, `validate.json` (the released name; the Hugging Face copy renamed it `validation.json`,
both are accepted), `test.json`; each a list of records with img_id, img_name ("xmlab102/source.jpg"),
question, answer, q_lang ("en"|"zh"), location, modality, answer_type (OPEN|CLOSED), base_type,
content_type, triple, qid. Images live at `imgs/<img_name>`. Only `q_lang == "en"` is kept by default
(source option `q_lang`; "all" keeps both languages): 4919 / 1053 / 1061 records.
CLOSED answers are not only yes/no, so the YAML uses closed_rule answer_type.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import UserError
from harness.loaders.common import require_data_dir
from harness.loaders.mevf_json import read_records, vqa_samples
from harness.task_config import SourceConfig
from harness.types import Sample

FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.json",),
    "validation": ("validate.json", "validation.json"),
    "validate": ("validate.json", "validation.json"),
    "val": ("validate.json", "validation.json"),
    "test": ("test.json",),
}
IMAGE_DIR = "imgs"
SLAKE_FIELDS = {
    "id": "qid",
    "image": "img_name",
    "question": "question",
    "answer": "answer",
    "answer_type": "answer_type",
    "content_type": "content_type",
    "modality": "modality",
    "location": "location",
    "base_type": "base_type",
    "img_id": "img_id",
}


def _candidates(source: SourceConfig, split: str) -> tuple[str, ...]:
    files = source.options.get("files") or {}
    name = source.split_name(split)
    if name in files:
        return (str(files[name]),)
    if name not in FILES:
        raise UserError(
            f"source '{source.name}' (slake-json) has no split '{split}'; its splits: train, validation, test"
        )
    return FILES[name]


def expected_files(source: SourceConfig, split: str) -> list[str]:
    return [_candidates(source, split)[0]]


def load(source: SourceConfig, split: str, data_dir: Path | None, kind: str) -> list[Sample]:
    candidates = _candidates(source, split)
    if data_dir is None or not Path(data_dir).expanduser().is_dir():
        require_data_dir(data_dir, source.name, list(candidates[:1]))
    root = Path(data_dir).expanduser()  # type: ignore[arg-type]
    found = next((root / c for c in candidates if (root / c).is_file()), None)
    if found is None:
        raise UserError(
            f"--data-dir {root} lacks {' or '.join(candidates)} (source '{source.name}' expects the SLAKE "
            f"'{split}' file there)"
        )
    records = read_records(found)
    lang = str(source.options.get("q_lang", "en"))
    if lang != "all":
        records = [r for r in records if str(r.get("q_lang", "")).strip() == lang]
    image_root = root / str(source.options.get("image_dir", IMAGE_DIR))
    return vqa_samples(records, source=source, path=found, image_root=image_root, default_fields=SLAKE_FIELDS)
