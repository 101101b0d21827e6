"""Where each row of a Hugging Face dataset keeps its image, found without copying image bytes: the bytes in the
row (read one at a time from the memory-mapped Arrow data, `RowImage`), a stored path (relative ones under the
--data-dir copy), or none. A dataset read from the hub names files only inside the Hugging Face caches: a path
elsewhere is a file of the machine that made the data set, never read here (it could be any private file of this
one, then sent on to an API model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.types import ImageRef

IMAGE_BATCH = 4096  # rows per Arrow batch when finding where each row's image is (offsets only, no bytes)


class RowImage:
    """The stored bytes of one row's image, read when called from the memory-mapped dataset `images` (its only
    column is the image column, undecoded). Dataset row access only reads immutable Arrow buffers, so the prefetch
    thread may call it while the main thread reads other rows."""

    __slots__ = ("images", "column", "row")

    def __init__(self, images: Any, column: str, row: int) -> None:
        self.images, self.column, self.row = images, column, row

    def __call__(self) -> bytes:
        value = self.images[self.row][self.column]
        return value["bytes"] if isinstance(value, dict) else bytes(value)


def _hub_cache_roots() -> list[Path]:
    """Where a dataset loaded from the hub may name its image files: the datasets and hub caches (an image folder
    data set's Arrow rows hold paths into its extracted downloads)."""
    import datasets
    from huggingface_hub import constants

    return [Path(root).expanduser().resolve() for root in (datasets.config.HF_DATASETS_CACHE, constants.HF_HUB_CACHE)]


def image_sources(ds: Any, column: str, data_dir: Path | None,
                   outside: list[str] | None = None) -> list[bool | Path | None]:
    """Per row, where its image is, found from Arrow offsets and validity without copying image bytes: True
    (bytes stored in the row), a Path (a stored path, relative ones under data_dir) or None (no image stored).
    Non-empty stored bytes win over a path; a plain binary column holds bytes, a string column paths. Read from the
    hub (no data_dir), a path outside the Hugging Face caches names a file of the machine that made the data set,
    not of this one (here it may be any private file, sent on to an API model): None, the path added to
    `outside`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    roots = _hub_cache_roots() if data_dir is None else []
    out: list[bool | Path | None] = []
    for batch in ds.select_columns([column]).with_format("arrow").iter(batch_size=IMAGE_BATCH):
        values = batch.column(0)
        kind = values.type
        n = len(values)
        names = {kind.field(k).name for k in range(kind.num_fields)} if pa.types.is_struct(kind) else set()
        stored: list[Any] = [False] * n
        paths: list[Any] = [None] * n
        if "bytes" in names:
            stored = pc.fill_null(pc.greater(pc.binary_length(pc.struct_field(values, "bytes")), 0), False)
            stored = stored.to_pylist()
        if "path" in names:
            paths = pc.struct_field(values, "path").to_pylist()
        elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            stored = values.is_valid().to_pylist()
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            paths = values.to_pylist()
        for has_bytes, path in zip(stored, paths):
            if has_bytes:
                out.append(True)
            elif isinstance(path, str) and path and data_dir is None:
                full = Path(path).expanduser()
                inside = full.is_absolute() and any(full.resolve().is_relative_to(root) for root in roots)
                out.append(full if inside else None)
                if not inside and outside is not None:
                    outside.append(path)
            elif isinstance(path, str) and path:
                full = Path(path)
                out.append(data_dir / full if not full.is_absolute() else full)
            else:
                out.append(None)  # no image stored: the runner records the error for this sample
    return out


def image_ref(source: bool | Path | None, name: str, images: Any, column: str, row: int) -> ImageRef:
    if source is True:
        return ImageRef(name=name, reader=RowImage(images, column, row))
    return ImageRef(name=name, path=source) if isinstance(source, Path) else ImageRef(name=name)
