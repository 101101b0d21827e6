"""Task YAML files: schema validation with `file:line` errors, and the typed view of a task.

A task file says what a dataset is (kind, sources and their formats, field mapping, open/closed rule),
how to prompt for it (named prompt variants), how to decode, how to judge and how to break scores down.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.yaml_lines import line_of, load_yaml_with_lines

CLOSED_RULES = ("answer_type", "yes_no")


@cache
def task_schema() -> dict[str, Any]:
    return json.loads(resources.files("harness").joinpath("schemas/task.schema.json").read_text())


@dataclass
class SourceConfig:
    """One way to obtain the data: a hub dataset (`format: hf`) or a local release format.

    `sizes` holds the expected number of samples per split (keys as passed to --split, e.g. test, validation),
    from the release and the papers; `Task` warns when a loaded split differs.
    """

    name: str
    format: str
    path: str | None = None
    config: str | None = None
    revision: str | None = None
    splits: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    closed_rule: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    sizes: dict[str, int] = field(default_factory=dict)
    cluster_by: str | None = None  # field grouping dependent samples (per-image copies of a study) for the CIs

    @property
    def is_hub(self) -> bool:
        return self.format == "hf"

    def split_name(self, split: str) -> str:
        return self.splits.get(split, split)

    def expected_size(self, split: str) -> int | None:
        """The YAML's expected size of a split, found by its name or by the release split it maps to."""
        if split in self.sizes:
            return self.sizes[split]
        wanted = self.split_name(split)
        return next((n for key, n in self.sizes.items() if self.split_name(key) == wanted), None)


@dataclass
class TaskConfig:
    id: str
    version: str
    kind: str
    sources: list[SourceConfig]
    prompts: dict[str, str]
    metadata: dict[str, Any]
    path: Path
    description: str = ""
    aliases: list[str] = field(default_factory=list)
    test_split: str = "test"
    train_split: str = "train"
    generation: dict[str, Any] = field(default_factory=dict)
    judges: list[str] = field(default_factory=list)
    breakdowns: list[str] = field(default_factory=list)
    plugin: str = ""
    judges_line: int = 0  # where `judges:` is in the file, for errors about a judge id it names

    @property
    def credentialed(self) -> bool:
        return bool(self.metadata.get("credentialed", False))

    def source(self, name: str) -> SourceConfig:
        for src in self.sources:
            if src.name == name:
                return src
        known = ", ".join(s.name for s in self.sources)
        raise UserError(f"task '{self.id}' has no source '{name}'. Its sources: {known}")

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "kind": self.kind,
            "description": self.description,
            "sources": [
                {"name": s.name, "format": s.format, **({"path": s.path} if s.path else {})}
                for s in self.sources
            ],
            "prompts": sorted(self.prompts),
            "judges": self.judges,
            "credentialed": self.credentialed,
            "file": str(self.path),
            "plugin": self.plugin,
        }


def load_task_config(path: Path) -> TaskConfig:
    """Read and validate one task YAML; errors name the file, the line and the expectation."""
    import jsonschema

    data, lines = load_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}:1: a task file must be a YAML mapping (id, version, kind, sources, ...)")
    validator = jsonschema.Draft202012Validator(task_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
    if errors:
        err = errors[0]
        loc = tuple(err.absolute_path)
        field_name = ".".join(str(p) for p in loc) or "(top level)"
        raise UserError(f"{path}:{line_of(lines, loc)}: field '{field_name}': {_explain(err)}")
    sources = [SourceConfig(**src) for src in data["sources"]]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise UserError(f"{path}:{line_of(lines, ('sources',))}: source names must be unique, got {names}")
    _check_formats(sources, path, lines)
    if data["kind"] == "vqa":
        for i, src in enumerate(sources):
            if src.closed_rule is None:
                raise UserError(
                    f"{path}:{line_of(lines, ('sources', i))}: field 'sources.{i}.closed_rule': a vqa task must "
                    f"say how closed questions are decided, one of {', '.join(CLOSED_RULES)}"
                )
    for prompt_name, template in data["prompts"].items():
        if data["kind"] == "vqa" and "{question}" not in template:
            raise UserError(
                f"{path}:{line_of(lines, ('prompts', prompt_name))}: field 'prompts.{prompt_name}': "
                "a vqa prompt must contain the placeholder {question}"
            )
    fields = {k: v for k, v in data.items() if k != "sources"}
    return TaskConfig(sources=sources, path=path, judges_line=line_of(lines, ("judges",)), **fields)


def _check_formats(sources: list[SourceConfig], path: Path, lines: dict[Any, int]) -> None:
    """Each source names a known format and sets only options that format reads (a typo would be ignored)."""
    from harness.loaders import FORMATS, unknown_options

    for i, src in enumerate(sources):
        if src.format not in FORMATS:
            raise UserError(
                f"{path}:{line_of(lines, ('sources', i, 'format'))}: field 'sources.{i}.format': got "
                f"{src.format!r}, expected one of {', '.join(FORMATS)}"
            )
        unknown, allowed = unknown_options(src.format, src.options)
        if unknown:
            takes = f"allowed options: {', '.join(allowed)}" if allowed else "this format takes no options"
            raise UserError(
                f"{path}:{line_of(lines, ('sources', i, 'options', unknown[0]))}: field 'sources.{i}.options': "
                f"unknown option {', '.join(unknown)} for format '{src.format}'; {takes}"
            )


def _explain(err: Any) -> str:
    if err.validator == "required":
        return err.message.replace("is a required property", "is required but missing")
    if err.validator == "additionalProperties":
        return f"{err.message}; allowed fields: {', '.join(sorted(err.schema.get('properties', {})))}"
    if err.validator == "enum":
        return f"got {err.instance!r}, expected one of {', '.join(map(str, err.validator_value))}"
    if err.validator == "type":
        return f"got {err.instance!r}, expected type {err.validator_value}"
    return err.message
