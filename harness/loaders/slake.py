"""Loader for the SLAKE 1.0 release (Liu et al., ISBI 2021): one json per split plus `imgs/`.

Layout: `train.json`, `validate.json` (the released name; the Hugging Face copy renamed it `validation.json`,
either is accepted, not both), `test.json`; each a list of records with img_id, img_name ("xmlab102/source.jpg"),
question, answer, q_lang ("en"|"zh"), location, modality, answer_type (OPEN|CLOSED), base_type,
content_type, triple, qid. Images live at `imgs/<img_name>`. Only `q_lang == "en"` is kept by default
(source option `q_lang`; "all" keeps both languages): 4919 / 1053 / 1061 records. q_lang is matched
case-insensitively after stripping; a record without one, or with a language other than en/zh, is an error (it
would silently change a split's size). CLOSED answers are not only yes/no, so the YAML uses closed_rule
answer_type. The released train.json has one English record with a blank answer (qid 1622): like any record
with a blank answer it is skipped (see mevf_json), so train loads 4,918 samples and the Task prints a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.loaders.common import SplitSamples, norm, record_label, require_data_dir
from harness.loaders.mevf_json import read_records, vqa_samples
from harness.task_config import SourceConfig

OPTIONS = ("files", "q_lang", "image_dir")
# Other names users type for the validation split; a run records (and is identified by) the canonical name.
# Also read by the hub loader (`format: hf`), so that --split val means the same on every source.
SPLIT_ALIASES = {"validate": "validation", "val": "validation", "valid": "validation", "dev": "validation"}

FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.json",),
    "validation": ("validate.json", "validation.json"),
    "test": ("test.json",),
}
IMAGE_DIR = "imgs"
LANGUAGES = ("en", "zh")
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
    name = name if name in files else SPLIT_ALIASES.get(name, name)
    if name in files:
        return (str(files[name]),)
    if name not in FILES:
        raise UserError(
            f"source '{source.name}' (slake-json) has no split '{split}'; its splits: train, validation, test"
        )
    return FILES[name]


def expected_files(source: SourceConfig, split: str) -> list[str]:
    return [_candidates(source, split)[0]]


def load(source: SourceConfig, split: str, data_dir: Path | None, kind: str) -> SplitSamples:
    candidates = _candidates(source, split)
    if data_dir is None or not Path(data_dir).expanduser().is_dir():
        require_data_dir(data_dir, source.name, list(candidates[:1]))
    root = Path(data_dir).expanduser()  # type: ignore[arg-type]
    present = [root / c for c in candidates if (root / c).is_file()]
    if not present:
        raise UserError(
            f"--data-dir {root} lacks {' or '.join(candidates)} (source '{source.name}' expects the SLAKE "
            f"'{split}' file there)"
        )
    if len(present) > 1:
        raise UserError(f"--data-dir {root} has both {' and '.join(p.name for p in present)} for split '{split}'; "
                        "remove one (they are the same split under its two release names)")
    found = present[0]
    records = read_records(found)
    positions = list(range(len(records)))
    lang = norm(source.options.get("q_lang", "en"))
    if lang != "all":
        positions = _language_positions(records, lang, found, {**SLAKE_FIELDS, **source.fields}.get("id"))
        if not positions:
            raise UserError(f"{found}: none of its {len(records)} records has q_lang {lang} (source option q_lang; "
                            "'all' keeps every language)")
        records = [records[i] for i in positions]
    image_root = root / str(source.options.get("image_dir", IMAGE_DIR))
    return vqa_samples(records, source=source, path=found, image_root=image_root, default_fields=SLAKE_FIELDS,
                       positions=positions)


def _language_positions(records: list[dict[str, Any]], lang: str, path: Path, id_key: str | None) -> list[int]:
    """Positions of the records in language `lang`; a missing or unknown q_lang is an error, not a dropped record."""
    known = sorted({*LANGUAGES, lang})
    keep = []
    for i, rec in enumerate(records):
        value = norm(rec.get("q_lang"))
        if value not in known:
            label = record_label(i, rec.get(id_key) if id_key else None, id_key)
            found = f"has q_lang {rec['q_lang']!r}" if value else "lacks q_lang"
            raise UserError(f"{path}: {label} {found}, which decides whether it is kept; expected one of "
                            f"{', '.join(known)} (source option q_lang: {lang})")
        if value == lang:
            keep.append(i)
    return keep
