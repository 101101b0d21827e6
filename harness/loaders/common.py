"""Helpers shared by the format loaders: required-file checks, record labels, reference texts, unique ids,
case-insensitive matching, the open/closed decision and the list type loaders return.

Bad records give one-line `UserError`s that name the file, the record (its position in the file, and its id
where the format has one) and the field, so a user can find the line to fix. A record whose reference (answer,
report, caption) is null or blank is not an error: it is skipped and listed in `SplitSamples.skipped`, and the
Task prints one warning per split (a hub dataset or a released train split cannot be edited by the user).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

from harness.errors import UserError

YES_NO = {"yes", "no"}


def require_data_dir(data_dir: Path | None, source_name: str, expected: list[str]) -> Path:
    """Check that a local source's files exist; the error says which files were expected where."""
    if data_dir is None:
        raise UserError(
            f"source '{source_name}' reads local files: pass --data-dir pointing at a folder with "
            f"{', '.join(expected)}"
        )
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir} is not a directory (expected {', '.join(expected)} inside it)")
    missing = [name for name in expected if not (data_dir / name).exists()]
    if missing:
        raise UserError(
            f"--data-dir {data_dir} lacks {', '.join(missing)} (source '{source_name}' expects "
            f"{', '.join(expected)} there)"
        )
    return data_dir


def as_text(value: Any) -> str:
    """A scalar as stripped text: real releases store some answers and ids as JSON numbers (VQA-RAD); None, NaN and
    infinity (an empty cell written as NaN) -> "", so a record without its reference is skipped as a blank one."""
    if value is None or type(value).__name__ == "NAType" or (isinstance(value, Real) and not math.isfinite(value)):
        return ""  # NAType: pandas' missing value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def norm(value: Any) -> str:
    """Text compared case-insensitively and without surrounding whitespace ("TEST_FREEFORM " == "test_freeform")."""
    return as_text(value).casefold()


def record_label(index: int, record_id: Any = None, id_key: str | None = None, unit: str = "record") -> str:
    """'record 19 (qid 20)': the 0-based position in the file and, when known, the record's id."""
    shown = as_text(record_id)
    return f"{unit} {index} ({id_key} {shown})" if id_key and shown else f"{unit} {index}"


class SplitSamples(list):  # type: ignore[type-arg]
    """The samples of one split (a plain list of Sample) plus `skipped`: the labels ("record 7 (qid 8)") of the
    records left out because their reference is null or blank, in file order; and `commit`: the hub commit they
    were read from, where known (the hub loader)."""

    def __init__(self, samples: Iterable[Any] = (), skipped: Iterable[str] = ()) -> None:
        super().__init__(samples)
        self.skipped: list[str] = list(skipped)
        self.commit: str | None = None


def reference_text(value: Any) -> str | None:
    """The reference answer / report / caption of a record as stripped text, or None when it is null or blank.

    A blank reference would be scored against every prediction (an empty string is a substring of any answer)
    and would teach a fine-tuned model to answer nothing, so the caller skips such a record (see SplitSamples).
    """
    return as_text(value) or None


def check_unique_ids(ids: Sequence[str], positions: Iterable[int], where: str, id_key: str,
                     unit: str = "record") -> None:
    """Refuse a repeated id: results, resume and fingerprints are keyed by sample id."""
    first: dict[str, int] = {}
    for sample_id, pos in zip(ids, positions):
        if sample_id in first:
            raise UserError(
                f"{where}: {id_key} '{sample_id}' appears twice ({unit}s {first[sample_id]} and {pos}); "
                "expected one record per id"
            )
        first[sample_id] = pos


def closed_label(answer: str, answer_type: Any, rule: str | None) -> str:
    """Decide OPEN/CLOSED by the source's named rule: the dataset's answer_type, or a yes/no answer (case, spaces and
    end punctuation aside: "Yes." is closed, as every exact-match convention reads it as yes)."""
    if rule == "yes_no":
        return "CLOSED" if answer.strip().strip(".!?,;:").strip().lower() in YES_NO else "OPEN"
    label = str(answer_type or "").strip().upper()
    if label not in ("OPEN", "CLOSED"):
        raise ValueError(f"answer_type {answer_type!r} is neither OPEN nor CLOSED")
    return label


def inside(root: Path, rel: str, where: str) -> Path:
    """`root / rel` for an image path a data file gives; one that is absolute or climbs out with '..' is a
    UserError naming the record: a dataset copy from elsewhere must not make the harness read (hash, send to an API
    model) files outside its folder. (A symlink the user made inside the folder is followed.)"""
    parts = Path(rel.replace("\\", "/")).parts
    if Path(rel).is_absolute() or rel.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise UserError(f"{where}: image path {rel!r} leaves the data folder (absolute, or with '..'); expected a "
                        "path relative to it")
    return root / rel

