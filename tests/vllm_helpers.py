"""Helpers of tests/test_vllm.py: a tiny PeFoMed whose LLaMA vLLM's CPU backend can run, and CLI runners.

The tiny PeFoMed of tests/tiny_pefomed.py has a 64-wide LLaMA with 4 heads (head size 16); vLLM's CPU attention
takes head sizes of 32 and up, so the LLaMA here has the same width and LoRA shapes with 2 heads (head size
32), the same tokenizer, and a chat template for the chat-completions path. Everything else (EVA file, vision
config, PeFoMed checkpoint with rank-64 LoRA) comes from tiny_pefomed.

vLLM starts its engine in worker processes that re-import the caller's main module, so vLLM runs in `harness`
subprocesses here; `VLLM_ENGINE_ENV` keeps the engine in one process (faster start on 2 CPU cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import tiny_pefomed
import torch
from tiny_pefomed import TinyPeFoMed

REPO = Path(__file__).resolve().parents[1]
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}")
#: one engine process, worker in-process, loopback only, no usage report
VLLM_ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_HOST_IP": "127.0.0.1", "VLLM_NO_USAGE_STATS": "1",
                   "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}
#: engine args for the tiny model on CPU: float32 (as the HF reference), one process, small KV cache
ENGINE_ARGS = "dtype=float32,distributed_executor_backend=uni,kv_cache_gb=0.25,max_model_len=512,enforce_eager=true"
#: 512-token engine steps: PeFoMed prompts (~290 tokens) are prefilled in chunks next to other requests' decoding
MIXED_STEPS = "max_num_batched_tokens=512"


def build_tiny(root: Path) -> TinyPeFoMed:
    """tiny_pefomed's model with 2 attention heads (head size 32) and a LLaMA-2-style chat template."""
    return tiny_pefomed.build_tiny(root, heads=2, chat_template=CHAT_TEMPLATE)


def prefixed_adapter(adapter_dir: Path, out_dir: Path, prefix: str = "llama_model.") -> Path:
    """A copy of a PEFT adapter whose tensor keys carry a wrapper prefix (base_model.model.llama_model.model...),
    as a naive export of a wrapped model writes them: vLLM maps none of its modules and serves the base model."""
    import shutil

    from safetensors.torch import load_file, save_file

    out_dir.mkdir(parents=True)
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    save_file({k.replace("base_model.model.", f"base_model.model.{prefix}", 1): v for k, v in tensors.items()},
              str(out_dir / "adapter_model.safetensors"))
    shutil.copy(adapter_dir / "adapter_config.json", out_dir / "adapter_config.json")
    return out_dir


def harness_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **VLLM_ENGINE_ENV, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.update(extra or {})
    return env


def harness_cmd(*argv: str) -> list[str]:
    """The `harness` CLI in this Python (the vLLM venv), with the vllm and pefomed models registered."""
    return [sys.executable, str(Path(__file__).resolve()), *argv]


def run_harness(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(harness_cmd(*argv), capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=harness_env(), stdin=subprocess.DEVNULL)


def read_predictions(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines() if line.strip()]


def hf_reference(tiny: TinyPeFoMed, limit: int, max_new_tokens: int, cache_dir: Path) -> dict[str, dict]:
    """The transformers path: the `pefomed` plugin (HF LLaMA + PEFT LoRA, unmerged) on the first `limit`
    phantom-vqa test samples with the pefomed prompt; id -> {text, completion_tokens, error, truncated}."""
    from harness import plugin_manager
    from harness.model_api import ModelContext
    from harness.plugins.pefomed import PeFoMedModel
    from harness.task import Task

    task = Task(plugin_manager.tasks().get("phantom-vqa"))
    _, template = task.prompt_template("pefomed")
    settings = task.generation_settings({"max_new_tokens": max_new_tokens})
    samples = task.samples("test")[:limit]
    requests = [task.build_request(s, template, settings, [ref.open() for ref in s.images]) for s in samples]
    model = PeFoMedModel(tiny.model_args(merge="false"), ModelContext(cache_dir=cache_dir))
    try:
        outputs = model.generate(requests)
    finally:
        model.close()
    return {s.id: {"text": o.text, "completion_tokens": o.completion_tokens, "error": o.error,
                   "truncated": bool((o.details or {}).get("truncated"))} for s, o in zip(samples, outputs)}


def hf_chat_reference(llm_dir: Path, adapter_dir: Path | None, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy chat replies of the tiny LLaMA (+ PEFT adapter) through transformers, one prompt at a time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
    model = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    replies = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        replies.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return replies


FALLBACK_MODELS = {
    "vllm": ("harness.plugins.vllm_backend:VLLMModel", "models on vLLM (offline engine or server)"),
    "pefomed": ("harness.plugins.pefomed:PeFoMedModel", "PeFoMed (MiniGPT-v2 architecture) on transformers"),
}


def _main() -> int:
    """`harness ARGV`, registering the vllm and pefomed models and the serve and convert commands if
    plugins/builtin.py and harness/cli.py do not (yet)."""
    from harness import cli
    from harness.cli import main
    from harness.hookspecs import hookimpl
    from harness.plugin_manager import get_plugin_manager
    from harness.plugins import builtin
    from harness.registry import ModelInfo

    registered: list[str] = []
    builtin.register_models(register=lambda info: registered.append(info.id))
    missing = {k: v for k, v in FALLBACK_MODELS.items() if k not in registered}

    class Fallback:
        @staticmethod
        @hookimpl
        def register_models(register) -> None:
            for model_id, (loader, description) in missing.items():
                register(ModelInfo(id=model_id, loader=loader, description=description,
                                   capabilities={"task_kinds": ["vqa", "report", "caption"]}))

    if missing:
        get_plugin_manager().register(Fallback, name="tests.vllm_helpers")
    cli.COMMANDS = tuple(dict.fromkeys((*cli.COMMANDS, "serve", "convert")))
    return main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(_main())
