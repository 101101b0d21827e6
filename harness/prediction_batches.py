"""One batch of samples on its way to predictions.jsonl: the requests made for the samples whose images opened,
and the lines written for every sample (a failed image's at once, the others from the model's outputs, or, after
an interrupt, from the outputs the model finished: API calls already paid for)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.fingerprint import reference_digest
from harness.image_decoding import open_images
from harness.io import append_jsonl
from harness.plugin_outputs import checked_outputs
from harness.task import Task
from harness.types import Sample

CORE_KEYS = ("id", "question", "answer", "prediction", "images", "error", "prompt_tokens",
             "completion_tokens", "cost_usd", "time_s")


@dataclass
class Batch:
    """One batch of samples made ready for the model: requests for those whose images opened, and the
    predictions rows (filled in for samples whose images failed)."""

    rows: list[dict[str, Any] | None]
    requests: list[Any]
    positions: list[int]


def build_batch(task: Task, template: str, settings: Any, batch: list[Sample], decode: bool = True,
                checked: dict[Any, str | None] | None = None) -> Batch:
    """The batch's requests and the lines of samples whose images failed. `checked` (with `decode=False`): each image
    file's decoding check of earlier batches of the run, by path (see `open_images`)."""
    built = Batch(rows=[None] * len(batch), requests=[], positions=[])
    for i, sample in enumerate(batch):
        images, error = open_images(sample, decode=decode, checked=checked)
        if error:
            built.rows[i] = record_line(sample, "", error, {"time_s": 0.0})
        else:
            built.requests.append(task.build_request(sample, template, settings, images))
            built.positions.append(i)
    return built


def record_line(sample: Sample, prediction: str, error: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    """One predictions.jsonl line: the sample's identity and texts, its breakdown fields, the output."""
    record: dict[str, Any] = {"id": sample.id, "question": sample.question, "answer": sample.answer,
                              "prediction": prediction}
    record.update({k: v for k, v in sample.fields.items() if k not in CORE_KEYS})
    record.update(images=[ref.name for ref in sample.images], error=error, **extra)
    record["reference_digest"] = reference_digest(record)
    return record


def save_batch(pred_path: Path, model_id: str, plugin: str, batch: list[Sample], built: Batch, generated: list[Any],
          started: float) -> None:
    """Append one batch's predictions lines (those of samples whose images failed included)."""
    outputs = checked_outputs(model_id, plugin, generated, [batch[pos].id for pos in built.positions])
    per_sample = (time.perf_counter() - started) / max(1, len(built.requests))
    for pos, out in zip(built.positions, outputs):
        built.rows[pos] = record_line(batch[pos], out.text, out.error, {
            "prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
            "cost_usd": getattr(out, "cost_usd", None), "time_s": round(per_sample, 6),
            **({"generation_details": out.details} if out.details else {})})
    append_jsonl(pred_path, [r for r in built.rows if r is not None])


def save_partial_batch(pred_path: Path, model_id: str, plugin: str, batch: list[Sample], built: Batch,
                  partial: Any, started: float) -> None:
    """An interrupted batch: the lines of the outputs the model finished before it stopped (`partial_outputs` of
    its KeyboardInterrupt: an output or None per request, as the API models give), so a rerun neither asks nor pays
    for them again; the others stay to do."""
    if not isinstance(partial, list) or len(partial) != len(built.requests):
        return
    kept = [(pos, request, out) for pos, request, out in zip(built.positions, built.requests, partial)
            if out is not None]
    done = Batch(rows=list(built.rows), requests=[request for _, request, _ in kept],
                  positions=[pos for pos, _, _ in kept])
    save_batch(pred_path, model_id, plugin, batch, done, [out for _, _, out in kept], started)
