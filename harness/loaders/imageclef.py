"""Loader for the ROCOv2 / ImageCLEFmedical caption release (Rückert et al., Scientific Data 2024).

Layout (defaults, each overridable by a source option; `{split}` and `{id}` are filled in):
    captions  "{split}_captions.csv"   header ID,Caption
    concepts  "{split}_concepts.csv", then "concepts.csv"   header ID,CUIs with the CUIs joined by ';' (optional)
    image     "{split}/{id}.jpg", then "images/{id}.jpg"   (the first file that exists is used)
Splits: train / valid / test. The caption is the reference; `fields["cuis"]` holds the image's UMLS CUIs.
Column names follow the source's `fields` mapping (id, answer, cuis). The CSVs are parsed strictly: a malformed
record (an unbalanced quote), a row with more or fewer fields than the header, an empty or repeated id, or an id
that does not look like a ROCOv2 image id (option `id_pattern`, default `ROCOv2_2023_train_000001`-like) is an
error naming the physical line where the record starts. A row with an empty caption is skipped (listed in the
result's `skipped` as "line N (ID x)"; the Task warns). A missing concepts file, where the source's YAML maps
`fields.cuis` or sets `options.concepts` (ROCOv2 does; a caption task of one's own may have no concepts), or
caption rows without a concepts row, give one `warning:` line per split; a sample without an image file fails alone,
naming the paths that were tried.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

from harness.errors import UserError
from harness.loaders.common import SplitSamples, inside, record_label, reference_text, require_data_dir
from harness.task_config import SourceConfig
from harness.types import ImageRef, Sample

CAPTIONS = "{split}_captions.csv"
CONCEPTS = ("{split}_concepts.csv", "concepts.csv")
IMAGE = ("{split}/{id}.jpg", "images/{id}.jpg")
ID_PATTERN = r"ROCOv2_\d{4}_[A-Za-z]+_\d+"
OPTIONS = ("captions", "concepts", "image", "id_pattern")
FIELD_KEYS = ("id", "answer", "cuis")


def _option(source: SourceConfig, key: str, default: str, split: str) -> str:
    return _format(source, key, str(source.options.get(key, default)), split)


def _format(source: SourceConfig, key: str, pattern: str, split: str) -> str:
    try:
        return pattern.format(split=source.split_name(split), id="{id}")
    except (KeyError, IndexError, ValueError):
        raise UserError(
            f"source '{source.name}': options.{key} {pattern!r} may only use the placeholders {{split}} and {{id}}"
        ) from None


def _options(source: SourceConfig, key: str, default: tuple[str, ...], split: str) -> list[str]:
    """A path option given as one pattern or a list of them (tried in order), formatted for the split."""
    value = source.options.get(key, list(default))
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
        raise UserError(f"source '{source.name}': options.{key} must be a path pattern or a list of them")
    return [_format(source, key, p, split) for p in patterns]


def expected_files(source: SourceConfig, split: str) -> list[str]:
    return [_option(source, "captions", CAPTIONS, split)]


Row = tuple[int, dict[str, str]]  # (physical line where the record starts, column -> value)


def _read_csv(path: Path, columns: list[str]) -> list[Row]:
    """The records of a CSV with the physical line each starts on; `columns` are required in every row."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, strict=True)
            header = next(reader, [])
            missing = [c for c in columns if c not in header]
            if missing:
                raise UserError(
                    f"{path}:1: header lacks column {', '.join(missing)} (has {', '.join(header) or 'nothing'}); "
                    "map other names with the source's `fields`"
                )
            need = max(header.index(c) for c in columns) + 1
            rows: list[Row] = []
            while True:
                start = reader.line_num + 1
                try:
                    values = next(reader)
                except StopIteration:
                    return rows
                except csv.Error as exc:
                    raise UserError(
                        f"{path}:{start}: malformed CSV record ({exc}, reading line {reader.line_num}); expected "
                        f"{','.join(header)} with any value holding a comma, quote or line break in double quotes"
                    ) from None
                if not values:
                    continue  # a blank line
                if len(values) > len(header) or len(values) < need:
                    raise UserError(
                        f"{path}:{start}: {len(values)} field{'s' if len(values) != 1 else ''}, expected "
                        f"{len(header)} ({','.join(header)}); a value holding a comma must be in double quotes"
                    )
                # a line break inside a quoted value as \n, whatever the file's (a copy saved on Windows is the
                # same data, with the same fingerprint)
                values = [v.replace("\r\n", "\n").replace("\r", "\n") for v in values]
                rows.append((start, dict(zip(header, values))))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _checked_id(path: Path, line: int, key: str, value: str | None, pattern: re.Pattern[str]) -> str:
    image_id = (value or "").strip()
    if not image_id:
        raise UserError(f"{path}:{line}: empty {key}")
    if not pattern.fullmatch(image_id):
        raise UserError(
            f"{path}:{line}: {key} {image_id[:60]!r} does not look like a ROCOv2 image id (expected one matching "
            f"{pattern.pattern}, e.g. ROCOv2_2023_train_000001; set the source's options.id_pattern for other ids)"
        )
    return image_id


def split_cuis(value: object) -> list[str]:
    """CUIs as a list: ROCOv2's CSV joins them with ';', the hub copy stores a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [c.strip() for c in value.split(";") if c.strip()]
    return [str(c).strip() for c in value]  # type: ignore[attr-defined]


def _image(root: Path, patterns: list[str], image_id: str) -> ImageRef:
    """The first candidate image file that exists; when none does, a reference whose reading fails naming all
    the paths tried (the sample fails alone; the run's image checks still see the first candidate's path)."""
    rels = [p.format(id=image_id) for p in patterns]
    for rel in rels:
        inside(root, rel, f"image id {image_id!r}")
    for rel in rels:
        if (root / rel).is_file():
            return ImageRef(name=rel, path=root / rel)
    tried = ", ".join(str(root / rel) for rel in rels)

    def missing() -> bytes:
        raise FileNotFoundError(f"no image file found (tried {tried})")

    return ImageRef(name=rels[0], path=root / rels[0], reader=missing)


def _concepts(source: SourceConfig, split: str, root: Path, mapping: dict[str, str],
              pattern: re.Pattern[str]) -> tuple[Path | None, dict[str, list[str]] | None, list[Path]]:
    """(the concepts file read, its CUIs by id; or None, None) and the candidate paths."""
    candidates = [root / name for name in _options(source, "concepts", CONCEPTS, split)]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return None, None, candidates
    cuis: dict[str, list[str]] = {}
    lines: dict[str, int] = {}
    for line, r in _read_csv(path, [mapping["id"], mapping["cuis"]]):
        image_id = _checked_id(path, line, mapping["id"], r[mapping["id"]], pattern)
        if image_id in lines:  # the later row silently replaced the first's concepts
            raise UserError(f"{path}:{line}: {mapping['id']} '{image_id}' appears twice (lines {lines[image_id]} and "
                            f"{line}); expected one row of concepts per image")
        lines[image_id] = line
        cuis[image_id] = split_cuis(r[mapping["cuis"]])
    return path, cuis, candidates


def _merged_record(caption: str, pattern: re.Pattern[str]) -> str | None:
    """A line inside a multi-line caption that starts like a record of its own (an unbalanced quote merged it)."""
    return next((ln for ln in caption.splitlines()[1:] if re.match(rf"\s*(?:{pattern.pattern}),", ln)), None)


def load(source: SourceConfig, split: str, data_dir: Path | None, kind: str) -> SplitSamples:
    captions_name = _option(source, "captions", CAPTIONS, split)
    root = require_data_dir(data_dir, source.name, [captions_name])
    mapping = {"id": "ID", "answer": "Caption", "cuis": "CUIs", **source.fields}
    try:
        id_pattern = re.compile(str(source.options.get("id_pattern", ID_PATTERN)))
    except re.error as exc:
        raise UserError(f"source '{source.name}': options.id_pattern is not a regular expression ({exc})") from None
    captions_path = root / captions_name
    rows = _read_csv(captions_path, [mapping["id"], mapping["answer"]])
    concepts_path, cuis, concept_candidates = _concepts(source, split, root, mapping, id_pattern)
    image_patterns = _options(source, "image", IMAGE, split)
    samples = SplitSamples()
    seen: dict[str, int] = {}
    without_concepts = 0
    for line, row in rows:
        image_id = _checked_id(captions_path, line, mapping["id"], row[mapping["id"]], id_pattern)
        if image_id in seen:
            raise UserError(
                f"{captions_path}:{line}: {mapping['id']} '{image_id}' appears twice (lines {seen[image_id]} and "
                f"{line}); expected one row per image"
            )
        seen[image_id] = line
        merged = _merged_record(row[mapping["answer"]], id_pattern)
        if merged is not None:
            raise UserError(
                f"{captions_path}:{line}: the {mapping['answer']} of {image_id} runs over a line that starts like a "
                f"record ({merged[:40]!r}): an unbalanced double quote merged two records"
            )
        caption = reference_text(row[mapping["answer"]])
        if caption is None:
            samples.skipped.append(record_label(line, image_id, mapping["id"], unit="line"))
            continue
        fields: dict[str, list[str]] = {}
        if cuis is not None:
            without_concepts += image_id not in cuis
            fields = {"cuis": cuis.get(image_id, [])}
        samples.append(
            Sample(id=image_id, images=[_image(root, image_patterns, image_id)], answer=caption, fields=fields)
        )
    where = f"source '{source.name}' split '{split}'"
    wanted = "cuis" in source.fields or "concepts" in source.options  # a caption task of one's own may have none
    if concepts_path is None and samples and wanted:
        expected = " or ".join(str(p) for p in concept_candidates)
        print(f"warning: {where}: no concepts file ({expected}); fields.cuis is missing for all {len(samples)} "
              "samples", file=sys.stderr)
    elif without_concepts:
        print(f"warning: {where}: {without_concepts} of {len(samples)} samples have no row in {concepts_path}; "
              "their fields.cuis is []", file=sys.stderr)
    return samples
