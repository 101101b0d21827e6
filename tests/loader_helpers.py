"""Helpers shared by the loader tests: a Task over a data folder, the one-line error of loading a split, and an
in-place edit of a JSON file that a format writer wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.errors import UserError
from harness.plugin_manager import tasks
from harness.task import Task


def task(task_id: str, data_dir: Path, source: str | None = None) -> Task:
    return Task(tasks().get(task_id), source=source, data_dir=data_dir)


def load_error(task_id: str, data_dir: Path, split: str = "test", source: str | None = None) -> str:
    """The UserError of loading `split`, asserted to be one line."""
    with pytest.raises(UserError) as err:
        task(task_id, data_dir, source).samples(split)
    message = str(err.value)
    assert "\n" not in message
    return message


def edit_json(path: Path, change) -> Any:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return data
