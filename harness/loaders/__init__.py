"""Dataset loaders: one module per upstream format, looked up by the `format` of a task source.

A loader module exposes
    load(source: SourceConfig, split: str, data_dir: Path | None, kind: str) -> list[Sample]
(a `common.SplitSamples`, whose `skipped` labels the records left out for a null or blank reference; the Task
warns about them) and, for local formats,
    expected_files(source: SourceConfig, split: str) -> list[str]   # relative to the data dir
so that a missing data dir gets an error that lists which files were expected where, and
    OPTIONS: tuple[str, ...]   # the keys its sources may set under `options`
so that a misspelt option is an error at the task file's line instead of a silently ignored setting. Optionally
    SPLIT_ALIASES: dict[str, str]   # other names of a split -> its canonical name ("val" -> "validation")
so that one split typed three ways is one run (one run id, one leaderboard row), not three.
Samples carry `fields["answer_type"]` as "OPEN"/"CLOSED" for VQA (decided by the source's closed_rule).
Loaders import heavy libraries (datasets) inside `load` only.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from harness.errors import unknown_name

FORMATS: dict[str, str] = {
    "hf": "harness.loaders.hub",
    "vqa-rad-official": "harness.loaders.vqa_rad",
    "mevf-json": "harness.loaders.mevf_json",
    "slake-json": "harness.loaders.slake",
    "pathvqa-pickle": "harness.loaders.pathvqa",
    "r2gen-json": "harness.loaders.r2gen",
    "imageclef-csv": "harness.loaders.imageclef",
    "phantom": "harness.loaders.phantom",
}


def loader_for(fmt: str) -> ModuleType:
    if fmt not in FORMATS:
        raise unknown_name("data format", fmt, FORMATS)
    return importlib.import_module(FORMATS[fmt])


def unknown_options(fmt: str, options: dict[str, object]) -> tuple[list[str], tuple[str, ...]]:
    """(option keys the format does not read, the ones it does) for a source's `options`."""
    allowed = tuple(loader_for(fmt).OPTIONS)
    return sorted(set(options) - set(allowed)), allowed


def unknown_fields(fmt: str, fields: dict[str, object]) -> tuple[list[str], tuple[str, ...] | None]:
    """(keys of a source's `fields` the format does not read, the ones it does); None: any name (a breakdown)."""
    allowed = getattr(loader_for(fmt), "FIELD_KEYS", None)
    return ([], None) if allowed is None else (sorted(set(fields) - set(allowed)), tuple(allowed))


def canonical_split(fmt: str, split: str) -> str:
    """The canonical name of a split for a format (its SPLIT_ALIASES), or the split itself."""
    return dict(getattr(loader_for(fmt), "SPLIT_ALIASES", {})).get(split, split)
