"""`harness run` overlaps CPU work with generation: the next batch's images are opened, and the model is told
about its requests (`prefetch`), while the current batch generates; the predictions stay the same."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

from harness import runner
from harness.model_api import ModelPlugin
from harness.types import GenerationOutput, GenerationRequest


class Recorder(ModelPlugin):
    """Echoes each question's first word; records when its calls start and end, and what it was told ahead."""

    events: list[tuple[str, tuple[str, ...], float, str]] = []
    delay = 0.3

    def _log(self, what: str, requests: list[GenerationRequest]) -> None:
        ids = tuple(r.id for r in requests)
        Recorder.events.append((what, ids, time.perf_counter(), threading.current_thread().name))

    def prefetch(self, requests: list[GenerationRequest]) -> None:
        self._log("prefetch", requests)

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        self._log("start", requests)
        time.sleep(Recorder.delay)
        self._log("end", requests)
        return [GenerationOutput(text=(r.metadata.get("question") or "x").split()[0]) for r in requests]


class RecorderInfo:
    id = "recorder"

    @staticmethod
    def load() -> type[Recorder]:
        return Recorder


def test_next_batch_is_prepared_while_the_current_one_generates(tmp_path):
    spec = runner.RunSpec(model="constant", task="phantom-vqa", output=tmp_path / "run", progress=False,
                          batch_size=3)
    task, _, manifest, out_dir, context = runner.prepare(spec)
    out_dir.mkdir(parents=True)
    samples = task.samples(manifest["task"]["split"])[:8]
    Recorder.events = []
    runner.generate(replace(spec, model="recorder"), task, RecorderInfo, manifest, out_dir, context, samples)

    rows = [json.loads(line) for line in (out_dir / runner.PREDICTIONS_FILE).read_text().splitlines()]
    assert [r["id"] for r in rows] == [s.id for s in samples]
    assert all(r["prediction"] == s.question.split()[0] and r["error"] is None for r, s in zip(rows, samples))

    batches = [tuple(s.id for s in samples[i:i + 3]) for i in range(0, 8, 3)]
    when = {(what, ids): (t, thread) for what, ids, t, thread in Recorder.events}
    main = threading.current_thread().name
    for k, ids in enumerate(batches):
        prefetched, thread = when[("prefetch", ids)]
        assert thread != main, "requests are built and announced off the generating thread"
        assert prefetched < when[("start", ids)][0], "each batch is announced before it generates"
        if k > 0:  # announced while the batch before it was still generating
            assert when[("start", batches[k - 1])][0] < prefetched < when[("end", batches[k - 1])][0]


def test_a_resumed_run_says_how_much_was_done(tmp_path, capsys):
    """With --no-progress nothing said that a rerun continued a run (only the bar's starting count did)."""
    from harness.cli import main

    args = ["run", "--model", "prior", "--task", "phantom-vqa", "--judge", "exact", "--output", str(tmp_path / "run"),
            "--no-progress"]
    assert main([*args, "--limit", "4"]) == 0
    assert "resuming" not in capsys.readouterr().err
    assert main([*args, "--limit", "10"]) == 0
    err = capsys.readouterr().err
    assert f"resuming {tmp_path / 'run'}: 4 of 10 samples already generated; generating 6\n" in err, err
