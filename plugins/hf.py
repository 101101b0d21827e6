"""The `hf` model backend: Hugging Face transformers checkpoints (hub id or local folder), batched, greedy.

`--model hf --model-args model=<hub id or path>[,revision=<sha>]` loads an image-text-to-text checkpoint with
`AutoModelForImageTextToText` + `AutoProcessor` and prompts it through the processor's chat template; BLIP, BLIP-2,
InstructBLIP and `VisionEncoderDecoderModel` captioners (ViT-GPT2) have their own prompting (see
plugins/hf_presets.py, whose presets are model ids of their own). Model args: `model`; `revision` (default: the
preset's, else "main"); `family` (auto|chat|blip|blip2|instructblip|vision-encoder-decoder); `prepend_modality`
(true: "Imaging modality: <label>. " before the prompt from the sample's `modality_field`, default `modality`;
predicted: as the ROCOv2 study, from the image, plugins/modality_classifier.py); `attn`
(auto|sdpa|eager|flash_attention_2; auto: SDPA where the architecture has it); `cache` (auto|static|dynamic; auto: a
static KV cache, which also compiles the decoding step, on CUDA where the model supports it); `merge_adapter`
(default true); `image_backend` (pil|torchvision; default pil, the processors' reference implementation, the same on
every machine); `min_new_tokens` (for benchmarks); `prefill_chunk` (N > 0: the prompt is prefilled N tokens at a
time, which on CUDA with the static cache runs through the same compiled forward as the decoding steps; default 0,
one eager prefill; not yet measured on a GPU).

Generation: requests sorted by prompt length (images, then text tokens) into left-padded micro-batches, back in
request order; greedy unless sampling is asked for, with a token-ids-only generation config (not the checkpoint's
sampling or penalties), so an output does not depend on its batch. The next micro-batch is preprocessed in a
thread while one generates, and `prefetch` (called by the runner while a call generates) prepares the next call's
first micro-batch, so the GPU does not wait for the CPU. Out of memory halves the micro-batch for the rest of the
run. `--adapter DIR`: a PEFT adapter, checked on a probe input to change the logits, merged.

LLaVA-Med v1.5 (an original-LLaVA `llava_mistral` checkpoint transformers cannot load) runs after a one-time
conversion into a `LlavaForConditionalGeneration` folder: the README's "LLaVA-Med v1.5" item says how (config,
CLIP vision tower, renamed keys, processor and LLaVA-Med's `[INST] <image>\n{prompt} [/INST]` chat template).
"""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import UserError
from harness.file_digests import folder_fingerprint
from harness.fingerprint import dataset_fingerprint
from harness.model_api import ModelContext, ModelPlugin
from harness.plugins import hf_generation as gen
from harness.plugins import row_sampling
from harness.plugins.hf_adapter import HFAdapters
from harness.plugins.hf_presets import (
    FAMILY_OF_MODEL_TYPE,
    HFPreset,
    parse_options,
    pin_note,
    resolve_device_dtype,
)
from harness.plugins.hf_prompting import HFPrompting
from harness.plugins.modality_classifier import CLASSIFIER as MODALITY_CLASSIFIER
from harness.plugins.modality_classifier import fit_for_task as fit_modality
from harness.plugins.prefetch import Prefetcher
from harness.types import GenerationOutput, GenerationRequest


class HFModel(HFPrompting, HFAdapters, ModelPlugin):
    """A transformers checkpoint served batch by batch (model id `hf`; presets are subclasses)."""

    preset: ClassVar[HFPreset | None] = None
    default_batch_size = 8

    @classmethod
    def for_preset(cls, preset: HFPreset) -> type[HFModel]:
        name = "HF_" + "".join(c if c.isalnum() else "_" for c in preset.id)
        return type(name, (cls,), {"preset": preset, "__doc__": f"The hf backend serving {preset.hub_id}."})

    @classmethod
    def options(cls, args: dict[str, str]) -> dict[str, Any]:
        return parse_options(cls.preset, args)

    @classmethod
    def run_identity(cls, args: dict[str, str], context: ModelContext) -> dict[str, Any]:
        opts = cls.options(args)
        _, dtype = resolve_device_dtype(context)
        identity: dict[str, Any] = {"hub_id": None if opts["local"] else opts["model"],
                                    "revision": "local" if opts["local"] else opts["revision"],
                                    # family= of a checkpoint by id or path must be the one auto reads
                                    "dtype": dtype, "family": opts["family"] if cls.preset is not None else "auto",
                                    "checkpoint_generation": "token ids only"}  # not its penalties or sampling
        if opts["local"]:
            identity["path"] = opts["model"]
            identity["local_fingerprint"] = folder_fingerprint(Path(opts["model"]))  # every byte, hashed once
        return {**identity, **cls.prompt_and_sampling_identity(opts, context)}

    @staticmethod
    def prompt_and_sampling_identity(opts: dict[str, Any], context: ModelContext) -> dict[str, Any]:
        """The modality classifier and its data (prepend_modality=predicted), the sampling seeds (tiny-vlm's too)."""
        identity: dict[str, Any] = {}
        if opts["prepend_modality"] == "predicted":  # another classifier, or other training data, is another run
            identity["modality_classifier"] = MODALITY_CLASSIFIER
            if context.task is not None:
                identity["modality_train_fingerprint"] = dataset_fingerprint(context.task.train_samples(quiet=True),
                                                                             images=False)
        if context.generation is not None and context.generation.do_sample:  # draws made otherwise before
            identity["sampling"] = row_sampling.SAMPLING_SEED
        return identity

    @classmethod
    def canonical_args(cls, args: dict[str, str], context: ModelContext) -> dict[str, str]:
        """Without the args whose removal parses to the same options (attn=auto, prepend_modality=false, the
        preset's own revision, ...), without merge_adapter when no --adapter is given and without family= for
        model=<id or path> (a run goes on only when it is the family the checkpoint's config.json says, which auto
        reads); a local folder as its absolute path (`llava`, `./llava` and `/abs/llava` are one run); flags in one
        spelling."""
        opts = cls.options(args)

        def no_op(key: str) -> bool:
            try:
                return cls.options({k: v for k, v in args.items() if k != key}) == opts
            except UserError:  # needed by another arg (model=, prepend_modality= with modality_field=)
                return False

        kept = {k: v for k, v in args.items()  # family= of a checkpoint by id or path: it must equal the one its
                if not no_op(k) and not (k == "merge_adapter" and context.adapter is None)  # config.json says
                and not (k == "family" and cls.preset is None)}
        if opts["local"] and "model" in kept:
            kept["model"] = opts["model"]
        spelled = {"prepend_modality": {"known": "true"}.get(str(opts["prepend_modality"]), opts["prepend_modality"]),
                   "merge_adapter": str(opts["merge_adapter"]).lower()}  # known = TRUE = true; False = no = false
        return {k: spelled.get(k, v) for k, v in kept.items()}

    def __init__(self, args: dict[str, str], context: ModelContext) -> None:
        super().__init__(args, context)
        self.opts = self.options(args)
        self.device, self.dtype_name = resolve_device_dtype(context)
        self.family = self.opts["family"] if self.opts["family"] != "auto" else self._detect_family()
        if args.get("family") not in (None, "auto") and (found := self._detect_family()) != self.family:
            raise UserError(f"--model-args family={args['family']}: {self.opts['model']} is a {found} checkpoint "
                            f"(its config.json); expected family={found} or auto")
        if self.opts["image_backend"] == "torchvision" and importlib.util.find_spec("torchvision") is None:
            raise UserError("--model-args image_backend=torchvision: torchvision is not installed (transformers "
                            "would fall back to PIL while the run records torchvision); install it or use pil")
        kind = context.task.kind if context.task is not None else None
        if kind == "vqa" and self.family in ("blip", "vision-encoder-decoder"):
            raise UserError(f"{self.opts['model']} is a {self.family} captioner: it cannot answer questions "
                            f"(task '{context.task.id}' is VQA); use it on caption or report tasks")
        if self.opts["prepend_modality"] and self.family in ("blip", "vision-encoder-decoder"):
            raise UserError(f"--model-args prepend_modality={args['prepend_modality']}: {self.opts['model']} is "
                            f"a {self.family} captioner, which takes no prompt, so no modality label can be "
                            "prepended to one (the run would be labelled as using it while generating the same)")
        self.modality_info: dict[str, Any] | None = None
        if self.opts["prepend_modality"] == "predicted":  # fitted before the weights load: a mistake fails early
            self.modality_classifier, self.modality_info = fit_modality(context.task, self.opts["modality_field"])
        model, processor = self._load()
        self._setup(model, processor)
        self.adapter_info: dict[str, Any] | None = None
        if context.adapter is not None:
            self._load_adapter(Path(context.adapter))

    @classmethod
    def from_components(cls, model: Any, processor: Any, context: ModelContext,
                        args: dict[str, str] | None = None) -> HFModel:
        """Serve an already-built model and processor (benchmarks, tests of in-memory models)."""
        self = cls.__new__(cls)
        ModelPlugin.__init__(self, {"model": "(in memory)", **(args or {})}, context)
        self.opts = cls.options(self.args)
        self.device, self.dtype_name = resolve_device_dtype(context)
        self.family = self.opts["family"] if self.opts["family"] != "auto" else "chat"
        self._setup(model.to(self.device).eval(), processor)
        self.adapter_info = None
        return self

    # ---- loading -------------------------------------------------------------------------------------
    def _source_kwargs(self) -> dict[str, Any]:
        return {} if self.opts["local"] else {"revision": self.opts["revision"]}

    def _detect_family(self) -> str:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(self.opts["model"], **self._source_kwargs())
        except (OSError, ValueError) as exc:
            reason = gen.first_line(exc)
            raise UserError(f"model {self.opts['model']}: cannot read its config.json ({reason}); expected a "
                            "hub id in the local hub cache (offline) or a folder saved with save_pretrained"
                            ) from exc
        return FAMILY_OF_MODEL_TYPE.get(config.model_type, "chat")

    def _load(self) -> tuple[Any, Any]:
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

        src, kw = self.opts["model"], self._source_kwargs()
        load_kw = {**kw, "dtype": getattr(torch, self.dtype_name)}
        if self.opts["attn"] != "auto":  # auto: SDPA where the architecture supports it, else eager
            load_kw["attn_implementation"] = self.opts["attn"]
        if self.device.startswith("cuda"):
            load_kw["device_map"] = self.device
        try:
            if self.family == "vision-encoder-decoder":
                from transformers import VisionEncoderDecoderModel

                model = VisionEncoderDecoderModel.from_pretrained(src, **load_kw)
                images = AutoImageProcessor.from_pretrained(src, backend=self.opts["image_backend"], **kw)
                processor = {"image_processor": images, "tokenizer": AutoTokenizer.from_pretrained(src, **kw)}
            else:
                model = AutoModelForImageTextToText.from_pretrained(src, **load_kw)
                processor = AutoProcessor.from_pretrained(src, backend=self.opts["image_backend"], **kw)
        except ImportError as exc:  # attn=flash_attention_2 without flash-attn, a model class's own extra
            raise UserError(f"cannot load model {src}: {gen.first_line(exc)}{self._load_hint(exc, hub=False)}") from exc
        except (OSError, ValueError) as exc:  # a local folder has no revision
            at = "" if self.opts["local"] else f" at revision {self.opts['revision']}"
            raise UserError(f"cannot load model {src}{at}: {gen.first_line(exc)}{self._load_hint(exc)}") from exc
        return model.to(self.device).eval(), processor

    def _load_hint(self, exc: Exception, hub: bool = True) -> str:
        """What to do when a model cannot be loaded: torchvision for a video processor (Qwen2-VL's in transformers 5);
        offline, a hub model's files must be in the local hub cache."""
        if "video processor" in str(exc).lower():
            return " (its processor includes a video processor, which needs torchvision: pip install torchvision)"
        if self.opts["local"] or not hub:
            return ""
        if os.environ.get("HF_HUB_OFFLINE") or "connect" in str(exc).lower():
            return (f". Offline, the files of that revision must be in the local hub cache: fetch them where there "
                    f"is internet (hf download {self.opts['model']} --revision {self.opts['revision']})"
                    ", or give a folder: --model hf --model-args model=DIR")
        if "revision" not in self.args and self.preset is not None:
            return " (the preset's pinned commit; --model-args revision=main loads the latest)"
        return ""

    def _setup(self, model: Any, processor: Any) -> None:
        """Common state after loading: left padding, pad/eos ids, cache choice, default batch size."""
        self.model, self.modality_labels = model, {}
        self.warn_unread_prompt()
        if isinstance(processor, dict):  # vision-encoder-decoder: separate image processor and tokenizer
            self.processor, self.tokenizer = None, processor["tokenizer"]
            self.image_processor = processor["image_processor"]
        else:
            self.processor, self.image_processor = processor, getattr(processor, "image_processor", None)
            self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"  # not saved with tokenizers: set after every load
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.family == "chat" and not getattr(self.processor, "chat_template", None):
            raise UserError(f"model {self.opts['model']}: its processor has no chat template; pass "
                            "--model-args family=blip2|instructblip|blip|vision-encoder-decoder if it is one")
        gc = model.generation_config
        eos = gc.eos_token_id if gc.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.skip_leading = gen.leading_ids(model.config, gc, self.family)
        self.ignored_generation = gen.ignored_generation_settings(model)  # generate() keeps them out
        cache = self.opts["cache"]
        if cache == "auto":
            compilable = getattr(model, "_can_compile_fullgraph", False) and self.family == "chat"
            cache = "static" if self.device.startswith("cuda") and compilable else "dynamic"
        self.cache = cache
        self.prefill_chunk = self.opts["prefill_chunk"]
        # Each preprocessing thread gets its own copy: a tokenizer must not be used by two threads at once.
        self.encoder = copy.deepcopy(self.processor) if self.processor is not None else None
        self.ahead_encoder = copy.deepcopy(self.processor) if self.processor is not None else None
        self.prefetcher = Prefetcher()
        micro = self._pick_batch_size()
        if self.device.startswith("cuda"):  # the runner hands two micro-batches: one prepared while one runs
            self.batcher, self.default_batch_size = gen.AdaptiveBatcher(limit=micro), 2 * micro
        else:
            self.batcher, self.default_batch_size = gen.AdaptiveBatcher(), micro

    def _pick_batch_size(self) -> int:
        """Micro-batch size from the memory free after loading and the task's measured prompt length."""
        import torch

        n_params = sum(p.numel() for p in self.model.parameters())
        dtype_bytes = torch.finfo(getattr(torch, self.dtype_name)).bits // 8
        task, ctx = self.context.task, self.context
        new_tokens = (ctx.generation.max_new_tokens if ctx.generation is not None else
                      int(task.config.generation.get("max_new_tokens", 32)) if task is not None else 32)
        free = total = prompt = None
        if self.device.startswith("cuda"):
            cuda = torch.device(self.device)
            free, total = torch.cuda.mem_get_info(cuda)
            # memory this process's allocator holds but does not use (left by earlier work) is free for us too
            free += torch.cuda.memory_reserved(cuda) - torch.cuda.memory_allocated(cuda)
            if task is not None and self.family == "chat":  # multi-view tasks, larger images: longer prompts
                prompt = gen.measure_prompt_tokens(task, self._encode, split=ctx.split,
                                                   template=ctx.prompt_template, settings=ctx.generation)
        text = getattr(self.model.config, "text_config", None) or self.model.config
        return gen.pick_batch_size(n_params=n_params, dtype_bytes=dtype_bytes, new_tokens=new_tokens,
                                   kv_per_token=gen.kv_bytes_per_token(self.model.config, dtype_bytes),
                                   gpu_free=free, gpu_total=total, prompt_tokens=prompt,
                                   hidden_size=int(getattr(text, "hidden_size", 0) or 0))

    def identity_args(self) -> dict[str, str]:
        """The model args that say which weights were loaded (run_identity's input)."""
        return self.args

    # ---- generation ----------------------------------------------------------------------------------
    def _generate_batch(self, reqs: list[GenerationRequest], enc: Any) -> list[GenerationOutput]:
        import torch

        settings = reqs[0].generation
        enc = enc.to(self.device)
        config = gen.generation_config(self.model.generation_config, settings, eos_ids=self.eos_ids,
                                       pad_id=self.tokenizer.pad_token_id,
                                       static_cache=self.cache == "static", prefill_chunk=self.prefill_chunk,
                                       min_new_tokens=self.opts["min_new_tokens"])
        kwargs: dict[str, Any] = {"generation_config": config}
        if settings.stop:
            kwargs.update(stop_strings=list(settings.stop), tokenizer=self.tokenizer)
        if settings.do_sample:  # drawn per sample (decoding stays greedy on the drawn token): batch-independent
            kwargs["logits_processor"] = row_sampling.logits_processor(
                settings.temperature or 1.0, settings.top_p,
                row_sampling.row_generators(settings.seed, [r.id for r in reqs]))
        with torch.inference_mode(), gen.token_ids_only(self.model):  # harness settings only
            out = self.model.generate(**enc, **kwargs)
        sequences = out.sequences if hasattr(out, "sequences") else out
        return gen.decoded_outputs(sequences, enc, self.tokenizer, settings, skip_leading=self.skip_leading,
                                   eos=self.eos_ids)

    def _padded(self, chunk: list[int]) -> list[int]:
        """With a static cache (compiled), micro-batch sizes are rounded up to a power of two (at most the
        micro-batch limit) by repeating the last request, so a run compiles for few batch shapes."""
        if self.cache != "static":
            return chunk
        return chunk + chunk[-1:] * (gen.static_batch_size(len(chunk), self.batcher.limit) - len(chunk))

    def _plan(self, requests: list[GenerationRequest], processor: Any) -> list[list[int]]:
        """Request indices in micro-batch order: one group per generation config, longest prompts first."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(repr(req.generation.to_dict()), []).append(i)
        plan = []
        for indices in groups.values():
            keys = [self._sort_key(requests[i], processor) for i in indices]
            plan.append([indices[j] for j in gen.length_sorted(keys)])
        return plan

    def prefetch(self, requests: list[GenerationRequest]) -> None:
        """Start ordering the next `generate` call's requests and preprocessing its first micro-batch, on a
        thread of its own (the runner calls this while the current call generates)."""
        if not requests:
            return
        limit = self.batcher.limit

        def work() -> tuple[list[list[int]], int, Any]:
            plan = self._plan(requests, self.ahead_encoder)
            first = plan[0][: limit or len(plan[0])]
            return plan, len(first), self._encode([requests[i] for i in self._padded(first)], self.ahead_encoder)

        self.prefetcher.start(requests, work)

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        def prepare(chunk: list[int]) -> Any:
            return self._encode([requests[i] for i in self._padded(chunk)], self.encoder)

        def run(chunk: list[int], enc: Any) -> list[GenerationOutput]:
            return self._generate_batch([requests[i] for i in self._padded(chunk)], enc)[: len(chunk)]

        def failed(i: int, exc: BaseException) -> GenerationOutput:
            return GenerationOutput(text="", error=f"{type(exc).__name__}: {exc}")

        outputs: list[GenerationOutput | None] = [None] * len(requests)
        ahead = self.prefetcher.take(requests)
        plan = ahead[0] if ahead is not None else self._plan(requests, self.processor)
        for n, order in enumerate(plan):
            first = (ahead[1], ahead[2]) if ahead is not None and n == 0 else None
            for i, out in zip(order, self.batcher.run(order, prepare, run, failed, first=first)):
                outputs[i] = out
        done = [o if o is not None else GenerationOutput(text="", error="not generated") for o in outputs]
        self._record_modality(requests, done)
        return done

    def identity(self) -> dict[str, Any]:
        import torch
        import transformers

        info = self.run_identity(self.identity_args(), self.context) if self.args.get("model") != "(in memory)" \
            else {}
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        info.update(model_class=type(base).__name__, transformers=transformers.__version__,
                    torch=torch.__version__, commit=getattr(self.model.config, "_commit_hash", None),
                    family=self.family, device=self.device, cache_implementation=self.cache,
                    attn_implementation=getattr(self.model.config, "_attn_implementation", None),
                    image_backend=self.opts["image_backend"], padding_side=self.tokenizer.padding_side,
                    decoding="harness settings (greedy unless sampling is asked for)",
                    micro_batch=self.batcher.limit, default_batch_size=self.default_batch_size,
                    prefill_chunk=self.prefill_chunk or None,
                    images_per_sample="all" if self.family == "chat" else "the first only",
                    sampling_seed=row_sampling.SAMPLING_SEED)
        note = None if self.opts["local"] else pin_note(self.opts["revision"])
        if note:
            info["pin_note"] = note
        if self.ignored_generation:  # the checkpoint's sampling/penalty defaults, not applied
            info["checkpoint_generation_ignored"] = self.ignored_generation
        if self.adapter_info is not None:
            info["adapter"] = self.adapter_info
        if getattr(self, "modality_info", None):
            info["modality_classifier"] = self.modality_info
        return info

    def close(self) -> None:
        self.prefetcher.close()
        self.model = None
        gen.free_memory()
