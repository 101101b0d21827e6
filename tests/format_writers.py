"""Write tiny copies of every real dataset format from phantom cases, for loader tests.

Each writer takes a folder and a list of `harness.phantom.PhantomCase` and lays the cases out exactly as the
real release does (file names, json/csv/pickle structure, image folders), including the quirks the real files
have (VQA-RAD's "CLOSED " answer type and numeric answers, SLAKE's Chinese duplicates). Writers return what
they wrote (records per split, image bytes by relative path) so tests can compare the loaded samples with it.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.phantom import PhantomCase, generate_cases


@dataclass
class Written:
    """What a writer put on disk: records per split and the bytes of every image by its relative path."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)


def cases(n: int = 4, seed: int = 7) -> list[PhantomCase]:
    return generate_cases(n, seed)


def image_bytes(img: Any, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _save(root: Path, rel: str, data: bytes, written: Written) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    written.images[rel] = data


def _split_of(index: int, n: int) -> str:
    """First half of the cases go to test, the rest to train (at least one of each when n >= 2)."""
    return "test" if index < max(1, n // 2) else "train"


def _official_answer(answer: str) -> Any:
    return int(answer) if answer.isdigit() else answer  # the real file stores some counts as JSON numbers


def write_vqa_rad_official(root: Path, cases: list[PhantomCase]) -> Written:
    """`VQA_RAD Dataset Public.json` + `VQA_RAD Image Folder/`; test = phrase_type test_freeform/test_para."""
    written = Written(records={"train": [], "test": []})
    records = []
    for ci, case in enumerate(cases):
        image_name = f"synpic{10000 + ci}.jpg"
        _save(root, f"VQA_RAD Image Folder/{image_name}", image_bytes(case.views[0]), written)
        split = _split_of(ci, len(cases))
        for k, qa in enumerate(case.qa):
            phrase = ("freeform", "para")[k % 2]
            rec = {
                "qid": str(len(records)) if not records else len(records),  # the real file has qid "0"
                "phrase_type": f"test_{phrase}" if split == "test" else phrase,
                "qid_linked_id": f"link-{ci}-{k}",
                "image_case_url": f"https://example.org/case/{ci}",
                "image_name": image_name,
                "image_organ": case.organ.upper(),
                "evaluation": "not evaluated",
                "question": qa.question,
                "question_rephrase": "NULL",
                "question_relation": "NULL",
                "question_frame": "NULL",
                "question_type": qa.question_type.upper() + (", PRES" if k == 1 else ""),
                "answer": _official_answer(qa.answer),
                "answer_type": qa.answer_type + (" " if k == 0 else ""),
            }
            records.append(rec)
            written.records[split].append(rec)
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    return written


def write_mevf(root: Path, cases: list[PhantomCase]) -> Written:
    """MEVF `data_RAD`: trainset.json / testset.json records + images/<image_name>."""
    written = Written(records={"train": [], "test": []})
    qid = 0
    for ci, case in enumerate(cases):
        image_name = f"synpic{20000 + ci}.jpg"
        _save(root, f"images/{image_name}", image_bytes(case.views[0]), written)
        split = _split_of(ci, len(cases))
        for k, qa in enumerate(case.qa):
            qid += 1
            written.records[split].append({
                "qid": qid,
                "image_name": image_name,
                "image_organ": case.organ.upper(),
                "answer": qa.answer,
                "answer_type": qa.answer_type,
                "question_type": qa.question_type.upper(),
                "question": qa.question,
                "phrase_type": ("freeform", "para")[k % 2],
            })
    for split, name in (("train", "trainset.json"), ("test", "testset.json")):
        (root / name).write_text(json.dumps(written.records[split]), encoding="utf-8")
    return written


def write_slake(root: Path, cases: list[PhantomCase], validation_name: str = "validate.json") -> Written:
    """SLAKE 1.0: train/validate/test json (each English record followed by a Chinese twin) + imgs/."""
    splits = ("train", "validation", "test")
    written = Written(records={s: [] for s in splits})
    files = {"train": "train.json", "validation": validation_name, "test": "test.json"}
    qid = 0
    for ci, case in enumerate(cases):
        img_name = f"xmlab{ci}/source.jpg"
        _save(root, f"imgs/{img_name}", image_bytes(case.views[0]), written)
        split = splits[ci % 3]
        for qa in case.qa:
            for lang in ("en", "zh"):
                qid += 1
                rec = {
                    "img_id": ci,
                    "img_name": img_name,
                    "question": qa.question if lang == "en" else f"[zh] {qa.question}",
                    "answer": qa.answer,
                    "q_lang": lang,
                    "location": case.organ.capitalize(),
                    "modality": case.modality.upper(),
                    "answer_type": qa.answer_type,
                    "base_type": "vqa",
                    "content_type": qa.question_type.capitalize(),
                    "triple": ["vhead", "_", "_"],
                    "qid": qid,
                }
                written.records[split].append(rec)
    for split in splits:
        (root / files[split]).write_text(json.dumps(written.records[split], ensure_ascii=False), encoding="utf-8")
    return written


def write_pathvqa_pickle(root: Path, cases: list[PhantomCase]) -> Written:
    """Original PathVQA: qas/<split>/<split>_qa.pkl (list of dicts image/question/answer) + images/<split>/."""
    splits = ("train", "val", "test")
    written = Written(records={s: [] for s in splits})
    for ci, case in enumerate(cases):
        split = splits[ci % 3] if len(cases) >= 3 else "test"
        image = f"{split}_{ci:04d}"
        _save(root, f"images/{split}/{image}.jpg", image_bytes(case.views[0]), written)
        for qa in case.qa:
            written.records[split].append({"image": image, "question": qa.question, "answer": qa.answer})
    for split in splits:
        path = root / "qas" / split / f"{split}_qa.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(written.records[split]))
    return written


def write_r2gen(root: Path, cases: list[PhantomCase]) -> Written:
    """R2Gen IU-Xray: annotation.json {train, val, test} with two views per study + images/<id>/<k>.png."""
    splits = ("train", "val", "test")
    written = Written(records={s: [] for s in splits})
    for ci, case in enumerate(cases):
        study = f"CXR{1000 + ci}_IM-{ci:04d}"
        paths = []
        for k, view in enumerate(case.views):
            rel = f"{study}/{k}.png"
            _save(root, f"images/{rel}", image_bytes(view, "PNG"), written)
            paths.append(rel)
        split = splits[ci % 3]
        written.records[split].append({"id": study, "report": case.report, "image_path": paths, "split": split})
    (root / "annotation.json").write_text(json.dumps(written.records), encoding="utf-8")
    return written


def fixture_cuis(case: PhantomCase) -> list[str]:
    """Concept ids shaped like UMLS CUIs (C + 7 digits), derived from the case; placeholders, not real CUIs."""
    return [f"C{9000000 + sum(map(ord, case.modality)):07d}", f"C{9100000 + sum(map(ord, case.organ)):07d}"]


def write_imageclef(root: Path, cases: list[PhantomCase], split: str = "test") -> Written:
    """ROCOv2 ImageCLEF: <split>_captions.csv (ID,Caption), <split>_concepts.csv (ID,CUIs ';'), <split>/<ID>.jpg."""
    written = Written(records={split: []})
    for ci, case in enumerate(cases):
        image_id = f"ROCOv2_2023_{split}_{ci + 1:06d}"
        _save(root, f"{split}/{image_id}.jpg", image_bytes(case.views[0]), written)
        written.records[split].append({"ID": image_id, "Caption": case.caption, "CUIs": ";".join(fixture_cuis(case))})
    for name, column in (("captions", "Caption"), ("concepts", "CUIs")):
        with open(root / f"{split}_{name}.csv", "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["ID", column])
            for rec in written.records[split]:
                writer.writerow([rec["ID"], rec[column]])
    return written


def _hf_rows(cases: list[PhantomCase], kind: str) -> list[dict[str, Any]]:
    rows = []
    for ci, case in enumerate(cases):
        data = image_bytes(case.views[0])
        if kind == "vqa":
            rows += [{"image": data, "question": qa.question, "answer": qa.answer} for qa in case.qa]
        else:
            rows.append({"image": data, "image_id": f"ROCOv2_2023_hf_{ci + 1:06d}", "caption": case.caption,
                         "cui": fixture_cuis(case)})
    return rows


def _hf_dataset(rows: list[dict[str, Any]], kind: str) -> Any:
    from datasets import Dataset, Features, Image, Sequence, Value

    if kind == "vqa":
        features = Features({"image": Image(), "question": Value("string"), "answer": Value("string")})
    else:
        features = Features({"image": Image(), "image_id": Value("string"), "caption": Value("string"),
                             "cui": Sequence(Value("string"))})
    columns = {key: [r[key] for r in rows] for key in features}
    columns["image"] = [{"bytes": b, "path": None} for b in columns["image"]]
    return Dataset.from_dict(columns, features=features)


def write_hf_parquet(root: Path, cases: list[PhantomCase], kind: str = "vqa") -> Written:
    """A hub-layout folder: data/<split>-00000-of-00001.parquet (vqa: image/question/answer; caption: ROCOv2)."""
    half = max(1, len(cases) // 2)
    written = Written()
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, part in (("test", cases[:half]), ("train", cases[half:])):
        rows = _hf_rows(part, kind)
        written.records[split] = rows
        _hf_dataset(rows, kind).to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return written


def write_hf_saved(root: Path, cases: list[PhantomCase], kind: str = "vqa") -> Written:
    """A `DatasetDict.save_to_disk` folder with test and validation splits."""
    from datasets import DatasetDict

    half = max(1, len(cases) // 2)
    written = Written(records={"test": _hf_rows(cases[:half], kind), "validation": _hf_rows(cases[half:], kind)})
    DatasetDict({s: _hf_dataset(rows, kind) for s, rows in written.records.items()}).save_to_disk(str(root))
    return written
