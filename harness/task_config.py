"""Task YAML files: schema validation with `file:line` errors, and the typed view of a task.

A task file says what a dataset is (kind, sources and their formats, field mapping, open/closed rule),
how to prompt for it (named prompt variants), how to decode, how to judge and how to break scores down.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from harness.errors import UserError, close_hint
from harness.yaml_lines import line_of, load_yaml_with_lines

CLOSED_RULES = ("answer_type", "yes_no")
# What `Task.build_request` fills into a prompt template; anything else would fail only at run time.
PROMPT_PLACEHOLDERS = ("question",)


@cache
def task_schema() -> dict[str, Any]:
    return json.loads(resources.files("harness").joinpath("schemas/task.schema.json").read_text())


#: `cluster_by: images`: samples showing the same images (their names, as predictions.jsonl records them) form one
#: cluster: the questions asked about one image are not independent. `cluster_by: image_content` (fingerprint.
#: IMAGE_CONTENT): samples showing byte-identical images, for sources whose images have no names (hub copies)
IMAGES_CLUSTER = "images"


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
    field_lines: dict[str, int] = field(default_factory=dict)  # top-level field -> its line, for errors

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
    # shallowest first; in one mapping an unknown key before a missing one (`prompt:` for `prompts:` is both)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.path)),
                                                                 e.validator != "additionalProperties"))
    if errors:
        loc, explanation = _locate(errors[0])
        field_name = ".".join(str(p) for p in loc) or "(top level)"
        raise UserError(f"{path}:{line_of(lines, loc)}: field '{field_name}': {explanation}")
    sources = [SourceConfig(**src) for src in data["sources"]]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise UserError(f"{path}:{line_of(lines, ('sources',))}: source names must be unique, got {names}")
    _check_formats(sources, path, lines)
    _check_size_splits(sources, data, path, lines)
    if data["kind"] == "vqa":
        for i, src in enumerate(sources):
            if src.closed_rule is None:
                raise UserError(
                    f"{path}:{line_of(lines, ('sources', i))}: field 'sources.{i}.closed_rule': a vqa task must "
                    f"say how closed questions are decided, one of {', '.join(CLOSED_RULES)}"
                )
    generation = data.get("generation", {})
    if "do_sample" in generation and generation["do_sample"] != (generation.get("temperature", 0) > 0):
        raise UserError(
            f"{path}:{line_of(lines, ('generation', 'do_sample'))}: field 'generation.do_sample': "
            f"{str(generation['do_sample']).lower()} with temperature {generation.get('temperature', 0)}; the "
            "temperature alone decides (0: greedy, above 0: sampling): drop do_sample or change the temperature"
        )
    for prompt_name, template in data["prompts"].items():
        problem = prompt_problem(template, data["kind"])
        if problem:
            raise UserError(
                f"{path}:{line_of(lines, ('prompts', prompt_name))}: field 'prompts.{prompt_name}': {problem}"
            )
    fields = {k: v for k, v in data.items() if k != "sources"}
    field_lines = {key: line_of(lines, (key,)) for key in data}
    return TaskConfig(sources=sources, path=path, judges_line=line_of(lines, ("judges",)), field_lines=field_lines,
                      **fields)


def prompt_problem(template: str, kind: str) -> str | None:
    """Why a prompt template would fail when filled (or lacks {question} in a vqa task), or None if it is fine."""
    import string

    allowed = ", ".join("{" + name + "}" for name in PROMPT_PLACEHOLDERS)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return _brace_problem(str(exc), template)
    names = []
    nested = [item for _, _, spec, _ in parsed if spec for item in string.Formatter().parse(spec)]
    for _, name, _, _ in parsed + nested:
        if name is None:
            continue
        if name not in PROMPT_PLACEHOLDERS:
            what = "an empty placeholder {}" if name == "" else f"unknown placeholder {{{name}}}"
            return (f"{what}; allowed placeholders: {allowed} (write {{{{ and }}}} for a literal brace)")
        names.append(name)
    try:  # what the parse lets through: a bad spec such as {question:d} or {question!z}
        template.format(**{name: "Is there a lesion?" for name in PROMPT_PLACEHOLDERS})
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
        return f"cannot be filled ({type(exc).__name__}: {exc}); allowed placeholders: {allowed}"
    if kind == "vqa" and "question" not in names:
        return "a vqa prompt must contain the placeholder {question}"
    if kind != "vqa" and "question" in names:
        return f"a {kind} task has no question: {{question}} would be filled with nothing"
    return None


def _brace_problem(message: str, template: str) -> str:
    """Name the brace that `str.format` chokes on, where it is, and how to write a literal one."""
    index, brace = _stray_brace(template)
    if index is None:
        return f"not a valid template ({message}); write {{{{ and }}}} for a literal brace"
    near = template[max(0, index - 20):index + 21]
    if brace == "}":
        return f"stray '}}' at character {index + 1} (near {near!r}); write }}}} for a literal brace"
    return (f"stray '{{' at character {index + 1} (near {near!r}); close the placeholder (e.g. {{question}}) "
            "or write {{ for a literal brace")


def _stray_brace(template: str) -> tuple[int | None, str]:
    """The index of the first brace that is neither doubled nor part of a {placeholder}, and that brace."""
    i = 0
    while i < len(template):
        char = template[i]
        if char in "{}" and template[i + 1:i + 2] == char:
            i += 2
        elif char == "}":
            return i, "}"
        elif char == "{":
            depth, k = 1, i + 1
            while k < len(template) and depth:
                depth += {"{": 1, "}": -1}.get(template[k], 0)
                k += 1
            if depth:
                return i, "{"
            i = k
        else:
            i += 1
    return None, ""


def _check_formats(sources: list[SourceConfig], path: Path, lines: dict[Any, int]) -> None:
    """Each source names a known format and sets only options that format reads (a typo would be ignored)."""
    from harness.loaders import FORMATS, unknown_fields, unknown_options

    for i, src in enumerate(sources):
        if src.format not in FORMATS:
            raise UserError(
                f"{path}:{line_of(lines, ('sources', i, 'format'))}: field 'sources.{i}.format': got "
                f"{src.format!r}{close_hint([str(src.format)], FORMATS)}, expected one of {', '.join(FORMATS)}"
            )
        for key, (unknown, allowed), what, none in (
                ("options", unknown_options(src.format, src.options), "option", "this format takes no options"),
                ("fields", unknown_fields(src.format, src.fields), "key", "this format maps no fields")):
            if unknown:
                takes = f"allowed {what}s: {', '.join(allowed)}" if allowed else none
                plain = " (it has no breakdown fields)" if key == "fields" else ""
                raise UserError(
                    f"{path}:{line_of(lines, ('sources', i, key, unknown[0]))}: field 'sources.{i}.{key}': "
                    f"unknown {what} {', '.join(unknown)}{close_hint(unknown[:1], allowed or ())} for format "
                    f"'{src.format}'{plain}; {takes}"
                )


def _locate(err: Any) -> tuple[tuple[str | int, ...], str]:
    """Where a schema error is (a field path) and what to say. A misspelt key is named at its own line with the
    closest allowed key; a required key that is missing is named at the line of a key that looks like its typo
    (`licence:` for `license:`), else at its parent's."""
    loc = tuple(err.absolute_path)
    known = sorted(err.schema.get("properties", {}))
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        unknown = [key for key in err.instance if key not in known]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            missing = close and close[0] in err.schema.get("required", ()) and close[0] not in err.instance
            hint = f" (did you mean '{close[0]}'?{' it is required but missing' if missing else ''})" if close else ""
            return loc + (str(key),), f"unknown field{hint}; allowed fields: {', '.join(known)}"
    if err.validator == "required" and isinstance(err.instance, dict):
        wanted = next((str(key) for key in err.validator_value if key not in err.instance), "")
        strays = [str(key) for key in err.instance if key not in known]
        close = difflib.get_close_matches(wanted, strays, n=1, cutoff=0.6)
        if close:
            return loc + (close[0],), f"unknown field (did you mean '{wanted}'? it is required but missing)"
    return loc, _explain(err)


def _explain(err: Any) -> str:
    if err.validator == "required":  # every key missing there at once, not one per attempt
        given = err.instance if isinstance(err.instance, dict) else {}
        missing = [repr(key) for key in err.validator_value if key not in given]
        if len(missing) > 1:
            return f"{', '.join(missing)} are required but missing"
        return err.message.replace("is a required property", "is required but missing")
    if err.validator == "additionalProperties":
        return f"{err.message}; allowed fields: {', '.join(sorted(err.schema.get('properties', {})))}"
    if err.validator == "enum":
        return f"got {err.instance!r}, expected one of {', '.join(map(str, err.validator_value))}"
    if err.validator == "type":
        return f"got {err.instance!r}, expected type {err.validator_value}"
    return err.message


def _check_size_splits(sources: list[SourceConfig], data: dict[str, Any], path: Path, lines: list[str]) -> None:
    """A `sizes` key must name a split (a typo such as `tset` would silently turn the size check off)."""
    for i, src in enumerate(sources):
        files = src.options.get("files")
        known = {"train", "validation", "test", data.get("test_split"), data.get("train_split"), *src.splits,
                 *src.splits.values(), *(files if isinstance(files, dict) else ())} - {None}
        for key in src.sizes:
            if key not in known:
                raise UserError(f"{path}:{line_of(lines, ('sources', i, 'sizes'))}: field 'sources.{i}.sizes': "
                                f"'{key}' is not a split of this source (expected one of {', '.join(sorted(known))})")
