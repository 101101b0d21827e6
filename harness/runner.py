"""`harness run`: task -> samples -> model -> predictions.jsonl (streamed, resumable) -> judges -> results.

The run directory is named by a run id derived from everything that changes the outputs (model id, args,
adapter hash, task id/version/source/split/fingerprint, prompt variant and text, generation settings), so
running the same command again finds the same directory and only generates what is missing. Predictions
are appended and fsync'd batch by batch; a kill loses at most the batch in flight, never duplicates.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness import plugin_manager
from harness.errors import UserError
from harness.fingerprint import adapter_hash, config_hash, text_hash
from harness.folder_lock import exclusive
from harness.ignored_settings import used_settings
from harness.image_decoding import IMAGE_DECODING
from harness.io import atomic_write_json, iter_batches
from harness.labels import model_label
from harness.model_api import ModelContext
from harness.model_args import check_model_args
from harness.paths import cache_dir
from harness.plugin_hooks import checked_batch_size, checked_json_dict, close_plugin
from harness.plugin_outputs import third_party_code
from harness.prediction_batches import Batch, build_batch, save_batch, save_partial_batch
from harness.providers.claims import counted_when_recorded
from harness.results import write_results
from harness.run_files import (
    adapter_folder,
    adapter_training,
    model_training,
    read_manifest,
    read_predictions,
    refreshed_task,
    warn_untrained_prompt,
)
from harness.scoring import (
    LOADED_MODEL_FILE,
    MANIFEST_FILE,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    RUN_FILES,
    apply_judges,
    build_judges,
    check_default_judges,
)
from harness.served_models import latest_lines, note_earlier_models, with_served_models
from harness.task import Task
from harness.types import Sample


@dataclass
class RunSpec:
    model: str
    task: str
    model_args: dict[str, str] = field(default_factory=dict)
    data_dir: Path | None = None
    source: str | None = None
    split: str | None = None
    prompt: str | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    batch_size: int | None = None
    output: Path | None = None
    runs_dir: Path = Path("runs")
    judges: list[str] | None = None
    convention: str | None = None
    judge_settings: dict[str, Any] = field(default_factory=dict)
    adapter: Path | None = None
    device: str | None = None
    dtype: str | None = None
    progress: bool = True
    judge: bool = True  # False (--no-judge): generate the predictions only


def prepare(spec: RunSpec) -> tuple[Task, Any, dict[str, Any], Path, ModelContext]:
    """Resolve task, model and settings, and compute the manifest and run directory (no weights loaded)."""
    if spec.batch_size is not None and spec.batch_size < 1:
        raise UserError(f"--batch-size {spec.batch_size}: expected at least 1")
    task = Task(plugin_manager.task_config(spec.task), source=spec.source, data_dir=spec.data_dir)
    split = task.canonical_split(spec.split)
    model_info = plugin_manager.models().get(spec.model)
    kinds = model_info.capabilities.get("task_kinds")
    if kinds and task.kind not in kinds:
        raise UserError(f"model '{model_info.id}' handles {'/'.join(kinds)} tasks, not '{task.kind}' ({task.id})")
    if spec.adapter is not None and not model_info.capabilities.get("adapters"):
        takes = [i for i, m in plugin_manager.models().items() if m.capabilities.get("adapters")
                 and "family" not in m.capabilities]  # presets are listed as one
        raise UserError(f"--adapter {spec.adapter}: model '{model_info.id}' does not load adapters (models that do: "
                        f"{', '.join(takes)} and the hf presets)")
    ignored = [f"--{name} {value}" for name, value in (("device", spec.device), ("dtype", spec.dtype)) if value]
    if ignored and not model_info.capabilities.get("local_device", True):
        print(f"warning: {' and '.join(ignored)} ignored: model '{model_info.id}' runs on no local device",
              file=sys.stderr)
    if spec.adapter is not None and not Path(spec.adapter).is_dir():
        raise UserError(f"--adapter {spec.adapter} is not a directory (expected a PEFT adapter folder)")
    if spec.adapter is not None and not (Path(spec.adapter) / "adapter_config.json").is_file():  # before loading
        whole = " (it holds a whole model: load it with --model hf --model-args model=<folder>, without --adapter)" \
            if (Path(spec.adapter) / "config.json").is_file() else ""
        raise UserError(f"--adapter {spec.adapter}: no adapter_config.json (expected a folder saved by PEFT, e.g. "
                        f"by harness finetune){whole}")
    adapter_digest = adapter_hash(spec.adapter) if spec.adapter else None
    variant, template, settings = used_settings(task, model_info, spec.prompt, spec.generation)
    context = ModelContext(task=task, device=spec.device, dtype=spec.dtype,
                           adapter=Path(spec.adapter) if spec.adapter else None, cache_dir=cache_dir(),
                           split=split, prompt_template=template, generation=settings)
    model_cls = model_info.load()
    plugin = getattr(model_info, "plugin", "")
    check_model_args(model_info.id, plugin, model_cls, spec.model_args)  # a misspelt key, before anything loads
    if spec.batch_size is None:
        checked_batch_size(model_info.id, plugin, getattr(model_cls, "default_batch_size", 8))
    canonical = dict(spec.model_args)
    if hasattr(model_cls, "canonical_args"):
        with third_party_code("model", model_info.id, plugin, "canonical_args"):  # cheap checks of the args
            canonical = model_cls.canonical_args(spec.model_args, context)
        canonical = checked_json_dict("model", model_info.id, plugin, "canonical_args", canonical,
                                      "a dict of the --model-args as they enter the run id")
    samples = task.samples(split)  # before a model reads another split (the prior's train split): errors name this one
    fingerprint = task.fingerprint(split)
    run_identity: dict[str, Any] = {}
    if hasattr(model_cls, "run_identity"):
        with third_party_code("model", model_info.id, plugin, "run_identity"):
            run_identity = model_cls.run_identity(spec.model_args, context)
        run_identity = checked_json_dict("model", model_info.id, plugin, "run_identity", run_identity,
                                         "a dict of facts that change the outputs")
    transport = set(getattr(model_cls, "transport_args", ()))
    adapter_dir, adapter_what = adapter_folder(spec, getattr(model_cls, "adapter_arg", None))
    trained = adapter_training(adapter_dir, adapter_digest or adapter_hash(adapter_dir)) if adapter_dir else None
    if adapter_dir:
        warn_untrained_prompt(trained, adapter_what, task.id, variant, template)
    weights_trained = model_training(spec.model_args, adapter_dir)  # a model fully fine-tuned by harness finetune
    if weights_trained:
        warn_untrained_prompt(weights_trained, f"the model {spec.model_args['model']}", task.id, variant, template)
    model = {
        "id": model_info.id,
        "label": model_label(model_info.id, canonical, adapter_digest, transport),
        "plugin": model_info.plugin,
        **({"distribution": dist} if (dist := plugin_manager.distribution(model_info.plugin)) else {}),
        "args": dict(spec.model_args),
        "adapter": str(Path(spec.adapter).expanduser().resolve()) if spec.adapter else None,  # where, from anywhere
        "adapter_hash": adapter_digest,
        "adapter_trained": trained,
        **({"model_trained": weights_trained} if weights_trained else {}),
        "identity": run_identity,
    }
    task_part = {
        "id": task.id,
        "version": task.config.version,
        "kind": task.kind,
        "source": task.describe_source(),
        "revision": task.revision,
        "split": split,
        "fingerprint": fingerprint,
        "n_total": len(samples),
        "credentialed": task.config.credentialed,
        "breakdowns": list(task.config.breakdowns),
        "cluster_by": task.source.cluster_by,
        "size_note": task.size_note(split),
        "skipped_note": task.skipped_note(split),
        "image_decoding": IMAGE_DECODING,
        # a task read from its YAML file (--task PATH), not registered: where `harness score` finds its judges again
        **({"file": str(Path(task.config.path).resolve())}
           if task.config.plugin == plugin_manager.TASK_FILE_PLUGIN else {}),
    }
    prompt = {"variant": variant, "hash": text_hash(template), "template": template}
    identity = {
        "model": {"id": model["id"], "adapter_hash": adapter_digest, "identity": run_identity,
                  "args": {k: v for k, v in canonical.items() if k not in transport}}
        | ({"distribution": model["distribution"]} if "distribution" in model else {}),  # built-in ids unchanged
        "task": {k: task_part[k] for k in ("id", "version", "split", "fingerprint", "image_decoding")} | {
            "source": task.source.name},
        "prompt": prompt["hash"],
        "generation": settings.to_dict(),
    }
    run_id = f"{task.id}--{model_info.id}--{config_hash(identity)}"
    manifest = {
        "run_id": run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "task": task_part,
        "prompt": prompt,
        "generation": settings.to_dict(),
    }
    out_dir = Path(spec.output) if spec.output else Path(spec.runs_dir) / run_id
    return task, model_info, manifest, out_dir, context


def _claim_run_dir(out_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    path = out_dir / MANIFEST_FILE
    if path.exists():
        existing = read_manifest(path)
        if existing.get("run_id") != manifest["run_id"]:
            raise UserError(
                f"{out_dir} holds run '{existing.get('run_id')}', not '{manifest['run_id']}' (different model, "
                "task, data, prompt or generation settings, or a harness version that decodes images differently: "
                "task.image_decoding in its run.json): choose another --output"
            )
        return refreshed_task(existing, manifest["task"], write_to=path)  # what the task YAML says now
    held = [name for name in (PREDICTIONS_FILE, RESULTS_FILE) if (out_dir / name).exists()]
    if held:  # harness score FILE's output, or a run folder whose run.json is gone: not this run's to add to
        raise UserError(f"{out_dir} holds {' and '.join(held)} but no {MANIFEST_FILE} (scores of a predictions "
                        "file, or a run folder without its record): choose another --output")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, manifest)
    return manifest


def _image_files(samples: list[Sample]) -> list[Path]:
    return [ref.path for s in samples for ref in s.images if ref.path is not None and ref.data is None]


def check_images_exist(task: Task, samples: list[Sample], split: list[Sample]) -> None:
    """Refuse, before loading a model, a run in which no image file of the split exists (a data dir without its
    image folder); missing images, even those of every selected sample (a --limit 5 on one missing image), only
    fail their own samples."""
    files = list(dict.fromkeys(_image_files(samples)))  # distinct files: several questions share an image
    if files and not any(path.exists() for path in files) and not any(p.exists() for p in _image_files(split)):
        where = f" under --data-dir {task.data_dir}" if task.data_dir else ""
        raise UserError(f"no image file of task '{task.id}' exists{where} (the first it needs is {files[0]}): is "
                        "the dataset's image folder in place?")


def _still_missing_images(pending: list[Sample], latest: dict[str, dict[str, Any]]) -> list[Sample]:
    """The samples that failed last time and of which an image file is still missing: retrying them would only
    fail them again (and load the model for nothing)."""
    return [s for s in pending if s.id in latest and any(not path.exists() for path in _image_files([s]))]


def generate(spec: RunSpec, task: Task, model_info: Any, manifest: dict[str, Any], out_dir: Path,
             context: ModelContext, selected: list[Sample]) -> None:
    """Generate predictions for the selected samples that have none yet, appending batch by batch."""
    pred_path = out_dir / PREDICTIONS_FILE
    latest = {row["id"]: row for row in read_predictions(pred_path, repair_tail=True)} if pred_path.exists() else {}
    # Samples that failed last time (an API error, an image that could not be read) are tried again, except those
    # of a missing image file (a restored one changes the data fingerprint: another run); the newer line of an id
    # wins when predictions are read.
    pending = [s for s in selected if s.id not in latest or latest[s.id].get("error")]
    if not pending:
        return
    check_images_exist(task, selected, task.samples(manifest["task"]["split"], quiet=True))
    still_missing = _still_missing_images(pending, latest)
    if still_missing:
        print(f"note: {len(still_missing)} sample(s) that failed last time still lack an image file (the first: "
              f"{still_missing[0].id}); not retried", file=sys.stderr)
        skip = {s.id for s in still_missing}
        pending = [s for s in pending if s.id not in skip]
        if not pending:
            return
    done = sum(1 for s in selected if s.id in latest and not latest[s.id].get("error"))
    if done:
        retried = sum(1 for s in pending if s.id in latest)
        print(f"resuming {out_dir}: {done} of {len(selected)} samples already generated; generating {len(pending)}"
              + (f" ({retried} that failed before)" if retried else ""), file=sys.stderr)
    plugin = getattr(model_info, "plugin", "")
    model_cls = model_info.load()
    with third_party_code("model", model_info.id, plugin, "__init__"):
        model = model_cls(spec.model_args, context)
    try:
        _generate_batches(spec, task, model_info, model, manifest, out_dir, selected, pending, list(latest.values()))
    except BaseException:
        close_plugin("model", model_info.id, plugin, model)  # the error of generating is the one reported
        raise
    close_plugin("model", model_info.id, plugin, model, "its predictions are kept and scored")


def _loaded_identity(model_info: Any, model: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The loaded model's identity() (facts for model.json), checked; its served_models counted over `rows`, the
    latest predictions line of each sample (those of earlier invocations too)."""
    if not hasattr(model, "identity"):
        return {}
    plugin = getattr(model_info, "plugin", "")
    with third_party_code("model", model_info.id, plugin, "identity"):
        identity = model.identity()
    return with_served_models(checked_json_dict("model", model_info.id, plugin, "identity", identity,
                                                "a dict of facts about the loaded model"), rows)


def _generate_batches(spec: RunSpec, task: Task, model_info: Any, model: Any, manifest: dict[str, Any],
                      out_dir: Path, selected: list[Sample], pending: list[Sample], earlier: list[dict]) -> None:
    """generate()'s work with the model built: `pending` batch by batch, appended to predictions.jsonl (whose
    latest line per sample, before this invocation, is `earlier`)."""
    plugin = getattr(model_info, "plugin", "")
    pred_path = out_dir / PREDICTIONS_FILE
    environments = _generation_environments(out_dir)
    identity = _loaded_identity(model_info, model, earlier)
    note_earlier_models(identity, earlier)  # a resumed run: which model answered its earlier lines
    atomic_write_json(out_dir / LOADED_MODEL_FILE, {"identity": identity, "environments": environments})
    batch_size = spec.batch_size or checked_batch_size(model_info.id, plugin, getattr(model, "default_batch_size", 8))
    template = manifest["prompt"]["template"]
    from harness.types import GenerationSettings

    settings = GenerationSettings(**manifest["generation"])
    from tqdm import tqdm

    from harness.progress import bar_pacing

    bar = tqdm(total=len(selected), initial=len(selected) - len(pending), unit="sample",
               desc=f"{task.id} / {model_info.id}", disable=not spec.progress, dynamic_ncols=True,
               **bar_pacing())
    prefetch = getattr(model, "prefetch", None)
    checked: dict[Any, str | None] = {}  # a model that ignores pixels: each image file checked once

    def build(batch: list[Sample]) -> Batch:
        built = build_batch(task, template, settings, batch, decode=getattr(model, "reads_images", True),
                            checked=checked)
        if prefetch is not None and built.requests:
            with third_party_code("model", model_info.id, plugin, "prefetch"):
                prefetch(built.requests)
        return built

    from concurrent.futures import ThreadPoolExecutor

    batches = list(iter_batches(pending, batch_size))
    try:
        # The next batch's images are opened (and the model told about its requests) on a thread of its own
        # while the current batch generates.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="harness-requests") as pool:
            ahead = pool.submit(build, batches[0])
            for k, batch in enumerate(batches):
                started = time.perf_counter()
                built = ahead.result()
                if k + 1 < len(batches):
                    ahead = pool.submit(build, batches[k + 1])
                try:
                    with third_party_code("model", model_info.id, plugin, "generate"):
                        generated = model.generate(built.requests) if built.requests else []
                except KeyboardInterrupt as exc:  # the outputs the model finished (paid API calls) are kept
                    save_partial_batch(pred_path, model_info.id, plugin, batch, built, getattr(exc, "partial_outputs",
                                                                                           None), started)
                    raise
                save_batch(pred_path, model_info.id, plugin, batch, built, generated, started)
                bar.update(len(batch))
        if hasattr(model, "identity"):  # again, now with what generation used (API calls, tokens, cost)
            atomic_write_json(out_dir / LOADED_MODEL_FILE, {"identity": _loaded_identity(
                model_info, model, latest_lines(pred_path)), "environments": environments})
    finally:
        bar.close()


def _generation_environments(out_dir: Path) -> list[dict[str, Any]]:
    """The environments (harness version, git commit, packages) that generated this run's predictions, in order:
    those model.json lists, plus this one when it differs from the last (a run resumed after an upgrade)."""
    from harness.environment import environment
    from harness.io import read_json_object

    path = out_dir / LOADED_MODEL_FILE
    before = read_json_object(path).get("environments", []) if path.exists() else []
    now = environment()
    return before if before and before[-1] == now else [*before, now]


def load_selected_records(out_dir: Path, selected_ids: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The selected samples' predictions (the latest line of each id) and every line of theirs, earlier attempts
    included (a failed API call that was billed, then generated again: its cost counts)."""
    rows = read_predictions(out_dir / PREDICTIONS_FILE, repair_tail=True)
    by_id = {row["id"]: row for row in rows}
    chosen = set(selected_ids)
    return [by_id[i] for i in selected_ids if i in by_id], [row for row in rows if row["id"] in chosen]


def run(spec: RunSpec) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    """Generate what is missing, judge, write results.json: (run folder, results, this call's judge entries).
    With `spec.judge` False (--no-judge) nothing is judged or written after the predictions: (run folder,
    {"records": the selected samples' predictions lines}, [])."""
    task, model_info, manifest, out_dir, context = prepare(spec)
    if spec.limit is not None and spec.limit < 1:
        raise UserError(f"--limit must be at least 1, got {spec.limit}")
    if spec.judge and not spec.judges:
        check_default_judges(task.config)
    judges = build_judges(spec.judges or list(task.config.judges), spec.convention, spec.judge_settings,
                          task.kind, task.config.credentialed,
                          progress=None if spec.progress else False) if spec.judge else []
    # a second process on the same run waits for the lock, then finds the work done
    with exclusive(out_dir, owned=RUN_FILES, remove_unless=(PREDICTIONS_FILE,)):
        manifest = _claim_run_dir(out_dir, manifest)
        samples = task.samples(manifest["task"]["split"])[: spec.limit]
        generate(spec, task, model_info, manifest, out_dir, context, samples)
        records, attempts = load_selected_records(out_dir, [s.id for s in samples])
        if not spec.judge:  # --no-judge: predictions.jsonl is the output; results.json is left as it is
            return out_dir, {"records": records}, []
        with counted_when_recorded() as recorded:  # replies a judge claimed count once results.json records them

            def keep(done: list[dict[str, Any]]) -> None:
                write_results(out_dir, manifest, records, done, limit=spec.limit, attempts=attempts)
                recorded()

            entries = apply_judges(out_dir, records, judges, list(task.config.breakdowns), task.source.cluster_by,
                                   breakdowns_declared_by=f"task {task.id} source '{task.source.name}'", keep=keep)
            # A smaller --limit than results.json already holds leaves it as it is (see write_results).
            results = write_results(out_dir, manifest, records, entries, limit=spec.limit, attempts=attempts)
    return out_dir, results, entries
