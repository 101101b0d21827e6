"""Independent reading of VQA-RAD's official json for checking the prior baseline (no harness code)."""

from __future__ import annotations

import json
from pathlib import Path


def vqa_rad_train_answers(root: Path) -> dict[str, list[str]]:
    data = json.loads((root / "VQA_RAD Dataset Public.json").read_text())
    out: dict[str, list[str]] = {}
    for row in data:
        if row["phrase_type"] in ("test_freeform", "test_para"):
            continue
        out.setdefault(row["answer_type"].strip().upper(), []).append(str(row["answer"]).strip().lower())
    return out
