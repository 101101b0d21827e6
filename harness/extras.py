"""Which optional extra provides a missing import, and the install command for it.

The light core (`pip install -e .`) runs the prior baseline, the exact judge and scoring of saved predictions;
model backends and some judges live in extras. A command that reaches a missing heavy import gets one line
naming the extra and the command that installs it (cli.main), never a ModuleNotFoundError traceback.
"""

from __future__ import annotations

# top-level module -> extra that installs it
MODULE_EXTRA: dict[str, str] = {
    "torch": "hf",
    "transformers": "hf",
    "peft": "hf",
    "accelerate": "hf",
    "safetensors": "hf",
    "tokenizers": "hf",
    "huggingface_hub": "hf",
    "vllm": "vllm",
    "pycocoevalcap": "lexical",
    "rouge_score": "lexical",
    "openai": "llm",
    "anthropic": "llm",
    "httpx2": "llm",
    "sentence_transformers": "semantic",
    "bert_score": "semantic",
}
# extras whose torch must be the CPU build on a machine without a GPU (an unpinned torch pulls CUDA wheels)
TORCH_EXTRAS = ("hf", "semantic")


def install_target(extra: str) -> str:
    """What `pip install` takes for an extra: `-e '.[hf]'` inside the harness checkout, `-e '<checkout>[hf]'` from
    any other folder (there `.` would be another project, a plugin's say); for a copy installed without -e,
    `'.[hf]'` run in the folder it was installed from."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    try:
        checkout = 'name = "medvlm-harness"' in (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        checkout = False
    if not checkout:
        return f"'.[{extra}]' in the folder medvlm-harness was installed from"
    try:
        here = root.samefile(Path.cwd())
    except OSError:
        here = False
    return f"-e '.[{extra}]'" if here else f"-e '{root}[{extra}]'"


def install_hint(extra: str) -> str:
    """The command that installs an extra (into the checkout the harness runs from, when it runs from one)."""
    target = install_target(extra)
    if extra == "vllm":
        return f"pip install {target} on a GPU machine (on CPU: bash scripts/vllm-venv in the checkout)"
    if extra in TORCH_EXTRAS:
        return f"pip install torch==2.13.0 && pip install {target} (or a CUDA torch on a GPU machine)"
    return f"pip install {target}"


def _installed(top: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):  # a None in sys.modules (blocked) or a broken package
        return False


def missing_extra_message(module: str | None) -> str | None:
    """One line for a ModuleNotFoundError of an optional dependency, or None when it is not one."""
    top = (module or "").split(".")[0]
    extra = MODULE_EXTRA.get(top)
    if extra is None or _installed(top):  # installed: a submodule is missing (a bug or a version mismatch)
        return None
    return f"this needs '{top}', from the {extra} extra: {install_hint(extra)}"
