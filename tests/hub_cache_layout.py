"""A Hugging Face datasets cache laid out as `datasets` leaves a hub download of flaviagiammarino/path-vqa
(`<cache>/flaviagiammarino___path-vqa/default/0.0.0/<commit>/path-vqa-<split>.arrow`), built here from given images,
for tests that point HF_DATASETS_CACHE at it (the `pathvqa` task's `hf` source reads it offline)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def build_pathvqa_cache(root: Path, commit: str, images: dict[str, list[Any]]) -> Path:
    """The cache folder under `root` holding one split per key of `images` (each a list of `datasets.Image` values:
    {"bytes": ..., "path": ...}), questions and yes/no answers made up per row."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                  "answer": datasets.Value("string")})
    files = {}
    for split, column in images.items():
        ds = datasets.Dataset.from_dict({"image": column,
                                         "question": [f"is there a lesion {i}?" for i in range(len(column))],
                                         "answer": ["yes" if i % 2 else "no" for i in range(len(column))]},
                                        features=features)
        files[split] = str(root / f"{split}.parquet")
        ds.to_parquet(files[split])
    built = datasets.load_dataset("parquet", data_files=files, cache_dir=str(root / "build"))
    made = Path(built[next(iter(images))].cache_files[0]["filename"]).parent
    cached = root / "cache" / "flaviagiammarino___path-vqa" / "default" / "0.0.0" / commit
    shutil.copytree(made, cached)
    for arrow in cached.glob("parquet-*.arrow"):
        arrow.rename(arrow.with_name(arrow.name.replace("parquet-", "path-vqa-")))
    info = json.loads((cached / "dataset_info.json").read_text())
    (cached / "dataset_info.json").write_text(json.dumps({**info, "config_name": "default",
                                                          "dataset_name": "path-vqa"}))
    return root / "cache"
