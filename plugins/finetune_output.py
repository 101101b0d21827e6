"""The output folder of `harness finetune`: publishing the adapter and manifest.json so that a kill at any moment
leaves a folder the same command can finish, and reading (and tidying) what an earlier attempt left there.

Publishing (`publish`), manifest last:
1. the adapter (or full model) and manifest.json are written into a hidden staging folder `<out>/.output.<random>/`
   and fsync'd;
2. the staging folder is renamed to `<out>/.output.ready`: from here on the result no longer needs the checkpoints;
3. `<out>/checkpoints` is removed (unless --keep-checkpoints);
4. every file moves from `.output.ready` into `<out>`, manifest.json last, and `.output.ready` is removed.

On start (`check_out`) a rerun of the same command:
- with manifest.json there (finished): removes what a kill after step 4 (or an older harness) left behind
  (`checkpoints/` unless kept on purpose, staging folders), then reports "already trained";
- with a complete `.output.ready` (killed during steps 3-4): finishes steps 3-4;
- otherwise, when `checkpoints/` holds a checkpoint of this fine-tune: deletes incomplete staging folders and
  the output files an older harness's publishing moved in without a manifest (only names our writers use, a
  README.md only if it is PEFT's model card; each one named on stderr), and resumes from the checkpoint (the
  last one marks the end of training, so only the output is written again).
A folder with anything else in it (the user's files are never deleted), or with another fine-tune's checkpoints
or manifest, is refused.

So once manifest.json is in place the folder holds only the adapter and its manifest: no temporary file of
ours is ever part of the adapter's directory hash (harness/fingerprint.directory_hash, part of run ids).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.io import atomic_write_json, make_readable
from harness.plugins import finetune_checkpoint as ckpt

MANIFEST = "manifest.json"
CHECKPOINTS = "checkpoints"
STAGING = ".output."
READY = ".output.ready"
# The names save_pretrained (PEFT adapters; full models with their processor or tokenizer) and pefomed's layout
# write: such files beside this fine-tune's checkpoints, with no manifest, were moved in by an older harness's
# interrupted publish. Anything else there is the user's.
OUTPUT_NAMES = frozenset({
    "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "projection.safetensors",
    "config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
    "pytorch_model.bin", "pytorch_model.bin.index.json", "preprocessor_config.json", "processor_config.json",
    "video_preprocessor_config.json", "image_processor_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
    "tokenizer.model", "vocab.txt", "vocab.json", "merges.txt"})
SHARD = re.compile(r"(model|pytorch_model)-\d{5}-of-\d{5}\.(safetensors|bin)")
PEFT_CARD = "library_name: peft"  # in the front matter of the README.md that PEFT's save_pretrained writes


def _move(src: Path, dst: Path) -> None:
    """Rename `src` over `dst` (the one primitive of steps 2 and 4)."""
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    elif src.is_dir() and (dst.exists() or dst.is_symlink()):
        dst.unlink()
    os.replace(src, dst)


def publish(out: Path, write: Callable[[Path], None], manifest: dict[str, Any], keep_checkpoints: bool) -> None:
    """Write the output with `write(folder)` and `manifest` into `out` (the protocol above)."""
    ready = out / READY
    if ready.exists():  # check_out finishes or removes a ready folder before training; never two at once
        shutil.rmtree(ready)
    tmp = Path(tempfile.mkdtemp(prefix=STAGING, dir=out))
    try:
        write(tmp)
        atomic_write_json(tmp / MANIFEST, manifest)
        make_readable(tmp)  # the staging folder's entries are moved into place: not 0600
        ckpt.fsync_tree(tmp)
        _move(tmp, ready)
        ckpt.fsync_dir(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _finish(out, keep_checkpoints)


def _finish(out: Path, keep_checkpoints: bool) -> None:
    """Steps 3 and 4: from a complete `.output.ready` to a finished folder."""
    ready = out / READY
    if not keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    for entry in sorted(ready.iterdir()):
        if entry.name != MANIFEST:
            _move(entry, out / entry.name)
    ckpt.fsync_dir(out)
    _move(ready / MANIFEST, out / MANIFEST)
    ckpt.fsync_dir(out)
    shutil.rmtree(ready, ignore_errors=True)


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}; delete the folder to train again") from exc


def _same(manifest: dict[str, Any], identity_hash: str, out: Path) -> None:
    if manifest.get("config_hash") != identity_hash:
        raise UserError(f"--out {out} holds a different fine-tune (config {manifest.get('config_hash')}, this "
                        f"one {identity_hash}): choose another --out")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def is_output_file(path: Path) -> bool:
    """A file our writers put in an adapter or model folder (not the user's notes, configs or README)."""
    if not path.is_file() or path.is_symlink():
        return False
    if path.name == "README.md":
        try:
            head = path.read_text(encoding="utf-8", errors="replace")[:2000]
        except OSError:
            return False
        return head.startswith("---") and PEFT_CARD in head
    return path.name in OUTPUT_NAMES or bool(SHARD.fullmatch(path.name))


def tidy(out: Path, keep_checkpoints: bool) -> None:
    """Remove our leftovers from a finished folder: staging folders and, unless kept, `checkpoints/`."""
    for entry in out.iterdir():
        if entry.name.startswith(STAGING) or (entry.name == CHECKPOINTS and not keep_checkpoints):
            _remove(entry)


def check_out(out: Path, identity_hash: str, keep_checkpoints: bool = False) -> tuple[dict[str, Any] | None, bool]:
    """(manifest, already_done) of the fine-tune in `out`: the finished manifest if it is done (already_done is
    False when this call finished an interrupted publish), (None, False) when it is to be trained or resumed.
    Cleans our own leftovers; raises for a foreign folder or another fine-tune."""
    if not out.is_dir():
        return None, False
    done = _read(out / MANIFEST)
    if done is not None:
        _same(done, identity_hash, out)
        tidy(out, keep_checkpoints or bool(done.get("keep_checkpoints")))
        return done, True
    ready = _read(out / READY / MANIFEST)
    if ready is not None:
        _same(ready, identity_hash, out)
        _finish(out, keep_checkpoints)
        return ready, False
    found = ckpt.list_checkpoints(out / CHECKPOINTS)
    if found and ckpt.read_state(found[-1]).get("config_hash") != identity_hash:
        raise UserError(f"--out {out} holds checkpoints of a different fine-tune (other model, data, settings "
                        f"or image decoding): choose another --out, or delete {out / CHECKPOINTS} to start over")
    others = [p for p in out.iterdir() if p.name != CHECKPOINTS]
    if not others:
        return None, False
    foreign = [p.name for p in others if not (p.name.startswith(STAGING) or is_output_file(p))]
    if found and foreign:
        raise UserError(f"--out {out} holds this fine-tune's checkpoints and also files harness finetune did not "
                        f"write ({', '.join(sorted(foreign)[:5])}): move them out of the folder and rerun to "
                        "resume (nothing was deleted)")
    if not found or foreign:
        shown = ", ".join(sorted(foreign or [p.name for p in others])[:5])
        raise UserError(f"--out {out} exists and is not a fine-tune output folder ({shown}): "
                        "choose a new or empty folder")
    removed = sorted(p.name for p in others if not p.name.startswith(STAGING))
    for entry in others:  # an interrupted publish: the checkpoints hold the training, the output is redone
        _remove(entry)
    if removed:
        print(f"note: removed the unfinished output of an interrupted earlier attempt from {out} "
              f"({', '.join(removed)}); it is written again from the last checkpoint", file=sys.stderr)
    return None, False
