"""The data that flows between stages: samples, generation requests and outputs.

task -> Sample -> GenerationRequest -> model -> GenerationOutput -> prediction record -> judges.
These are plain dataclasses so that every stage can be written to and read back from JSON.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

TaskKind = Literal["vqa", "report", "caption"]


@dataclass(frozen=True)
class ImageRef:
    """Where one image of a sample lives: a file on disk, bytes held in memory, or a `reader` that fetches the
    stored bytes when asked (hub datasets: a row of a memory-mapped Arrow table, so a split's images are not all
    held in RAM). `read_bytes` tries data, then reader, then path; a reader must be safe to call from any thread.

    `name` is what gets recorded in predictions (a relative path or a hub row id), never the bytes.
    """

    name: str
    path: Path | None = None
    data: bytes | None = None
    reader: Callable[[], bytes] | None = field(default=None, compare=False, repr=False)

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.reader is not None:
            return self.reader()
        if self.path is None:
            raise FileNotFoundError(f"image '{self.name}' has neither a path nor bytes")
        return read_image_file(self.path)

    def open(self):  # -> PIL.Image.Image
        """Decode the image as 8-bit RGB by the rules of harness/image_decoding.py. Raises OSError or ValueError
        for missing, corrupt or undecodable files."""
        from harness.image_decoding import decode_rgb

        return decode_rgb(self.read_bytes())


MAX_IMAGE_FILE_BYTES = 1 << 30  # 1 GiB: far above any medical image file, far below a machine's memory


def read_image_file(path: Path) -> bytes:
    """The bytes of an image file; a path that is not a regular file (a FIFO, which would block forever; /dev/zero,
    which never ends) or one over MAX_IMAGE_FILE_BYTES is an OSError, a failed sample like a missing file."""
    import stat

    if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: opening a FIFO waits for a writer
        raise OSError(f"{path} is not a regular file")
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_IMAGE_FILE_BYTES:
            raise OSError(f"{path} is {size} bytes, above the {MAX_IMAGE_FILE_BYTES} an image file may be")
        return fh.read(MAX_IMAGE_FILE_BYTES + 1)


@dataclass
class Sample:
    """One evaluation item of a task.

    `answer` is the reference (answer, report or caption). `fields` holds every breakdown key
    (answer_type as OPEN/CLOSED for VQA, question_type, organ, modality, ...) and other metadata.
    """

    id: str
    images: list[ImageRef]
    answer: str
    question: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def answer_type(self) -> str | None:
        return self.fields.get("answer_type")


@dataclass
class GenerationSettings:
    """Decoding settings; everything here enters the run id."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    do_sample: bool = False
    seed: int = 0
    stop: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cut_at_stop(self, text: str) -> str:
        """`text` up to the first occurrence of any stop string (for backends that do not stop there, or that
        stop after it)."""
        cut = len(text)
        for stop in self.stop:
            if stop:
                pos = text.find(stop)
                if pos != -1:
                    cut = min(cut, pos)
        return text[:cut]


@dataclass
class GenerationRequest:
    """What a model plugin receives for one sample.

    `images` are decoded PIL images (several for multi-view samples such as IU-Xray),
    `prompt` is the filled prompt template, and `messages` the same content as chat messages
    (`[{"role": "user", "content": [{"type": "image"}, ..., {"type": "text", "text": prompt}]}]`)
    for plugins that use a chat template. `metadata` carries non-answer sample fields
    (question, answer_type, question_type, ...) for baselines that condition on them.
    """

    id: str
    images: list[Any]
    prompt: str
    messages: list[dict[str, Any]]
    generation: GenerationSettings
    task_kind: TaskKind
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationOutput:
    """What a model plugin returns for one request (same order as the requests)."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    cost_usd: float | None = None  # estimated price of this call (API models); None for local models
    # facts of this sample's generation beyond its text (e.g. the modality label prepended to its prompt): plain
    # values under string keys, written to its predictions line as `generation_details`
    details: dict[str, Any] | None = None
