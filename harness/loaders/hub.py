"""Loader for Hugging Face datasets (`format: hf`): a hub id, or a local copy of one given with --data-dir.

Hub: `datasets.load_dataset(source.path, name=source.config, revision=source.revision, split=...)`, read from the
user's Hugging Face cache when offline. Local copy: a folder in hub layout (parquet files such as
`data/test-00000-of-00001.parquet`; only the asked split's files, as `datasets` assigns files to splits, are
converted to Arrow, in the harness cache dir) or a `DatasetDict.save_to_disk` folder (`dataset_dict.json`). The
dataset stays Arrow-backed (memory-mapped): the text columns are read without the image column, and each ImageRef
gets a reader of its row's stored (undecoded) image bytes, so a split's images are read one at a time when opened or
fingerprinted instead of all being held in RAM (hub_images.py; a hub dataset's image paths are read only inside
the Hugging Face caches). Columns follow the source's `fields` mapping: id, image, question
(vqa), answer, answer_type (for closed_rule answer_type), plus any breakdown name; without an id column the id is
"<split>-<row index>" (stable for a pinned revision). The hub commit read is recorded (`SplitSamples.commit`); one
other than a pinned commit is refused (offline, datasets reads the latest cached copy whatever revision is asked). A
local copy inside the hub cache's `snapshots/<commit>` folder of the source's repository records that commit (a
pinned other one is noted, the copy being the user's choice). A blank or repeated id is an error naming the row; a
row whose reference (answer, report or caption) is null or blank is skipped (listed in the result's `skipped`; the
Task warns), since a hub dataset cannot be fixed by the user. A VQA question must be a non-empty string and an
answer a string or a number, as in the json formats. `--split val` (`valid`, `validate`, `dev`) runs as
`validation`, as for SLAKE; a local copy without a `validation` split but with one of those names (a `valid` split)
has that split read as `validation`. A damaged or empty local copy (an unreadable dataset_dict.json, state.json or
Arrow/parquet file, a split of 0 rows) is one line naming the file."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.loaders.common import (
    SplitSamples,
    as_text,
    check_unique_ids,
    closed_label,
    record_label,
)
from harness.loaders.hub_images import image_ref, image_sources
from harness.loaders.imageclef import split_cuis
from harness.loaders.mevf_json import answer_text, breakdown_value, question_text, read_json
from harness.loaders.slake import SPLIT_ALIASES as SPLIT_ALIASES  # the same other names of "validation"
from harness.paths import cache_dir
from harness.task_config import SourceConfig
from harness.types import Sample

OPTIONS: tuple[str, ...] = ()  # a hub source is described by path, config, revision and fields alone

CORE_KEYS = ("id", "image", "question", "answer", "answer_type")
_COMMIT = re.compile(r"[0-9a-f]{7,40}")  # a revision pinned to a commit (or its first 7+ hex digits)


def expected_files(source: SourceConfig, split: str) -> list[str]:
    return []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _load_hub(source: SourceConfig, split: str) -> Any:
    import datasets

    if not source.path:
        raise UserError(f"source '{source.name}' (hf) needs a `path` (hub dataset id) or --data-dir")
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity_error()  # its "Using the latest cached version" lines: said below, in one
    try:
        ds = datasets.load_dataset(source.path, name=source.config, revision=source.revision, split=split)
    except (ConnectionError, FileNotFoundError, ValueError, datasets.exceptions.DatasetsError) as exc:
        raise UserError(
            f"cannot load hub dataset '{source.path}' (revision {source.revision or 'default'}, split "
            f"'{split}'): {_first_line(exc)}. Download it while online, or pass --data-dir with a local copy"
        ) from None
    finally:
        datasets.logging.set_verbosity(verbosity)
    commit = loaded_commit(ds)
    pinned = pinned_commit(source)
    if commit and pinned and not commit.startswith(pinned):
        raise UserError(
            f"hub dataset '{source.path}' split '{split}': revision {pinned} was asked, but the copy in the Hugging "
            f"Face cache is commit {commit} (offline, datasets reads the latest cached copy whatever revision is "
            "asked); download the pinned revision while online, or pass --data-dir with a local copy of it"
        )
    if commit and not pinned and datasets.config.HF_HUB_OFFLINE:
        print(f"note: offline: hub dataset '{source.path}' split '{split}' read from the cached commit {commit} "
              f"(revision {source.revision or 'default'} cannot be resolved offline; recorded as task.source.commit)",
              file=sys.stderr)
    return ds


def pinned_commit(source: SourceConfig) -> str | None:
    """The commit (or its first 7+ hex digits) a source's `revision` pins, None for a branch or tag."""
    return source.revision if source.revision and _COMMIT.fullmatch(source.revision) else None


def loaded_commit(ds: Any) -> str | None:
    """The hub commit a dataset loaded through datasets' cache came from: the folder its Arrow files are in, which
    datasets names by the commit it resolved the revision to (online) or found cached (offline, whatever revision
    was asked); None when not known (a local copy)."""
    for entry in getattr(ds, "cache_files", None) or []:
        folder = Path(str(entry.get("filename", ""))).parent.name
        if _COMMIT.fullmatch(folder) and len(folder) == 40:
            return folder
    return None


def snapshot_commit(folder: Path, source: SourceConfig, split: str) -> str | None:
    """The commit of a --data-dir inside the hub cache's download of this source's repository
    (`.../datasets--<org>--<name>/snapshots/<commit>/`, as `huggingface-cli download` and `snapshot_download` lay
    it out): its files are that commit's. None for any other folder, or a snapshot of another repository."""
    repo_folder = "datasets--" + (source.path or "").replace("/", "--")
    for part in (folder.resolve(), *folder.resolve().parents):
        if part.parent.name == "snapshots" and len(part.name) == 40 and _COMMIT.fullmatch(part.name):
            if part.parent.parent.name.lower() != repo_folder.lower():
                return None
            pinned = pinned_commit(source)
            if pinned and not part.name.startswith(pinned):
                print(f"note: --data-dir {folder} is commit {part.name} of '{source.path}', not the pinned revision "
                      f"{pinned} (split '{split}' is read as found; recorded as task.source.commit)", file=sys.stderr)
            return part.name
    return None


def _load_local(source: SourceConfig, split: str, data_dir: Path) -> Any:
    import datasets

    if not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir} is not a directory (expected a Hugging Face dataset folder)")
    if (data_dir / "dataset_dict.json").is_file():
        return _load_saved(data_dir, split)
    if not any(data_dir.glob("**/*.parquet")):
        raise UserError(
            f"--data-dir {data_dir} is not a Hugging Face dataset folder: expected parquet files in hub layout "
            f"(data/{split}-00000-of-00001.parquet) or a DatasetDict saved with save_to_disk (dataset_dict.json)"
        )
    cache = str(cache_dir() / "hf-datasets")
    try:
        # The builder only resolves which files make which split (README `configs` or the hub file naming);
        # loading with just this split's files keeps the other splits from being converted and cached.
        found = datasets.load_dataset_builder(str(data_dir), name=source.config, cache_dir=cache).config.data_files
        chosen = _present_split(split, found or {}, str(data_dir))
        if chosen is None:
            raise UserError(
                f"cannot read {data_dir} as a Hugging Face dataset (split '{split}'): Unknown split \"{split}\"; "
                f"its files give {_describe_splits(found or {}, data_dir)}"
            )
        files = list(found[chosen])
        _refuse_empty_parquet(files, split, data_dir)
        # loaded under the asked (canonical) name, so a copy's "valid" split runs as "validation"
        return datasets.load_dataset(
            str(data_dir), name=source.config, data_files={split: files}, split=split, cache_dir=cache
        )
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetsError) as exc:
        missing = _missing_splits(data_dir, source.config)
        if missing:
            name, patterns = missing[0]
            raise UserError(
                f"{data_dir} lacks the files of split '{name}' ({', '.join(patterns)}, as its README.md `configs` "
                "say): copy them from the hub, or remove that split from README.md"
            ) from None
        raise UserError(
            f"cannot read {data_dir} as a Hugging Face dataset (split '{split}'): {_first_line(exc)}"
        ) from None


def _present_split(split: str, available: Any, where: str) -> str | None:
    """The copy's name of `split`: itself when present, else the one other name of it the copy has ("valid" for
    "validation", as SPLIT_ALIASES say), else None. Two such names are an error: which one is meant is unknown."""
    names = [str(name) for name in available]
    if split in names:
        return split
    aliases = [name for name in names if SPLIT_ALIASES.get(name.casefold()) == split]
    if len(aliases) > 1:
        raise UserError(f"{where} has no split '{split}' but both {' and '.join(aliases)}, other names of it; "
                        f"rename the one meant to '{split}'")
    return aliases[0] if aliases else None


def _load_saved(data_dir: Path, split: str) -> Any:
    """One split of a `DatasetDict.save_to_disk` folder (only that split is opened); a damaged or empty copy is
    one line naming the folder or file, not datasets' traceback."""
    import datasets
    import pyarrow

    index = data_dir / "dataset_dict.json"
    listed = read_json(index)
    names = listed.get("splits") if isinstance(listed, dict) else None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise UserError(f"{index}: expected {{\"splits\": [...]}} (the split names, as save_to_disk writes it)")
    chosen = _present_split(split, names, str(index))
    if chosen is None:
        raise UserError(f"{index} has no split '{split}'; its splits: {', '.join(names)}")
    folder = data_dir / chosen
    state = folder / "state.json"
    if state.is_file():
        saved = read_json(state)
        if isinstance(saved, dict) and saved.get("_data_files") == []:
            raise UserError(f"{state}: split '{chosen}' is empty (0 rows, no data file); expected its samples")
    try:
        ds = datasets.Dataset.load_from_disk(str(folder))
    except (OSError, ValueError, KeyError, IndexError, TypeError, pyarrow.ArrowException) as exc:
        raise UserError(
            f"{folder}: cannot load split '{chosen}' of the save_to_disk copy ({_first_line(exc)}); save or copy "
            "the dataset again"
        ) from None
    if len(ds) == 0:
        raise UserError(f"{folder}: split '{chosen}' is empty (0 rows); expected its samples")
    return ds


def _refuse_empty_parquet(files: list[Any], split: str, data_dir: Path) -> None:
    """A split whose parquet files hold no row is said to be empty (datasets only says "An error occurred while
    generating the dataset"); an unreadable parquet file is named."""
    import pyarrow
    import pyarrow.parquet as pq

    paths = [Path(str(f)) for f in files]
    if not paths or not all(p.suffix == ".parquet" and p.is_file() for p in paths):
        return  # other formats (csv, json) or remote files: datasets says what is wrong
    rows = 0
    for path in paths:
        try:
            rows += pq.read_metadata(str(path)).num_rows
        except (OSError, pyarrow.ArrowException) as exc:
            raise UserError(f"{path}: not a readable parquet file of split '{split}' ({_first_line(exc)}); copy it "
                            "again") from None
    if rows == 0:
        shown = ", ".join(str(p) for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        raise UserError(f"{shown}: split '{split}' of {data_dir} is empty (0 rows); expected its samples")


def _missing_splits(data_dir: Path, config: str | None) -> list[tuple[str, list[str]]]:
    """The splits that README.md's `configs` (for `config`, or the default one) list with path patterns that
    match no file in data_dir, with their patterns; [] when there is no such README or every split has files."""
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    try:
        configs = MetadataConfigs.from_dataset_card_data(DatasetCard.load(data_dir / "README.md").data)
        chosen = configs.get(config or configs.get_default_config_name() or "", {})
    except Exception:  # noqa: BLE001 - no or unreadable README: datasets' own message is shown instead
        return []
    missing = []
    for entry in chosen.get("data_files") or []:
        if not isinstance(entry, dict) or "split" not in entry:
            continue
        patterns = [entry.get("path")] if isinstance(entry.get("path"), str) else list(entry.get("path") or [])
        try:
            found = any(any(data_dir.glob(str(pattern))) for pattern in patterns)
        except (ValueError, NotImplementedError):  # an absolute or remote (hf://) pattern: not a missing copy
            continue
        if not found:
            missing.append((str(entry["split"]), [str(pattern) for pattern in patterns]))
    return missing


def _describe_splits(data_files: Any, data_dir: Path) -> str:
    """Each split found and its files, for an error: "split test (data/test-00000-of-00002.parquet and 1 more)"."""
    root = data_dir.resolve()
    parts = []
    for name, files in data_files.items():
        first = Path(str(files[0])) if files else None
        shown = str(first.relative_to(root)) if first and first.is_relative_to(root) else str(first)
        more = f" and {len(files) - 1} more" if len(files) > 1 else ""
        parts.append(f"split {name} ({shown}{more})")
    return ", ".join(parts) or "no split"


def load(source: SourceConfig, split: str, data_dir: Path | None, kind: str) -> SplitSamples:
    import datasets
    import pyarrow

    split_name = source.split_name(split)
    local = Path(data_dir).expanduser() if data_dir is not None else None
    ds = _load_local(source, split_name, local) if local is not None else _load_hub(source, split_name)
    pyarrow.default_memory_pool().release_unused()  # a parquet->Arrow conversion's freed buffers (~2x the split)
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
    image_col = mapping["image"]
    if isinstance(ds.features.get(image_col), datasets.Image):
        ds = ds.cast_column(image_col, datasets.Image(decode=False))
    extra = {name: col for name, col in mapping.items() if name not in CORE_KEYS and col in columns}
    images = ds.select_columns([image_col])
    where = f"{local or source.path} split '{split_name}'"
    outside: list[str] = []
    try:  # the first read of every row batch: a damaged Arrow file fails here
        sources = image_sources(ds, image_col, local, outside)
    except (OSError, pyarrow.ArrowException) as exc:
        raise UserError(f"{where}: cannot read its rows ({_first_line(exc)}); save or copy the dataset again") from None
    if outside:
        print(f"warning: {where}: {len(outside)} rows name their image by a path outside the Hugging Face cache "
              f"(e.g. {outside[0][:200]}), a file of the machine that made the data set: not read here, so those "
              "samples fail (pass --data-dir with a copy that holds the images)", file=sys.stderr)
    text_cols = {col for name, col in mapping.items() if name != "image" and col in columns}
    rows = ds.select_columns([c for c in ds.column_names if c in text_cols])  # iterated lazily, without images
    id_key = mapping.get("id")
    samples = SplitSamples()
    ids: list[str] = []
    for i, row in enumerate(rows):
        label = record_label(i, row[id_key] if id_key else None, id_key, unit="row")
        sample_id = as_text(row[id_key]) if id_key else f"{split_name}-{i}"
        if not sample_id:
            raise UserError(f"{where} {label}: {id_key} is blank; expected the sample's id")
        ids.append(sample_id)
        answer = answer_text(row[mapping["answer"]], f"{where} {label}", mapping["answer"])
        if answer is None:
            samples.skipped.append(label)
            continue
        question = question_text(row[mapping["question"]], f"{where} {label}", mapping["question"]) \
            if kind == "vqa" else None
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
            fields[name] = split_cuis(value) if name == "cuis" else breakdown_value(value, f"{where} {label}: "
                                                                                         f"column {col} is")
        samples.append(
            Sample(
                id=sample_id,
                images=[image_ref(sources[i], sample_id, images, image_col, i)],
                answer=answer,
                question=question,
                fields=fields,
            )
        )
    check_unique_ids(ids, range(len(ids)), where, id_key or "id", unit="row")  # skipped rows' ids count too
    samples.commit = snapshot_commit(local, source, split_name) if local is not None else loaded_commit(ds)
    return samples
