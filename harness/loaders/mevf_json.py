"""Loader for the MEVF VQA json layout (also used by LLaVA-Med and PeFoMed for VQA-RAD), and the shared
record -> Sample conversion of every VQA json format.

Layout (the MEVF `data_RAD` folder):
    trainset.json, testset.json   lists of records like
        {"qid": 1, "image_name": "synpic54610.jpg", "image_organ": "HEAD", "answer": "Yes",
         "answer_type": "CLOSED", "question_type": "PRES", "question": "...", "phrase_type": "freeform"}
    images/<image_name>
Source options: `files` (split -> json file name) and `image_dir` (default "images"). The source's `fields`
mapping renames columns: keys id, image, question, answer, answer_type, plus any breakdown name. Ids must be
unique within a file's split and a missing key is an error; errors name the record by its position in the file
and its id. A record whose answer is null or blank is skipped (listed in the result's `skipped`; the Task warns).
The question and the image name must be non-empty strings and the answer a string or a number (numbers become
their text); any other value (a list, a null question or image name) is an error rather than text such as "['Yes']"
or "None".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from numbers import Real
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.io import SURROGATE_HINT, RepeatedKey, loads_user_json, lone_surrogate
from harness.loaders.common import (
    SplitSamples,
    as_text,
    check_unique_ids,
    closed_label,
    inside,
    record_label,
    reference_text,
    require_data_dir,
)
from harness.task_config import SourceConfig
from harness.types import ImageRef, Sample

OPTIONS = ("files", "image_dir")

FILES = {"train": "trainset.json", "test": "testset.json"}
IMAGE_DIR = "images"
CORE_KEYS = ("id", "image", "question", "answer", "answer_type")

# harness field name -> record key; question_type etc. are kept as breakdown fields.
MEVF_FIELDS = {
    "id": "qid",
    "image": "image_name",
    "question": "question",
    "answer": "answer",
    "answer_type": "answer_type",
    "question_type": "question_type",
    "organ": "image_organ",
    "phrase_type": "phrase_type",
}


def split_file(source: SourceConfig, split: str, default_files: dict[str, str]) -> str:
    """The json file of a split, from `options.files` or the format's defaults."""
    files = {**default_files, **(source.options.get("files") or {})}
    name = source.split_name(split)
    if name not in files:
        raise UserError(f"source '{source.name}' ({source.format}) has no split '{name}'; its splits: "
                        f"{', '.join(files)}")  # `name`: what the source's splits mapping made of the split
    return files[name]


def expected_files(source: SourceConfig, split: str) -> list[str]:
    return [split_file(source, split, FILES)]


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            data = loads_user_json(fh.read())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})") from None
    except RepeatedKey as exc:
        raise UserError(f"{path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if (where := lone_surrogate(data)) is not None:
        raise UserError(f"{path}: {where} holds {SURROGATE_HINT}")
    return data


def read_records(path: Path) -> list[dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"{path}: expected a JSON list of question records (objects)")
    if not data:
        raise UserError(f"{path}: an empty list; expected the split's question records")
    return data


def shown(value: Any, limit: int = 60) -> str:
    """A field's value as the JSON a user sees in the file (null, ["Yes"]), shortened for a one-line error."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def question_text(value: Any, where: str, key: str) -> str:
    """The question as stripped text; anything but a non-empty string is an error naming `where` and `key`."""
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where} has {key} {shown(value)}; expected the question (a non-empty string)")
    return value.strip()


def image_text(value: Any, where: str, key: str) -> str:
    """The image file name as stripped text; a null, blank or non-string one is an error naming `where` and `key`
    (not a sample whose image "None" fails at run time)."""
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where} has {key} {shown(value)}; expected the image file name (a non-empty string)")
    return value.strip()


def breakdown_value(value: Any, where: str) -> Any:
    """A breakdown field's value, text stripped; a list or object (a group named by its Python repr, one per
    spelling) is an error: `where` says "<file>: record 3 has organ"."""
    if isinstance(value, (list, dict)):
        raise UserError(f"{where} {shown(value)}; expected one value (text or a number) for the breakdown by it")
    return value.strip() if isinstance(value, str) else value


def answer_text(value: Any, where: str, key: str) -> str | None:
    """The reference answer as text (a number as its text), None when null or blank (the record is skipped); a
    list, object or boolean is an error naming `where` and `key`."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (str, Real))):
        raise UserError(f"{where} has {key} {shown(value)}; expected the answer (a string or a number)")
    return reference_text(value)


def vqa_samples(
    records: list[dict[str, Any]],
    *,
    source: SourceConfig,
    path: Path,
    image_root: Path,
    default_fields: dict[str, str],
    positions: Sequence[int] | None = None,
) -> SplitSamples:
    """Turn VQA records into Samples: OPEN/CLOSED by the source's closed_rule, breakdown fields stripped; a
    record with a null or blank answer is skipped (its label goes to `skipped`).

    `positions` are the records' indices in the file (when `records` is a selection of it), used in labels.
    """
    mapping = {**default_fields, **source.fields}
    for key in ("image", "question", "answer"):
        if key not in mapping:
            raise UserError(f"source '{source.name}': fields.{key} must name the record key holding the {key}")
    needed = [mapping["image"], mapping["question"], mapping["answer"]]
    if source.closed_rule != "yes_no" and "answer_type" in mapping:
        needed.append(mapping["answer_type"])
    id_key = mapping.get("id")
    positions = list(range(len(records))) if positions is None else list(positions)
    samples = SplitSamples()
    ids: list[str] = []
    for pos, rec in zip(positions, records):
        label = record_label(pos, rec.get(id_key) if id_key else None, id_key)
        missing = [key for key in needed if key not in rec]
        if id_key and id_key in rec and not as_text(rec[id_key]):
            raise UserError(f"{path}: {label} has {id_key} {shown(rec[id_key])}; expected the record's id")
        if id_key and id_key not in rec:
            missing.insert(0, id_key)
        if missing:
            raise UserError(
                f"{path}: {label} lacks {', '.join(missing)} (it has {', '.join(sorted(rec))}); "
                "map other names with the source's `fields`"
            )
        sample_id = as_text(rec[id_key]) if id_key else str(pos)
        ids.append(sample_id)
        answer = answer_text(rec[mapping["answer"]], f"{path}: {label}", mapping["answer"])
        if answer is None:
            samples.skipped.append(label)
            continue
        question = question_text(rec[mapping["question"]], f"{path}: {label}", mapping["question"])
        raw_type = rec.get(mapping["answer_type"]) if "answer_type" in mapping else None
        try:
            kind = closed_label(answer, raw_type, source.closed_rule)
        except ValueError:
            raise UserError(
                f"{path}: {label} has {mapping['answer_type']} {raw_type!r}; expected OPEN or CLOSED "
                "(or set closed_rule: yes_no)"
            ) from None
        fields: dict[str, Any] = {"answer_type": kind}
        for name, key in mapping.items():
            if name in CORE_KEYS or key not in rec:
                continue
            fields[name] = breakdown_value(rec[key], f"{path}: {label} has {key}")
        image_name = image_text(rec[mapping["image"]], f"{path}: {label}", mapping["image"])
        samples.append(
            Sample(
                id=sample_id,
                images=[ImageRef(name=image_name, path=inside(image_root, image_name, f"{path}: {label}"))],
                answer=answer,
                question=question,
                fields=fields,
            )
        )
    check_unique_ids(ids, positions, str(path), id_key or "id")  # skipped records' ids count too
    return samples


def load(source: SourceConfig, split: str, data_dir: Path | None, kind: str) -> SplitSamples:
    name = split_file(source, split, FILES)
    root = require_data_dir(data_dir, source.name, [name])
    path = root / name
    image_root = root / source.options.get("image_dir", IMAGE_DIR)
    return vqa_samples(read_records(path), source=source, path=path, image_root=image_root,
                       default_fields=MEVF_FIELDS)
