"""Test-only plugins that break the plugin contract the way third-party plugins do (a number as the text, no text,
NaN scores, rows of the wrong shape) or rely on its defaults (a judge class without an id, settings without
resolve_setup). Registered in subprocesses by run_harness.py."""

from __future__ import annotations

from typing import Any

from harness.hookspecs import hookimpl
from harness.judge_api import JudgePlugin
from harness.model_api import ModelContext, ModelPlugin
from harness.registry import JudgeInfo, ModelInfo
from harness.types import GenerationOutput, GenerationRequest


class OddOutputs(ModelPlugin):
    """Answers 'yes', except to the second request of each call, whose text is `kind`: 'none' (None) or 'int'
    (the number 3); kind 'details' adds details to every output, 'bad-details' details holding NaN."""

    default_batch_size = 4
    transport_args = ("pace",)  # changes nothing in the answers

    @classmethod
    def run_identity(cls, args: dict[str, str], context: ModelContext) -> dict[str, Any]:
        return {"dtype": context.dtype or "float32"}  # as a local model's would

    calls = 0

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        self.calls += 1
        if self.args["kind"] == "raise" and self.calls == 2:  # a bug of the plugin's, met in its second batch
            raise ValueError("cannot reshape array of size 3\ninto shape (2,)")
        if self.args["kind"] in ("details", "bad-details"):  # facts of each generation, plain or not
            value: Any = float("nan") if self.args["kind"] == "bad-details" else 0.5
            return [GenerationOutput(text="yes", details={"seen": r.id, "score": value}) for r in requests]
        odd: Any = {"none": None, "int": 3, "raise": "no"}[self.args["kind"]]
        return [GenerationOutput(text=odd if i == 1 else "yes") for i, _ in enumerate(requests)]


class ToleranceJudge(JudgePlugin):
    """Like a third-party judge: no `id` on the class, a setting, and the default resolve_setup. `bad` makes it
    return NaN or a string as the metric of the first record, or raise in score() or aggregate()."""

    version = "1"
    task_kinds = ("vqa",)
    accepted_settings = ("tol", "bad")

    def score(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [{"metrics": {"match": float(r["prediction"] == r["answer"])}} for r in records]
        bad = self.options.settings.get("bad")
        if bad == "raise":
            raise KeyError("answer_norm")
        if bad in ("nan", "text", "none") and rows:
            rows[0]["metrics"]["match"] = {"nan": float("nan"), "text": "correct", "none": None}[bad]
        return rows

    def aggregate(self, records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, float | None]:
        if self.options.settings.get("bad") == "aggregate":
            return {"match": sum(r["metrics"]["match"] for r in rows) / 0}
        return super().aggregate(records, rows)


class WeightsJudge(ToleranceJudge):
    """Keeps the default resolve_setup (the `weights` path as given) and adds, once built, the weights file's hash
    to its setup, as JudgePlugin.setup allows."""

    accepted_settings = ("weights",)

    def setup(self) -> dict[str, Any]:
        import hashlib
        from pathlib import Path

        weights = Path(self.options.settings["weights"])
        return {**super().setup(), "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}


@hookimpl
def register_models(register) -> None:
    register(ModelInfo(id="odd-outputs", loader="contract_plugin:OddOutputs", description="test-only"))


@hookimpl
def register_judges(register) -> None:
    register(JudgeInfo(id="tolerance", loader="contract_plugin:ToleranceJudge", description="test-only",
                       capabilities={"task_kinds": ["vqa"]}))
    register(JudgeInfo(id="weights-judge", loader="contract_plugin:WeightsJudge", description="test-only",
                       capabilities={"task_kinds": ["vqa"]}))
