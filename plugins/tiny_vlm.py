"""`tiny-vlm`: a small LLaVA-architecture model built offline (tests, the fine-tuning demo and learning test).

`ensure_tiny_vlm(base=...)` builds it once into `cache_dir()/tiny-vlm/<version>-<base>/` and returns that
folder. Two bases:
- `random`: the randomly initialised model. A `LlavaForConditionalGeneration` (a 3-layer CLIP-style vision
  tower at 64 px with 16 px patches, 16 image tokens per image, and a 2-layer, 128-wide Llama language model:
  about 0.84 million parameters), a byte-level BPE tokenizer trained with the `tokenizers` library on
  phantom-task text, a `CLIPImageProcessor` and a `LlavaProcessor` with a simple chat template, all saved with
  `save_pretrained`: `AutoModelForImageTextToText` + `AutoProcessor` load it like a hub checkpoint, and the
  `hf` backend serves it through its ordinary chat-template path. Tests that need a model, not a trained one,
  use this (`--model-args base=random`).
- `pretrained` (the default): the random model trained once, in full, on phantom captions with their images
  and on phantom questions as text only (plugins/tiny_vlm_pretrain.py: about 6 CPU minutes on one thread), the way
  a real VLM starts from a text-pretrained LLM and caption alignment. LoRA fine-tuning then teaches it to read
  the pixels to answer; on the random model it does not (ARCHITECTURE.md, "Fine-tuning and the tiny model").
Each build goes into a hidden temporary folder that is renamed into place, so the final path never holds a
half-written model. Temporary folders and files name their host and process (`.<final>.<host>.<pid>.<random>`);
a build first removes those a killed build left (`remove_stale_temporaries`: its process is gone, or, for names
without this host's process, older than an hour). One process builds at a time (a lock beside the folder): another
that needs the same build waits, then uses it (array jobs on a fresh cache do not pretrain twice).

The builds are deterministic: the tokenizer corpus is fixed text plus `harness.phantom.generate_cases` with a
fixed seed, the weights come from `torch.manual_seed(SEED)`, the pretraining data and order from fixed seeds.
Building uses exactly one CPU thread (`_build_threads`, whatever OMP_NUM_THREADS says: the weights must not depend
on the machine), fine-tuning and serving one unless OMP_NUM_THREADS says otherwise (`one_cpu_thread`); model.json
records the built weights' digest. Its matrices are too small to gain from more (two threads are about 20% faster
on an idle 2-core machine), OpenMP threads competing with other work on a busy machine made the demo 15-70 times
slower, and floating-point sums then no longer depend on the machine's core count.
The version folder names this builder's version and the phantom generator's, so a change to either builds a
new model instead of reusing a stale one.

Chat format (what fine-tuning must reproduce):
`<s>USER: <image>\n...<image>\n{text} ASSISTANT: {answer}</s>`; `add_generation_prompt` ends the prompt with
`ASSISTANT:`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import UserError, close_hint
from harness.folder_lock import exclusive
from harness.io import make_readable
from harness.model_api import ModelContext
from harness.plugins.hf import HFModel
from harness.plugins.hf_presets import ARGS as HF_ARGS
from harness.plugins.hf_presets import resolve_device_dtype
from harness.processes import remove_stale_temporaries, temp_tag

BUILD_VERSION = "6"  # 5: one CPU thread unless OMP_NUM_THREADS said more; 6: always built on one (_build_threads)
BASES = ("pretrained", "random")
SEED = 0
IMAGE_SIZE = 64
PATCH_SIZE = 16
VOCAB_SIZE = 1024
# The output head is scaled up from the random initialisation (std 0.02): after the final RMSNorm the hidden
# state has unit scale, so a 0.02-std head caps every logit near 5 and no LoRA (which never touches the head or
# the norm) could make an answer likely; a trained model's head has no such cap.
HEAD_SCALE = 4.0
CORPUS_CASES = 240
CORPUS_SEED = 9001
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<image>")

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}ASSISTANT: {% elif message['role'] == 'user' %}USER: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %} {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# Instructions of the phantom tasks and common VQA/report prompt wording, so they tokenize compactly.
PROMPT_LINES = (
    "Answer with a single word or short phrase.",
    "Write the findings section of a radiology report for these images.",
    "Write a one-sentence caption for this medical image.",
    "Write a caption for this radiology image, as in the figure legend of a scientific article.",
    "[vqa] Based on the image, respond to this question with a short answer:",
    "[report] Describe the given medical image in detail and write a radiology report.",
    "[caption] Briefly describe this medical image.",
    "Imaging modality: x-ray. Imaging modality: ct. Imaging modality: mri.",
    "USER: ASSISTANT: yes no left right small large bright dark 0 1 2 3",
    "chest head abdomen knee lung hemisphere x-ray ct mri CT MRI radiograph",
)


def one_cpu_thread() -> None:
    """Torch on one CPU thread for tiny-vlm (see the module's docstring), unless the user set OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)


def version() -> str:
    """The cache folder name: this builder's version and the phantom generator's."""
    from harness.phantom import GENERATOR_VERSION

    return f"v{BUILD_VERSION}-phantom{GENERATOR_VERSION}"


def ensure_tiny_vlm(cache: Path | None = None, base: str = "pretrained") -> Path:
    """Return the folder of the tiny model (`base`: pretrained or random), building it first if needed."""
    from harness.paths import cache_dir

    if base not in BASES:
        raise UserError(f"tiny-vlm base '{base}': expected one of {', '.join(BASES)}")
    root = Path(cache) if cache is not None else cache_dir()
    final = root / "tiny-vlm" / f"{version()}-{base}"
    if final.exists():
        _check_build(final)
        return final
    # one build at a time (array jobs on a fresh cache): another process waits, then finds the build done
    with exclusive(final.parent, f".{final.name}.lock", what=f"the tiny-vlm build {final}", transient=True):
        if final.exists():
            _check_build(final)
            return final
        one_cpu_thread()
        with _build_threads():
            if base == "random":
                _build_into(final, build_tiny_vlm)
            else:
                random_folder = ensure_tiny_vlm(cache, "random")
                checkpoint = final.parent / f".{final.name}.checkpoint.pt"  # an interrupted build resumes from it
                _build_into(final, lambda folder: _pretrain(random_folder, folder, checkpoint))
                checkpoint.unlink(missing_ok=True)
    return final


BUILD_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def _check_build(final: Path) -> None:
    """A finished build has its files and a readable safetensors header; else (a copy cut short, a file deleted by
    hand) a one-line error naming the folder to delete, so the next run builds it again."""
    missing = [name for name in BUILD_FILES if not (final / name).is_file()]
    why = f"{', '.join(missing)} missing" if missing else None
    if why is None:
        from safetensors import safe_open

        try:  # reads the header only, and checks it against the file's size
            with safe_open(str(final / "model.safetensors"), framework="pt") as weights:
                weights.keys()
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError: the file, not the harness
            why = "model.safetensors: " + (str(exc).strip().splitlines() or [""])[0][:200]
    if why is not None:
        raise UserError(f"the tiny-vlm build {final} is damaged ({why}); delete that folder and run again to build "
                        "it anew")


class _build_threads:  # noqa: N801 - a context manager used as `with _build_threads():`
    """Torch on exactly one CPU thread while building, whatever OMP_NUM_THREADS says: the built weights (and so
    every number of a tiny-vlm run, whose run id names the build) must not depend on the machine's thread count."""

    def __enter__(self) -> None:
        import torch

        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.threads)


def _pretrain(random_folder: Path, folder: Path, checkpoint: Path) -> None:
    import json

    from harness.plugins.tiny_vlm_pretrain import Recipe, pretrain

    print("building tiny-vlm: pretraining the random model on phantom captions and questions "
          "(about 6 CPU minutes, once per cache)", file=sys.stderr)
    pretrain(random_folder, folder, checkpoint)
    (folder / "pretraining.json").write_text(json.dumps(Recipe().describe(), indent=2) + "\n", encoding="utf-8")


def _build_into(final: Path, build: Callable[[Path], None]) -> None:
    """Run `build` on a hidden temporary folder beside `final`, then rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{temp_tag()}.", dir=final.parent))
    try:
        build(tmp)
        make_readable(tmp)  # shared caches: mkdtemp's 0700 and safetensors' 0600 would lock other users out
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: keep its copy
            if not (final / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def corpus() -> list[str]:
    """The tokenizer's training text: fixed prompt wording and the texts of generated phantom cases (every
    question, answer, report and caption wording of the phantom tasks turns up in a few hundred cases)."""
    from harness.phantom import generate_cases

    lines = list(PROMPT_LINES)
    for case in generate_cases(CORPUS_CASES, CORPUS_SEED):
        lines += [f"{qa.question} {qa.answer}" for qa in case.qa]
        lines += [case.report, case.caption]
    return lines


def build_tokenizer() -> Any:
    """A byte-level BPE tokenizer (no unknown tokens) trained on `corpus()`, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   extra_special_tokens={"image_token": "<image>"}, model_max_length=1024)


def build_tiny_vlm(folder: Path) -> None:
    """Build the tokenizer, processor and random model and save them into `folder` (the `random` base)."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = build_tokenizer()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                              num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
                              projection_dim=64)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                       tie_word_embeddings=False, **ids)
    config = LlavaConfig(vision_config=vision, text_config=text, vision_feature_select_strategy="default",
                         vision_feature_layer=-2, image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(HEAD_SCALE)
    model.generation_config = GenerationConfig(do_sample=False, **ids)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


class TinyVLM(HFModel):
    """The `hf` backend serving the cached tiny model (model id `tiny-vlm`; `--model-args base=random` for the
    un-pretrained build)."""

    default_batch_size = 16

    def __init__(self, args: dict[str, str], context: ModelContext) -> None:
        if "model" in args or "revision" in args:
            raise UserError("model 'tiny-vlm' is built locally; it takes no model= or revision= "
                            "(use --model hf --model-args model=PATH for another checkpoint)")
        rest, base = _split_base(args)
        self._base = base  # before loading: an adapter's check and identity() name the base loaded
        one_cpu_thread()
        super().__init__({**rest, "model": str(ensure_tiny_vlm(base=base))}, context)

    def identity_args(self) -> dict[str, str]:
        return {**self.args, "base": self._base}

    @classmethod
    def run_identity(cls, args: dict[str, str], context: ModelContext) -> dict[str, Any]:
        rest, base = _split_base(args)  # after loading, args also hold model=<the built folder>
        opts = cls.options({**rest, "model": "tiny-vlm"})  # validates the other model args
        _, dtype = resolve_device_dtype(context)
        return {"hub_id": "tiny-vlm", "revision": f"{version()}-{base}", "dtype": dtype, "family": "chat",
                **cls.prompt_and_sampling_identity(opts, context)}

    def identity(self) -> dict[str, Any]:
        """The hf backend's record, and the digest of the weights built here (builds are deterministic on one
        thread with one torch; another torch or CPU may build other weights: the digest tells)."""
        from harness.file_digests import folder_fingerprint

        return {**super().identity(), "weights": folder_fingerprint(Path(self.opts["model"]))}


    @classmethod
    def canonical_args(cls, args: dict[str, str], context: ModelContext) -> dict[str, str]:
        """The hf backend's canonical args, and `base` unless it is the default (pretrained)."""
        rest, base = _split_base(args)
        canonical = super().canonical_args({**rest, "model": "tiny-vlm"}, context)
        canonical.pop("model")
        return {**canonical, **({"base": base} if "base" in args and base != "pretrained" else {})}

def _split_base(args: dict[str, str]) -> tuple[dict[str, str], str]:
    """(the other model args, the base) of tiny-vlm's model args."""
    known = ("base", *(a for a in HF_ARGS if a not in ("model", "revision")))
    unknown = sorted(set(args) - set(known) - {"model"})
    if unknown:
        raise UserError(f"model args {', '.join(unknown)} unknown to tiny-vlm{close_hint(unknown, known)}; known: "
                        f"{', '.join(known)}")
    rest = {k: v for k, v in args.items() if k not in ("base", "model")}
    base = args.get("base", "pretrained")
    if base not in BASES:
        raise UserError(f"--model-args base={base}: tiny-vlm's base is one of {', '.join(BASES)}")
    return rest, base
