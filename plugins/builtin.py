"""Built-in model plugins, registered through the same hook as third-party models.

Registration is cheap: each model's module (and torch, transformers) is imported only when used.
"""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.registry import ModelInfo

#: what a local backend leaves unused when decoding greedily (the seed and top-p of its per-sample draws); the OpenAI
#: API models send their seed even then, so only top_p is theirs; Anthropic's API takes neither
LOCAL_GREEDY_IGNORES = ["seed", "top_p"]


@hookimpl
def register_models(register) -> None:
    register(
        ModelInfo(
            id="prior",
            loader="harness.plugins.prior:PriorModel",
            description="No-weights baseline: the most frequent training answer per answer type "
            "(VQA) or the most typical training text (reports, captions)",
            aliases=["majority", "baseline"],
            capabilities={"task_kinds": ["vqa", "report", "caption"], "needs_weights": False, "local_device": False,
                          "decodes": False},
        )
    )
    kinds = ["vqa", "report", "caption"]
    register(
        ModelInfo(
            id="gpt-4o",
            loader="harness.plugins.api_vlm:GPT4oModel",
            aliases=["gpt4o"],
            description="OpenAI GPT-4o through the API, zero-shot (pinned dated id; OPENAI_API_KEY)",
            capabilities={"task_kinds": kinds, "needs_weights": False, "external_api": True,
                          "local_device": False, "greedy_ignores": ["top_p"]},  # top_p is sent when sampling
        )
    )
    register(
        ModelInfo(
            id="claude",
            loader="harness.plugins.api_vlm:ClaudeModel",
            description="Anthropic Claude through the API, zero-shot (pinned id; ANTHROPIC_API_KEY)",
            capabilities={"task_kinds": kinds, "needs_weights": False, "external_api": True,
                          "local_device": False, "never_sends": ["temperature", "top_p", "seed"]},  # the API takes none
        )
    )
    register(
        ModelInfo(
            id="openai-compatible",
            loader="harness.plugins.api_vlm:OpenAICompatibleModel",
            description="A VLM behind an OpenAI-compatible server (vLLM serve, SGLang, TGI): "
            "--model-args base_url=...,model=... (key: OPENAI_COMPATIBLE_API_KEY if the server needs one)",
            capabilities={"task_kinds": kinds, "needs_weights": False, "local_device": False,
                          "greedy_ignores": ["top_p"]},  # sent when sampling; the seed is sent even at temperature 0
        )
    )
    # the Hugging Face backend, its presets and tiny-vlm (plugins/hf_presets.py imports nothing heavy)
    from harness.plugins import hf_presets

    for info in hf_presets.model_infos():
        register(info)
    register(
        ModelInfo(
            id="pefomed",
            loader="harness.plugins.pefomed:PeFoMedModel",
            description="PeFoMed / MiniGPT-v2 (EVA ViT-g/14 448px + LLaMA-2-chat-7B with LoRA); --model-args "
            "llm=...,vision=eva_vit_g.pth,checkpoint=X.pth, or --adapter DIR from `harness convert pefomed-checkpoint`",
            capabilities={"task_kinds": ["vqa", "report", "caption"], "needs_weights": True, "adapters": True,
                          "greedy_ignores": LOCAL_GREEDY_IGNORES},
        )
    )
    register(
        ModelInfo(
            id="vllm",
            loader="harness.plugins.vllm_backend:VLLMModel",
            description="Models on vLLM: supported VLMs (model=...), PeFoMed through prompt_embeds (arch=pefomed), "
            "LoRA adapters with an effect probe; offline engine or a vLLM server (base_url=...); needs the vllm extra",
            capabilities={"task_kinds": kinds, "needs_weights": True, "adapters": True,
                          "greedy_ignores": LOCAL_GREEDY_IGNORES},
        )
    )
