"""Loader for the original PathVQA release (He et al. 2020, github.com/UCSD-AI4H/PathVQA): pickled QA lists.

This is the version whose test split has 6,761 pairs (3,370 open / 3,391 closed), used by LLaVA-Med and
PeFoMed; the Hugging Face copy (format `hf`) removed duplicates and has 6,719.
Layout assumptions (the released `pvqa/` folder):
    qas/<split>/<split>_qa.pkl   a pickled list of dicts with at least `image` (file stem such as
                                 "test_0001"), `question` and `answer` (str); splits train / val / test
    images/<split>/<image>.jpg   (an `image` value that already ends in .jpg/.png is used as is)
There is no id or answer type in the file: ids are "<split>-<position in the list>" (stable for a given
release) and closed = a yes/no answer (closed_rule yes_no). A record with a null or blank answer is skipped
(listed in the result's `skipped`; the Task warns); ids stay positions in the file. As in the json formats, the
question and image must be non-empty strings and the answer a string or a number (a number becomes its text);
anything else (None, a list) is an error naming the record instead of text such as "None" or "['yes']". The file
is read with a restricted unpickler that builds only plain containers, strings and numbers, so a tampered pickle
cannot run code.
Source options: `qa_file` (pattern, default "qas/{split}/{split}_qa.pkl"), `image_path`
(default "images/{split}/{image}.jpg").
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.loaders.common import SplitSamples, closed_label, inside, record_label, require_data_dir
from harness.loaders.mevf_json import answer_text, image_text, question_text
from harness.task_config import SourceConfig
from harness.types import ImageRef, Sample

OPTIONS = ("qa_file", "image_path")
FIELD_KEYS = ("image", "question", "answer")

QA_FILE = "qas/{split}/{split}_qa.pkl"
IMAGE_PATH = "images/{split}/{image}.jpg"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SAFE_GLOBALS = {("builtins", "set"), ("builtins", "frozenset"), ("collections", "OrderedDict")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain lists/dicts/strings)")


def _pattern(source: SourceConfig, key: str, default: str, **fields: str) -> str:
    """An `options` file pattern filled in; a placeholder other than `fields` or a stray brace is one line."""
    pattern = str(source.options.get(key, default))
    try:
        return pattern.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError):
        names = " and ".join("{" + name + "}" for name in fields)
        raise UserError(f"source '{source.name}': options.{key} {pattern!r} may only use the placeholders {names} "
                        "(write {{ and }} for a literal brace)") from None


def _qa_file(source: SourceConfig, split: str) -> str:
    return _pattern(source, "qa_file", QA_FILE, split=source.split_name(split))


def expected_files(source: SourceConfig, split: str) -> list[str]:
    return [_qa_file(source, split)]


def read_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as fh:
            return _SafeUnpickler(fh, encoding="utf-8").load()
    except (pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a PathVQA QA pickle ({exc})") from None


def load(source: SourceConfig, split: str, data_dir: Path | None, kind: str) -> SplitSamples:
    name = source.split_name(split)
    if source.closed_rule not in (None, "yes_no"):
        raise UserError(
            f"source '{source.name}' (pathvqa-pickle) has no answer_type in its files: use closed_rule: yes_no"
        )
    qa_name = _qa_file(source, split)
    root = require_data_dir(data_dir, source.name, [qa_name])
    path = root / qa_name
    records = read_pickle(path)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UserError(f"{path}: expected a pickled list of dicts with image, question, answer")
    mapping = {"image": "image", "question": "question", "answer": "answer", **source.fields}
    _pattern(source, "image_path", IMAGE_PATH, split=name, image="x")  # checked once, before the records
    image_pattern = str(source.options.get("image_path", IMAGE_PATH))
    samples = SplitSamples()
    for i, rec in enumerate(records):
        label = record_label(i, f"{name}-{i}", "id")
        missing = [mapping[k] for k in ("image", "question", "answer") if mapping[k] not in rec]
        if missing:
            raise UserError(f"{path}: {label} lacks {', '.join(missing)} (it has {', '.join(sorted(rec))})")
        where = f"{path}: {label}"
        answer = answer_text(rec[mapping["answer"]], where, mapping["answer"])  # a number: its text, as VQA-RAD's
        if answer is None:
            samples.skipped.append(label)
            continue
        question = question_text(rec[mapping["question"]], where, mapping["question"])
        image = image_text(rec[mapping["image"]], where, mapping["image"])
        if image.lower().endswith(IMAGE_SUFFIXES):
            rel = str(Path(image_pattern.format(split=name, image="x")).parent / image)
        else:
            rel = image_pattern.format(split=name, image=image)
        samples.append(
            Sample(
                id=f"{name}-{i}",
                images=[ImageRef(name=rel, path=inside(root, rel, where))],
                answer=answer,
                question=question,
                fields={"answer_type": closed_label(answer, None, "yes_no")},
            )
        )
    return samples
