"""Loader for Hugging Face datasets (`format: hf`): a hub id, or a local copy of one given with --data-dir.

Hub: `datasets.load_dataset(source.path, name=source.config, revision=source.revision, split=...)`, read
from the user's Hugging Face cache when offline. Local copy: a folder in hub layout (parquet files such as
`data/test-00000-of-00001.parquet`, read by the same `load_dataset` call on the folder; its Arrow cache goes
to the harness cache dir) or a `DatasetDict.save_to_disk` folder (`dataset_dict.json`).
The image column is read undecoded, so each ImageRef carries the stored bytes. Columns follow the source's
`fields` mapping: id, image, question (vqa), answer, answer_type (for closed_rule answer_type), plus any
breakdown name; without an id column the id is "<split>-<row index>" (stable for a pinned revision). A blank
or repeated id is an error naming the row; a row whose reference (answer, report or caption) is null or blank is
skipped (listed in the result's `skipped`; the Task warns), since a hub dataset cannot be fixed by the user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.loaders.common import (
    SplitSamples,
    as_text,
    check_unique_ids,
    closed_label,
    record_label,
    reference_text,
)
from harness.loaders.imageclef import split_cuis
from harness.paths import cache_dir
from harness.task_config import SourceConfig
from harness.types import ImageRef, Sample

OPTIONS: tuple[str, ...] = ()  # a hub source is described by path, config, revision and fields alone

CORE_KEYS = ("id", "image", "question", "answer", "answer_type")


def expected_files(source: SourceConfig, split: str) -> list[str]:
    return []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _load_hub(source: SourceConfig, split: str) -> Any:
    import datasets

    if not source.path:
        raise UserError(f"source '{source.name}' (hf) needs a `path` (hub dataset id) or --data-dir")
    try:
        return datasets.load_dataset(source.path, name=source.config, revision=source.revision, split=split)
    except (ConnectionError, FileNotFoundError, ValueError, datasets.exceptions.DatasetsError) as exc:
        raise UserError(
            f"cannot load hub dataset '{source.path}' (revision {source.revision or 'default'}, split "
            f"'{split}'): {_first_line(exc)}. Download it while online, or pass --data-dir with a local copy"
        ) from None


def _load_local(source: SourceConfig, split: str, data_dir: Path) -> Any:
    import datasets

    if not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir} is not a directory (expected a Hugging Face dataset folder)")
    if (data_dir / "dataset_dict.json").is_file():
        dd = datasets.load_from_disk(str(data_dir))
        if split not in dd:
            raise UserError(f"{data_dir}/dataset_dict.json has no split '{split}'; its splits: {', '.join(dd)}")
        return dd[split]
    if not any(data_dir.glob("**/*.parquet")):
        raise UserError(
            f"--data-dir {data_dir} is not a Hugging Face dataset folder: expected parquet files in hub layout "
            f"(data/{split}-00000-of-00001.parquet) or a DatasetDict saved with save_to_disk (dataset_dict.json)"
        )
    try:
        return datasets.load_dataset(
            str(data_dir), name=source.config, split=split, cache_dir=str(cache_dir() / "hf-datasets")
        )
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetsError) as exc:
        raise UserError(
            f"cannot read {data_dir} as a Hugging Face dataset (split '{split}'): {_first_line(exc)}"
        ) from None


def _image_ref(value: Any, name: str, data_dir: Path | None) -> ImageRef:
    if isinstance(value, dict):
        if value.get("bytes"):
            return ImageRef(name=name, data=value["bytes"])
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return ImageRef(name=name, data=bytes(value))
    if isinstance(value, str) and value:
        path = Path(value)
        if not path.is_absolute() and data_dir is not None:
            path = data_dir / path
        return ImageRef(name=name, path=path)
    return ImageRef(name=name)  # no image stored: the runner records the error for this sample


def load(source: SourceConfig, split: str, data_dir: Path | None, kind: str) -> SplitSamples:
    import datasets

    split_name = source.split_name(split)
    local = Path(data_dir).expanduser() if data_dir is not None else None
    ds = _load_local(source, split_name, local) if local is not None else _load_hub(source, split_name)
    defaults = {"image": "image", "answer": "answer", **({"question": "question"} if kind == "vqa" else {})}
    mapping = {**defaults, **source.fields}
    if kind == "vqa" and source.closed_rule == "answer_type" and "answer_type" not in mapping:
        raise UserError(f"source '{source.name}': closed_rule answer_type needs fields.answer_type (a column)")
    columns = set(ds.column_names)
    required = [mapping[k] for k in CORE_KEYS if k in mapping and (k != "answer_type" or kind == "vqa")]
    missing = [c for c in required if c not in columns]
    if missing:
        where = local or source.path
        raise UserError(
            f"{where} split '{split_name}' lacks column {', '.join(missing)} (has {', '.join(sorted(columns))}); "
            "map other names with the source's `fields`"
        )
    if isinstance(ds.features.get(mapping["image"]), datasets.Image):
        ds = ds.cast_column(mapping["image"], datasets.Image(decode=False))
    extra = {name: col for name, col in mapping.items() if name not in CORE_KEYS and col in columns}
    rows = list(ds)
    where = f"{local or source.path} split '{split_name}'"
    id_key = mapping.get("id")
    samples = SplitSamples()
    ids: list[str] = []
    for i, row in enumerate(rows):
        label = record_label(i, row[id_key] if id_key else None, id_key, unit="row")
        sample_id = as_text(row[id_key]) if id_key else f"{split_name}-{i}"
        if not sample_id:
            raise UserError(f"{where} {label}: {id_key} is blank; expected the sample's id")
        ids.append(sample_id)
        answer = reference_text(row[mapping["answer"]])
        if answer is None:
            samples.skipped.append(label)
            continue
        fields: dict[str, Any] = {}
        if kind == "vqa":
            raw_type = row.get(mapping.get("answer_type", ""))
            try:
                fields["answer_type"] = closed_label(answer, raw_type, source.closed_rule)
            except ValueError:
                raise UserError(
                    f"{where} {label}: answer_type {raw_type!r} is neither OPEN nor CLOSED"
                ) from None
        for name, col in extra.items():
            value = row[col]
            fields[name] = split_cuis(value) if name == "cuis" else value.strip() if isinstance(value, str) else value
        samples.append(
            Sample(
                id=sample_id,
                images=[_image_ref(row[mapping["image"]], sample_id, local)],
                answer=answer,
                question=str(row[mapping["question"]]).strip() if kind == "vqa" else None,
                fields=fields,
            )
        )
    check_unique_ids(ids, range(len(ids)), where, id_key or "id", unit="row")  # skipped rows' ids count too
    return samples
