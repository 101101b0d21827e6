"""The model plugin interface: batch-first generation.

A model plugin is a class registered through `register_models` with a `ModelInfo`. The harness builds it
once per run with the user's `--model-args` and a `ModelContext`, then calls `generate` with lists of
requests and expects exactly one `GenerationOutput` per request, in order. A failure for one sample
is returned as `GenerationOutput(text="", error="...")`, not raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.types import GenerationOutput, GenerationRequest, GenerationSettings

if TYPE_CHECKING:
    from harness.task import Task


@dataclass
class ModelContext:
    """What the harness tells a model plugin about the run it serves."""

    task: Task | None = None
    device: str | None = None
    dtype: str | None = None
    adapter: Path | None = None
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "medvlm-harness")
    # what the run will ask for (None outside `harness run`): a plugin may size its batches for them
    split: str | None = None
    prompt_template: str | None = None
    generation: GenerationSettings | None = None


class ModelPlugin:
    """Base class for model plugins (subclassing is optional; the duck-typed contract is what counts)."""

    #: batch size used when the user gives no --batch-size: a whole number >= 1 (checked on the class before
    #: loading and on the instance after __init__, which may set it)
    default_batch_size: int = 8
    #: --model-args that change how outputs are obtained but not what they are (concurrency, timeouts,
    #: retries): left out of the run id, so changing them continues the same run
    transport_args: tuple[str, ...] = ()
    #: the --model-args keys the plugin reads (its transport_args count too): `harness run` and `harness finetune`
    #: refuse any other key, with a did-you-mean, before loading; None (not declared): every key is passed on
    accepted_args: tuple[str, ...] | None = None
    #: False for a model that never looks at the pixels (the `prior`): the runner then only checks that each image
    #: decodes (a missing, non-image or damaged file fails its sample, as for any model) and sends no images
    reads_images: bool = True
    #: the --model-args key that names a PEFT adapter folder as --adapter does (`adapter` for vllm), or None: the
    #: runner records what `harness finetune` trained that adapter on, and warns of an untrained prompt, as for
    #: --adapter
    adapter_arg: str | None = None

    def __init__(self, args: dict[str, str], context: ModelContext) -> None:
        self.args = dict(args)
        self.context = context

    @classmethod
    def run_identity(cls, args: dict[str, str], context: ModelContext) -> dict[str, Any]:
        """Cheap facts (no weight loading) that change outputs beyond the model id, args and adapter hash,
        e.g. a pinned hub revision. Enters the run id, so a finished run is recognised without loading."""
        return {}

    @classmethod
    def canonical_args(cls, args: dict[str, str], context: ModelContext) -> dict[str, str]:
        """The `--model-args` as they enter the run id and the label: a plugin drops those that cannot change the
        outputs (a default typed out, a setting for an adapter that is not given), so typing them does not start
        another run, and leaderboard row, of the same outputs. Called first, before the task's data is read: the
        place to refuse a mistyped arg cheaply (a UserError), not after a dataset download."""
        return dict(args)

    def identity(self) -> dict[str, Any]:
        """Facts about the loaded model (resolved revision, dtype, ...), recorded in results.json: a dict of plain
        JSON data (text, finite numbers, bools, None, lists, dicts).

        Must never contain secrets.
        """
        return {}

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        """One output per request, same order. Interrupted (a KeyboardInterrupt), it may set `partial_outputs` on
        the exception (an output or None per request: the work it finished, e.g. API calls already paid for),
        which the runner saves before it stops."""
        raise NotImplementedError

    def prefetch(self, requests: list[GenerationRequest]) -> None:
        """Optional: the requests of the next `generate` call, announced while the current call runs, from
        another thread, so that CPU work for them (ordering, preprocessing) can start early. It must return
        at once and must not change the outputs; the next call receives these very request objects."""

    def close(self) -> None:
        """Release resources (GPU memory, servers). An exception here is a warning: the run's predictions are kept
        and scored."""
