"""Helpers shared by the format loaders: required-file checks, answer text, open/closed decision."""

from __future__ import annotations

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


def answer_text(value: Any) -> str:
    """Answers in real releases are sometimes JSON numbers (VQA-RAD): keep them as their text."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def closed_label(answer: str, answer_type: Any, rule: str | None) -> str:
    """Decide OPEN/CLOSED by the source's named rule: the dataset's answer_type, or a yes/no answer."""
    if rule == "yes_no":
        return "CLOSED" if answer.strip().lower() in YES_NO else "OPEN"
    label = str(answer_type or "").strip().upper()
    if label not in ("OPEN", "CLOSED"):
        raise ValueError(f"answer_type {answer_type!r} is neither OPEN nor CLOSED")
    return label
