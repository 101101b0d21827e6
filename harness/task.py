"""A task bound to one data source: its samples, prompts and generation settings.

Source choice is explicit and recorded: `--source NAME`, else (with `--data-dir`) the first local
source whose files are present, else the hub source, else the embedded generator.
A loaded split whose size differs from the source's `sizes` in the task YAML gets one `warning:` line on stderr
(not an error: a deliberately modified copy is a valid thing to evaluate); `size_note(split)` returns it.
Records whose reference is null or blank are skipped by the loaders (a hub dataset or a train split cannot be
edited by the user); each loaded split with such records gets one `warning:` line naming the count and up to
three records, returned by `skipped_note(split)`. The expected size is compared with the samples loaded.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import Any

from harness.errors import UserError, close_hint
from harness.fingerprint import IMAGE_CONTENT, content_cluster, dataset_fingerprint, image_digests, text_hash
from harness.flags import SEED_MAX
from harness.loaders import canonical_split, loader_for
from harness.task_config import IMAGES_CLUSTER, SourceConfig, TaskConfig
from harness.types import GenerationRequest, GenerationSettings, Sample

SKIPPED_SHOWN = 3  # records named in the skipped-samples warning


class Task:
    def __init__(self, config: TaskConfig, source: str | None = None, data_dir: Path | None = None) -> None:
        self.config = config
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        self.source = config.source(source) if source else self._pick_source()
        self._samples: dict[str, list[Sample]] = {}
        self._commit: str | None = None  # the hub commit the samples were read from, where known
        self._fingerprints: dict[str, str] = {}
        self._size_notes: dict[str, str | None] = {}
        self._skipped: dict[str, list[str]] = {}
        self._skipped_notes: dict[str, str | None] = {}
        self._unsaid: set[str] = set()  # splits loaded quietly whose warnings are still to be printed

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def kind(self) -> str:
        return self.config.kind

    def _pick_source(self) -> SourceConfig:
        cfg = self.config
        local = [s for s in cfg.sources if s.format not in ("hf", "phantom")]
        if self.data_dir is not None and not local and not any(s.format == "hf" for s in cfg.sources):
            raise UserError(f"--data-dir {self.data_dir}: task '{cfg.id}' reads no folder (its source "
                            f"{', '.join(repr(s.name) for s in cfg.sources)} generates its data); drop --data-dir")
        if self.data_dir is not None:
            tried = []
            for src in local:
                expected = loader_for(src.format).expected_files(src, cfg.test_split)
                if self.data_dir.is_dir() and all((self.data_dir / name).exists() for name in expected):
                    return src
                tried.append(f"{src.name}: {', '.join(expected)}")
            if not self.data_dir.is_dir():
                what = "is not a directory" if self.data_dir.exists() else "does not exist"
                files = f", with files {'; '.join(tried)}" if tried else " (a saved copy of its hub dataset)"
                raise UserError(f"--data-dir {self.data_dir} {what} (expected the folder of your copy of "
                                f"'{cfg.id}'{files})")
            # a copy without the test split (only train/validation, say) is still recognised by its other splits
            for src in local:
                for split in {"validation", "train", *src.splits.values()} - {cfg.test_split}:
                    try:
                        expected = loader_for(src.format).expected_files(src, split)
                    except UserError:  # a split this source does not have
                        continue
                    if expected and all((self.data_dir / name).exists() for name in expected):
                        return src
            hub = [s for s in cfg.sources if s.format == "hf"]
            if hub and _looks_like_hf_folder(self.data_dir):
                return hub[0]
            raise UserError(
                f"--data-dir {self.data_dir} matches no local format of task '{cfg.id}'; expected files "
                + "; ".join(tried or ["(this task has no local source)"])
            )
        for fmt in ("phantom", "hf"):
            for src in cfg.sources:
                if src.format == fmt:
                    return src
        names = ", ".join(s.name for s in local)
        raise UserError(f"task '{cfg.id}' reads local files ({names}): pass --data-dir")

    def canonical_split(self, split: str | None = None) -> str:
        """The split's canonical name, so that one split typed two ways is one run: the test split if None; a
        name the source's YAML uses itself (a key of `splits`, `sizes` or option `files`) as written; a release
        name a `splits` entry maps to (iu-xray's "val") as that entry's key ("validation"); else the loader's
        SPLIT_ALIASES ("val" and "validate" are SLAKE's "validation")."""
        split = split or self.config.test_split
        src = self.source
        files = src.options.get("files")
        if split in src.splits or split in src.sizes or (isinstance(files, dict) and split in files):
            return split
        mapped = [key for key, release in src.splits.items() if release == split]
        if mapped:
            return mapped[0]
        return canonical_split(src.format, split)

    def samples(self, split: str | None = None, quiet: bool = False) -> list[Sample]:
        """The split's samples, loaded once. Its warnings (skipped records, an unexpected size) are printed at the
        first call that is not `quiet` (a run id computed from the train split says nothing of it yet)."""
        split = self.canonical_split(split)
        if split not in self._samples:
            module = loader_for(self.source.format)
            try:
                loaded = module.load(self.source, split, self.data_dir, self.kind)
            except UserError as exc:
                raise UserError(f"{exc}{self._split_origin(split)}") if "no split" in str(exc) else exc from None
            skipped = list(getattr(loaded, "skipped", []))
            if not loaded:
                why = f" ({len(skipped)} skipped: blank reference)" if skipped else ""
                files = module.expected_files(self.source, split) if self.data_dir is not None else []
                read = f" in {', '.join(str(self.data_dir / name) for name in files)}" if files else ""
                raise UserError(f"task '{self.id}' source '{self.source.name}' split '{split}' has no samples"
                                f"{read}{why}")
            self._check_clusters(split, loaded)
            self._skipped[split] = skipped
            self._skipped_notes[split] = self._report_skipped(split, skipped)
            self._size_notes[split] = self._check_size(split, len(loaded))
            self._samples[split] = [_without_non_finite(sample) for sample in loaded]
            self._commit = getattr(loaded, "commit", None) or self._commit
            self._unsaid.add(split)
        if not quiet and split in self._unsaid:
            self._unsaid.discard(split)
            for note in (self._skipped_notes[split], self._size_notes[split]):
                if note:
                    print(f"warning: {note}", file=sys.stderr)
        return self._samples[split]

    def _split_origin(self, split: str) -> str:
        """Where a split no source file has came from, when it was the task YAML (its test_split, train_split or
        a `splits` mapping) and not a --split the user typed."""
        said = []
        for field_name, default in (("test_split", "test"), ("train_split", "train")):
            if getattr(self.config, field_name) == split != default:
                said.append(f"the task's {field_name}")
        if self.source.split_name(split) != split:
            said.append(f"read as '{self.source.split_name(split)}' by source '{self.source.name}''s splits mapping")
        return f" (split '{split}': {' and '.join(said)}, in {self.config.path})" if said else ""

    def _check_clusters(self, split: str, loaded: list[Sample]) -> None:
        """The source's cluster_by names a field every sample has: samples without it would form one cluster (a
        misspelt name: every interval left out, without a word)."""
        key = self.source.cluster_by
        if key in (IMAGES_CLUSTER, IMAGE_CONTENT):  # every sample's images' names, or their bytes' digest
            return
        lacking = [s.id for s in loaded if s.fields.get(key) in (None, "")] if key else []
        if lacking:
            present = sorted({k for s in loaded for k, v in s.fields.items() if v not in (None, "")})
            raise UserError(
                f"{self.config.path}: source '{self.source.name}' cluster_by {key!r}: {len(lacking)} of {len(loaded)} "
                f"samples of split '{split}' have no such field (the first: {lacking[0]}){close_hint([key], present)};"
                f" fields the samples have: {', '.join(present) or 'none'}"
            )

    def _report_skipped(self, split: str, skipped: list[str]) -> str | None:
        if not skipped:
            return None
        n = len(skipped)
        shown = ", ".join(skipped[:SKIPPED_SHOWN]) + (f", and {n - SKIPPED_SHOWN} more" if n > SKIPPED_SHOWN else "")
        what = "1 sample with a blank reference" if n == 1 else f"{n} samples with a blank reference"
        note = (f"task '{self.id}' source '{self.source.name}' split '{split}': {what} skipped ({shown}); "
                f"{'it is' if n == 1 else 'they are'} not evaluated")
        return note

    def _check_size(self, split: str, found: int) -> str | None:
        expected = self.source.expected_size(split)
        if expected is None or expected == found:
            return None
        note = (f"task '{self.id}' source '{self.source.name}' split '{split}': expected {expected} samples "
                f"(sizes in {self.config.path.name}), found {found}")
        return note

    def size_note(self, split: str | None = None) -> str | None:
        """Why a split's size differs from the task YAML's expected size (None when it matches or none is
        given); loads the split if needed. Meant to be recorded with results."""
        split = self.canonical_split(split)
        self.samples(split)
        return self._size_notes.get(split)

    def skipped_note(self, split: str | None = None) -> str | None:
        """The warning about samples skipped for a null or blank reference (count and up to three records), or
        None when none was; loads the split if needed. Meant to be recorded with results."""
        split = self.canonical_split(split)
        self.samples(split)
        return self._skipped_notes.get(split)

    def skipped_records(self, split: str | None = None) -> list[str]:
        """Every record skipped for a null or blank reference ("record 7 (qid 8)"), in file order."""
        split = self.canonical_split(split)
        self.samples(split)
        return list(self._skipped.get(split, []))

    def train_samples(self, quiet: bool = False) -> list[Sample]:
        return self.samples(self.config.train_split, quiet=quiet)

    def fingerprint(self, split: str | None = None) -> str:
        split = self.canonical_split(split)
        if split not in self._fingerprints:
            samples = self.samples(split)
            digests = image_digests(samples)  # an image file asked about several times is read once
            self._fingerprints[split] = dataset_fingerprint(samples, digests_by_id=digests)
            if self.source.cluster_by == IMAGE_CONTENT:  # the images were read just now: no second pass
                for sample in samples:
                    sample.fields[IMAGE_CONTENT] = content_cluster(digests[sample.id])
        return self._fingerprints[split]

    def prompt_template(self, variant: str | None) -> tuple[str, str]:
        name = variant or "default"
        if name not in self.config.prompts:
            known = ", ".join(sorted(self.config.prompts))
            raise UserError(f"task '{self.id}' has no prompt variant '{name}'. Its variants: {known}")
        return name, self.config.prompts[name]

    def generation_settings(self, overrides: dict[str, Any] | None = None) -> GenerationSettings:
        values = {**self.config.generation, **{k: v for k, v in (overrides or {}).items() if v is not None}}
        allowed = {f.name for f in dc_fields(GenerationSettings)}
        settings = GenerationSettings(**{k: v for k, v in values.items() if k in allowed and k != "do_sample"})
        number = (int, float)
        checks = (("max_new_tokens", "a whole number of at least 1",
                   isinstance(settings.max_new_tokens, int) and settings.max_new_tokens >= 1),
                  ("temperature", "a finite number >= 0 (0: greedy)",  # NaN and inf fail JSON later
                   isinstance(settings.temperature, number) and 0 <= settings.temperature < math.inf),
                  ("top_p", "a number in (0, 1]", isinstance(settings.top_p, number) and 0 < settings.top_p <= 1),
                  ("seed", f"a whole number from 0 to {SEED_MAX} (a 64-bit seed)",
                   isinstance(settings.seed, int) and not isinstance(settings.seed, bool)
                   and 0 <= settings.seed <= SEED_MAX))
        for name, expected, ok in checks:
            if not ok:
                raise UserError(f"generation setting {name}={getattr(settings, name)} (command line or task "
                                f"'{self.id}'): expected {expected}")
        settings.do_sample = settings.temperature > 0  # the temperature alone decides (--temperature 0: greedy)
        return settings

    def build_request(
        self, sample: Sample, template: str, settings: GenerationSettings, images: list[Any]
    ) -> GenerationRequest:
        prompt = template.format(question=sample.question or "")
        content: list[dict[str, Any]] = [{"type": "image"} for _ in images]
        content.append({"type": "text", "text": prompt})
        metadata = {"question": sample.question, **{k: v for k, v in sample.fields.items()}}
        return GenerationRequest(
            id=sample.id,
            images=images,
            prompt=prompt,
            messages=[{"role": "user", "content": content}],
            generation=settings,
            task_kind=self.kind,  # type: ignore[arg-type]
            metadata=metadata,
        )

    def describe_source(self) -> dict[str, Any]:
        """Where the samples came from: the folder read when --data-dir was given, as an absolute path (a relative
        one says nothing once the run is read elsewhere; a local copy of a hub data set keeps the hub id as `copy_of`
        and has no known revision, but a `commit` when it is a hub cache snapshot of it), else the source's own path
        or hub id, with the hub `commit` read. Not part of the run id."""
        src = self.source
        described = {
            "name": src.name,
            "format": src.format,
            "path": os.path.abspath(self.data_dir) if self.data_dir else src.path,
            "config": src.config,
            "revision": self.revision,
            "closed_rule": src.closed_rule,
        }
        if self.data_dir and src.format == "hf":
            described["copy_of"] = src.path
        if self._commit:  # the commit `revision` (a branch such as "main") was at, as read
            described["commit"] = self._commit
        return described

    @property
    def revision(self) -> str | None:
        """The data set revision read: the source's pinned one, None for a local copy (its revision is unknown)."""
        return None if self.data_dir and self.source.format == "hf" else self.source.revision


def _looks_like_hf_folder(path: Path) -> bool:
    """A hub-format copy at this folder's top: `data/*.parquet` (the hub's layout), `<split>/*.parquet` or
    `*.parquet`, or a `save_to_disk` folder; not any parquet somewhere below (a parent folder of several copies)."""
    if (path / "dataset_dict.json").exists() or any(path.glob("*.parquet")):
        return True
    return any(child.is_dir() and (any(child.glob("*.parquet")) or (child / "dataset_info.json").exists())
               for child in path.iterdir())


def prompt_hash(template: str) -> str:
    return text_hash(template)


def _without_non_finite(sample: Sample) -> Sample:
    """A NaN or infinite field value (an empty cell of a parquet float column, `NaN` in a JSON file) becomes None:
    no value, as a blank one is, instead of a "nan" breakdown slice and a predictions line that is not JSON."""
    for key, value in sample.fields.items():
        if isinstance(value, float) and not math.isfinite(value):
            sample.fields[key] = None
    return sample
