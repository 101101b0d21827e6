"""The `pefomed` model: PeFoMed (MiniGPT-v2: EVA ViT-g/14 + LLaMA-2-chat with LoRA), re-implemented.

    harness run --model pefomed --task vqa-rad --data-dir ... --prompt pefomed \\
        --model-args llm=meta-llama/Llama-2-7b-chat-hf,vision=eva_vit_g.pth,checkpoint=pefomed_vqarad.pth
    harness run --model pefomed ... --model-args llm=...,vision=... --adapter CONVERTED_DIR

Weights: `vision` = LAVIS `eva_vit_g.pth`, `llm` = LLaMA-2-chat-7B in HF format (hub id or directory), and the
trainable part either as a PeFoMed / MiniGPT-v2 `checkpoint=...pth` or as a directory converted with
`harness convert pefomed-checkpoint` (`--adapter DIR`). Architecture, transform and text processing are in
pefomed_arch (the published code evaluated with random crops and flips; this transform is deterministic).

Prompt: with `--prompt pefomed` the task's PeFoMed instruction (it starts with its task tag) is used as is;
any other prompt gets the tag of the task kind in front ([vqa], [report], [caption]). PeFoMed's text
processing (lowercase, .!"()*#:;~ removed) applies to that instruction (`text_processor=none` turns it off).
Several images (IU-Xray's two views) become consecutive `<Img><ImageHere></Img>` blocks; PeFoMed itself
used one image per record (`--source r2gen-per-image`). One BOS token starts the prompt, as in training (the
published evaluation code also had a literal "<s>" in its template, i.e. two BOS tokens).

Decoding: left-padded batches from inputs_embeds, greedy unless --temperature is set. CUDA defaults:
bfloat16, SDPA attention, LoRA merged into the weights, batch 128, vision encoder batched, static KV cache
with the decoding step compiled (CUDA graphs); `cache=dynamic`, `compile=false`, `merge=false` change that.

Other backends (vLLM): `embed_requests` gives each prompt's embedding sequence (BOS included, image
embeddings spliced), `llm_path` the HF LLaMA directory, `adapter_path` the PEFT adapter directory;
`embed_only=true` skips loading the LLM weights (only its embedding table is read).
Fine-tuning (`harness finetune`): `train=true`, then the methods of pefomed_train.TrainingMixin.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import UserError
from harness.file_digests import folder_fingerprint
from harness.model_api import ModelContext, ModelPlugin
from harness.plugins import pefomed_arch as arch
from harness.plugins import pefomed_checkpoint as ckpt
from harness.plugins import pefomed_options as opts
from harness.plugins import row_sampling
from harness.plugins.hf_presets import resolve_device
from harness.plugins.pefomed_load import llm_revision
from harness.plugins.pefomed_train import TrainingMixin
from harness.plugins.prefetch import Prefetcher
from harness.types import GenerationOutput, GenerationRequest

if TYPE_CHECKING:
    import torch

DEFAULT_LLM = "meta-llama/Llama-2-7b-chat-hf"
DEFAULT_LLM_REVISION = "f5db02db724555f92da89c216ac04704f23d4590"  # commit pinned as the hf presets' are
def _check_llm_revision(args: dict[str, str]) -> None:
    if args.get("llm_revision") and Path(args.get("llm") or DEFAULT_LLM).expanduser().is_dir():
        raise UserError(f"--model-args llm_revision={args['llm_revision']}: llm={args.get('llm')} is a local "
                        "folder, which has no hub revisions; drop llm_revision")


class PeFoMedModel(TrainingMixin, ModelPlugin):
    default_batch_size = 8
    transport_args = ("vision_batch", "trust_pickle", "embed_only")

    @classmethod
    def run_identity(cls, args: dict[str, str], context: ModelContext) -> dict[str, Any]:
        on_cuda = resolve_device(context.device).startswith("cuda")
        out: dict[str, Any] = {"transform": "resize448-bicubic-clipnorm", "prompt": "pefomed-v1"}
        dtype = opts.dtype_name(context.dtype, on_cuda)
        if dtype != "bfloat16":  # each dtype is another run (and fine-tune); bf16, the GPU default, is left out so
            out["dtype"] = dtype  # that GPU runs and fine-tunes made before the dtype was recorded still resume
        llm = args.get("llm") or DEFAULT_LLM
        if not Path(llm).expanduser().is_dir():  # a hub id: which commit of it
            out["llm_revision"] = llm_revision(args, DEFAULT_LLM, DEFAULT_LLM_REVISION)
        else:  # a local folder: its content (weights merged or edited in place are another run)
            out["llm_fingerprint"] = folder_fingerprint(Path(llm).expanduser())
        if args.get("checkpoint"):
            path = Path(args["checkpoint"]).expanduser()
            out["checkpoint_sha256"] = ckpt.file_sha256(path) if path.is_file() else None
        if args.get("vision"):
            path = Path(args["vision"]).expanduser()
            out["vision_file"] = {"name": path.name, "sha256": ckpt.file_sha256(path) if path.is_file() else None}
        if args.get("vision_config"):  # its content (an image size edited in place changes every output)
            path = Path(args["vision_config"]).expanduser()
            out["vision_config_sha256"] = ckpt.file_sha256(path) if path.is_file() else None
        if context.generation is not None and context.generation.do_sample:  # draws made otherwise before
            out["sampling"] = row_sampling.SAMPLING_SEED
        return out

    @classmethod
    def canonical_args(cls, args: dict[str, str], context: ModelContext) -> dict[str, str]:
        """The args checked first (before the task's data is read and the checkpoint hashed), as they enter the
        run id and a fine-tune's identity: a local file or folder by its absolute path (`./x`, `x/` and `/abs/x`
        are one run), without the args whose removal changes nothing (a default typed out)."""
        on_cuda = resolve_device(context.device).startswith("cuda")  # --device, then the args, as when built
        train = opts.check_args(args, context.adapter)
        _check_llm_revision(args)  # here too: a resumed run with nothing left to generate builds no model
        if opts.flag_setting(args, "embed_only", False, "--model-args"):
            raise UserError("model 'pefomed': --model-args embed_only=true loads no LLM and gives embeddings, not "
                            "text (what a vLLM backend asks for itself); drop it")
        out = {k: (_absolute(v) if k in opts.PATH_ARGS and v else v) for k, v in args.items()}

        def effect(given: dict[str, str]) -> tuple[Any, ...]:
            return (opts.parse_options(given, on_cuda, train), opts.process_text(given), opts.train_flag(given),
                    given.get("llm") or DEFAULT_LLM, llm_revision(given, DEFAULT_LLM, DEFAULT_LLM_REVISION))

        now = effect(out)
        return {k: v for k, v in out.items()
                if k in opts.PATH_ARGS[1:] or effect({o: w for o, w in out.items() if o != k}) != now}

    def __init__(self, args: dict[str, str], context: ModelContext) -> None:
        super().__init__(args, context)
        import torch

        from harness.plugins.pefomed_load import LoadSpec, load_parts, resolve_llm_path, warn_other_base

        self.train_mode = opts.check_args(args, context.adapter)
        self.device = torch.device(resolve_device(context.device))
        on_cuda = self.device.type == "cuda"
        self.dtype = getattr(torch, opts.dtype_name(context.dtype, on_cuda))
        self.process_text = opts.process_text(args)
        self.options = opts.parse_options(args, on_cuda, self.train_mode)
        self.default_batch_size = 128 if on_cuda else 8
        self._checkpoint = Path(args["checkpoint"]).expanduser() if args.get("checkpoint") else None
        self._adapter_dir = Path(context.adapter).expanduser() if context.adapter else None
        _check_llm_revision(args)
        revision = llm_revision(args, DEFAULT_LLM, DEFAULT_LLM_REVISION)
        self.llm_path: Path | None = resolve_llm_path(args.get("llm") or DEFAULT_LLM, revision)
        parts = load_parts(LoadSpec(
            llm_path=self.llm_path, vision=args["vision"], vision_config=args.get("vision_config"),
            checkpoint=self._checkpoint, adapter_dir=self._adapter_dir, device=self.device, dtype=self.dtype,
            options=self.options, train=self.train_mode))
        self.lora_info = parts.lora_info
        if self._adapter_dir is not None:  # a fine-tune's adapter on another LLM or EVA of the same shapes
            warn_other_base(self._adapter_dir, self.run_identity(args, context))
        self._setup(parts.vision, parts.llama_proj, parts.llm, parts.tokenizer)

    @classmethod
    def from_parts(cls, vision, llama_proj, llm, tokenizer, options: dict[str, Any] | None = None,
                   llm_path: Path | None = None) -> PeFoMedModel:
        """A model from modules already built (benchmarks on random weights); nothing is loaded."""
        self = cls.__new__(cls)
        ModelPlugin.__init__(self, {}, ModelContext())
        self.device, self.dtype = llama_proj.weight.device, llama_proj.weight.dtype
        on_cuda = self.device.type == "cuda"
        self.options = {**opts.default_options(on_cuda), **(options or {})}
        self.options["compile"] = self.options["compile"] and self.options["cache"] == "static"
        self.process_text, self.train_mode = True, False
        self.default_batch_size = 128 if on_cuda else 8
        self._checkpoint = self._adapter_dir = None
        self.llm_path, self.lora_info = llm_path, {}
        self._setup(vision, llama_proj, llm, tokenizer)
        return self

    def _setup(self, vision, llama_proj, llm, tokenizer) -> None:
        from harness.plugins.pefomed_decode import Decoder

        self.tokenizer = tokenizer
        self.image_size = int(vision.config.image_size)
        if self.options.get("compile_vision"):
            import torch

            vision = torch.compile(vision)
        self.net = arch.PeFoMedNet(vision, llama_proj, llm)
        self.decoder = None
        if not self.options.get("embed_only"):
            self.decoder = Decoder(llm, cache=self.options["cache"], compile=self.options["compile"])
        stops = {tokenizer.eos_token_id}
        gen_eos = getattr(getattr(llm, "generation_config", None), "eos_token_id", None)
        stops.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.stop_ids = sorted(s for s in stops if s is not None)
        self.bos_id = tokenizer.bos_token_id
        if self.bos_id is None:
            raise UserError(f"the tokenizer of {self.llm_path} has no BOS token")
        import os
        from concurrent.futures import ThreadPoolExecutor

        self._pool: Any = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="images")
        self._ready: dict[int, Any] = {}  # id(image) -> array transformed ahead by `prefetch`
        self.prefetcher = Prefetcher()

    # ---- prompt embeddings (also the interface for other backends) ---------------------------------------

    @property
    def adapter_path(self) -> Path | None:
        """The PEFT adapter directory: --adapter, or checkpoint= converted once into the harness cache."""
        if self._adapter_dir is not None:
            return self._adapter_dir
        if self._checkpoint is None:
            return None
        name = f"{ckpt.file_sha256(self._checkpoint)[:16]}-alpha{self.options['lora_alpha']:g}"
        out = Path(self.context.cache_dir) / "pefomed-adapters" / name
        if not (out / ckpt.ADAPTER_CONFIG).is_file():
            ckpt.convert_checkpoint(self._checkpoint, out, alpha=self.options["lora_alpha"],
                                    base_model=str(self.llm_path), trust_pickle=self.options["trust_pickle"])
        return out

    def prompt_ids(self, requests: Sequence[GenerationRequest]) -> list[list[list[int]]]:
        """Token ids of the text segments around the images, per request (BOS not included)."""
        segments = [arch.prompt_segments(arch.instruction_for(r.prompt, r.task_kind, self.process_text),
                                         len(r.images)) for r in requests]
        flat = [s for segs in segments for s in segs]
        ids = self.tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
        out, i = [], 0
        for segs in segments:
            out.append(ids[i:i + len(segs)])
            i += len(segs)
        return out

    def _arrays(self, images: Sequence[Any]) -> list[Any]:
        """The deterministic evaluation transform of PIL images (CPU, threads for more than 4 images)."""
        if len(images) <= 4 or self._pool is None:  # (None: closed)
            return [arch.image_to_array(im, self.image_size) for im in images]
        return list(self._pool.map(lambda im: arch.image_to_array(im, self.image_size), images))

    def pixel_values(self, images: Sequence[Any]) -> torch.Tensor:
        """Transformed images -> [N, 3, S, S] on the model's device (those transformed ahead by `prefetch`
        are not transformed again)."""
        arrays = [self._ready.pop(id(im), None) for im in images]
        todo = [im for im, a in zip(images, arrays) if a is None]
        done = iter(self._arrays(todo))
        arrays = [a if a is not None else next(done) for a in arrays]
        return arch.pixel_batch(arrays, self.device, self.net.vision.dtype)

    def prefetch(self, requests: list[GenerationRequest]) -> None:
        """Transform the next call's images on a thread of its own while the current call generates."""
        images = [im for r in requests for im in r.images]
        if images:
            self.prefetcher.start(requests, lambda: {id(im): a for im, a in zip(images, self._arrays(images))})

    def embed_requests(self, requests: Sequence[GenerationRequest]) -> list[torch.Tensor]:
        """Per request, the unpadded prompt embeddings [T_i, hidden]: BOS, text, image embeddings spliced."""
        import torch

        with torch.no_grad():
            return self._embed(requests)

    def _embed(self, requests: Sequence[GenerationRequest]) -> list[torch.Tensor]:
        import torch

        ids = self.prompt_ids(requests)
        images = [img for r in requests for img in r.images]
        img_embeds = None
        if images:
            img_embeds = self.net.encode_images(self.pixel_values(images), chunk=self.options["vision_batch"])
        flat = [self.bos_id] + [t for segs in ids for seg in segs for t in seg]
        table = self.net.embedding_layer()(torch.tensor(flat, device=self.device))
        bos, pos, k = table[:1], 1, 0
        out = []
        for segs in ids:
            pieces = [bos]
            for j, seg in enumerate(segs):
                pieces.append(table[pos:pos + len(seg)])
                pos += len(seg)
                if j < len(segs) - 1:
                    pieces.append(img_embeds[k].to(table.dtype))
                    k += 1
            out.append(torch.cat(pieces, dim=0))
        return out

    # ---- generation -------------------------------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        if self.decoder is None:
            raise UserError("model 'pefomed' was built with embed_only=true: it gives embeddings, not text")
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            g = r.generation
            key = (g.max_new_tokens, g.do_sample, g.temperature, g.top_p, g.seed, tuple(g.stop))
            groups.setdefault(key, []).append(i)
        outputs: list[GenerationOutput | None] = [None] * len(requests)
        self._ready = self.prefetcher.take(requests) or {}  # images transformed ahead, by id
        for index in groups.values():
            for i, out in zip(index, self._generate_split([requests[i] for i in index])):
                outputs[i] = out
        self._ready = {}
        return [o if o is not None else GenerationOutput(text="", error="no output") for o in outputs]

    def _generate_split(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        """Generate; on CUDA out-of-memory, retry in halves (one request that still fails gets an error)."""
        import torch

        try:
            return self._generate_batch(requests)
        except torch.cuda.OutOfMemoryError:
            pass  # freed and retried below: inside `except` the traceback keeps the failed batch's tensors alive
        self.decoder.release()
        gc.collect()
        torch.cuda.empty_cache()
        if len(requests) == 1:
            return [GenerationOutput(text="", error="CUDA out of memory for this sample")]
        half = len(requests) // 2
        return self._generate_split(requests[:half]) + self._generate_split(requests[half:])

    def _generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        import torch

        settings = requests[0].generation
        self.net.llm.eval()
        embeds = self.embed_requests(requests)
        lengths = [e.shape[0] for e in embeds]
        width = max(lengths)
        padded = embeds[0].new_zeros(len(embeds), width, embeds[0].shape[1])
        mask = torch.zeros(len(embeds), width, dtype=torch.long, device=self.device)
        for i, e in enumerate(embeds):
            padded[i, width - e.shape[0]:] = e
            mask[i, width - e.shape[0]:] = 1
        del embeds
        result = self.decoder.generate(
            padded, mask, max_new_tokens=settings.max_new_tokens, stop_ids=self.stop_ids,
            min_new_tokens=min(self.options["min_new_tokens"], settings.max_new_tokens),
            do_sample=settings.do_sample and settings.temperature > 0, temperature=settings.temperature,
            top_p=settings.top_p, seed=settings.seed, sample_ids=[r.id for r in requests])
        texts = self.tokenizer.batch_decode(result.tokens, skip_special_tokens=True)
        outs = []
        for text, toks, done, n in zip(texts, result.tokens, result.finished, lengths):
            answer = settings.cut_at_stop(text)  # neither a stop id nor a stop string: cut at max_new_tokens
            outs.append(GenerationOutput(text=answer.strip(), prompt_tokens=n, completion_tokens=len(toks) + done,
                                         details=None if done or answer != text else {"truncated": True}))
        return outs

    def identity(self) -> dict[str, Any]:
        return {
            "architecture": "minigpt-v2 (eva-vit-g/14 448px, 4-token grouping, linear projection, llama)",
            "llm": str(self.llm_path.resolve()) if self.llm_path else None,  # absolute: read from anywhere
            "llm_revision": _snapshot_revision(self.llm_path),
            "checkpoint": str(self._checkpoint.resolve()) if self._checkpoint else None,
            "lora": self.lora_info, "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "text_processor": "pefomed" if self.process_text else "none",
            "transform": f"resize {self.image_size} bicubic, CLIP mean/std (deterministic)",
            **{k: self.options[k] for k in ("cache", "compile", "compile_vision", "attn", "min_new_tokens")},
        }

    def close(self) -> None:
        self.prefetcher.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        if self.decoder is not None:
            self.decoder.release()


def _snapshot_revision(path: Path | None) -> str | None:
    """The commit of a hub snapshot directory (.../snapshots/<commit>), else None."""
    if path is None:
        return None
    parts = Path(path).parts
    return parts[-1] if len(parts) >= 2 and parts[-2] == "snapshots" else None


def _absolute(value: str) -> str:
    """A local folder as the hf backend names it (resolved), a local file by its absolute path without following
    links (a hub cache's `snapshots/<rev>/x.safetensors` links to a blob without the suffix that says its format);
    anything else (a hub id) as given."""
    path = Path(value).expanduser()
    if path.is_dir():
        return str(path.resolve())
    return os.path.abspath(path) if path.exists() else value
