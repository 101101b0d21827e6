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
  resumes from the checkpoint (the last one marks the end of training, so only the output is written again).
A folder with any other file in it is refused, never cleaned: the protocol above never leaves output files
without a manifest, so such a file is the user's (or an older harness's, which the user may move out); so is a
folder with another fine-tune's checkpoints or manifest.

So once manifest.json is in place the folder holds only the adapter and its manifest (the adapter's hash in run
ids, harness/fingerprint.adapter_hash, reads only the files loading reads: nothing else in the folder counts).
"""

from __future__ import annotations

import json
import os
import shutil
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
        if (tmp / "adapter_config.json").is_file():  # the files it describes: a copied manifest is told apart
            from harness.fingerprint import adapter_hash

            manifest = {**manifest, "adapter_hash": adapter_hash(tmp)}
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


def _same(manifest: dict[str, Any], identity_hash: str, out: Path, identity: dict[str, Any] | None) -> None:
    if manifest.get("config_hash") != identity_hash:
        differs = settings_differ(manifest.get("config"), identity)
        why = (f"{differs}" if differs else f"config {manifest.get('config_hash')}, this one {identity_hash}; or "
               "one made by a harness that named the base model otherwise, e.g. a local folder before it was named "
               "by its content")
        raise UserError(f"--out {out} holds a different fine-tune ({why}): choose another --out")


_STAGE_FLAGS = {"id": "task", "source": "source", "prompt_variant": "prompt", "data_dir": "data-dir"}
_STAGE_WORDS = {"fingerprint": "data fingerprint", "n_samples": "samples", "prompt_hash": "prompt text",
                "image_decoding": "image decoding", "version": "task version", "split": "split"}


def _flat(value: Any, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], Any]:
    if isinstance(value, dict):
        return {k: v for key in value for k, v in _flat(value[key], (*path, key)).items()}
    if isinstance(value, list) and path == ("stages",):  # stage i counted from the main stage (the last)
        return {k: v for i, stage in enumerate(value) for k, v in _flat(stage, (*path, len(value) - 1 - i)).items()}
    return {path: value}


def _setting_name(path: tuple[Any, ...]) -> str:
    """What the user typed (or sees) for one hashed setting: `--lr`, `--model-args dtype`, `stage 1's samples`."""
    head, *rest = path
    if head in ("seed", "limit", "method"):
        return f"--{head}"
    if head == "hyper":
        return "--" + str(rest[0]).replace("_", "-")
    if head == "stages" and len(rest) == 2:
        back, key = rest
        prefix = "" if back == 0 else "stage1-"
        if key in _STAGE_FLAGS:
            return f"--{prefix}{_STAGE_FLAGS[key]}"
        return f"{'the main stage' if back == 0 else 'stage 1'}'s {_STAGE_WORDS.get(key, key)}"
    if head == "base" and rest[:1] == ["args"] and len(rest) == 2:
        return f"--model-args {rest[1]}"
    return "the base model's " + ".".join(str(part) for part in rest) if head == "base" else ".".join(map(str, path))


def _shown(value: Any) -> str:
    text = "unset" if value is None else json.dumps(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def settings_differ(held: Any, ours: dict[str, Any] | None) -> str:
    """The settings by which the fine-tune `held` (a config recorded in --out) differs from `ours`, as
    '--lr 0.0002 there, 0.01 now; ...' ('' when either is unknown: folders of older harnesses record none)."""
    if not isinstance(held, dict) or ours is None:
        return ""
    there, now = _flat(held), _flat(ours)
    if len(held.get("stages") or []) != len(ours.get("stages") or []):
        return f"{len(held.get('stages') or [])} stage(s) there, {len(ours.get('stages') or [])} now"
    names: dict[str, tuple[Any, Any]] = {}
    for path in sorted(set(there) | set(now), key=str):
        if there.get(path) != now.get(path):
            names.setdefault(_setting_name(path), (there.get(path), now.get(path)))
    typed = sorted(names, key=lambda name: not name.startswith("--"))  # what the user typed, then what follows
    shown = [f"{name} {_shown(names[name][0])} there, {_shown(names[name][1])} now" for name in typed[:3]]
    more = f"; and {len(names) - 3} more" if len(names) > 3 else ""
    return "; ".join(shown) + more


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _staging(path: Path) -> bool:
    """A hidden staging folder of ours (a plain file named alike is the user's)."""
    return path.name.startswith(STAGING) and path.is_dir() and not path.is_symlink()


def tidy(out: Path, keep_checkpoints: bool) -> None:
    """Remove our leftovers from a finished folder: staging folders and, unless kept, `checkpoints/`."""
    for entry in out.iterdir():
        if _staging(entry) or (entry.name == CHECKPOINTS and not keep_checkpoints):
            _remove(entry)


def _not_checkpoints(root: Path) -> list[str]:
    """Names in `root` (checkpoints/) that are not our checkpoint folders or their temporary folders."""
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        return [root.name]
    if not root.is_dir():
        return []
    ours = (ckpt.PREFIX, f".{ckpt.PREFIX}")
    return sorted(p.name for p in root.iterdir() if not (p.is_dir() and not p.is_symlink() and p.name.startswith(ours)))


OWN_LOCK = ".harness-finetune.lock"  # inside --out, where its parent is not writable


def out_lock(out: Path) -> tuple[Path, str]:
    """Where the lock of --out goes: beside it (`.<name>.lock`, so the folder holds only the fine-tune), or inside
    an existing --out whose parent this user cannot write (a shared project folder)."""
    parent = out.absolute().parent
    if out.is_dir() and parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):
        return out, OWN_LOCK
    return parent, f".{out.name}.lock"


def held_config_hash(out: Path) -> str | None:
    """The config hash of the fine-tune `out` holds (finished, being published, or its newest checkpoint)."""
    for manifest in (out / MANIFEST, out / READY / MANIFEST):
        found = _read(manifest) if out.is_dir() else None
        if found is not None:
            return found.get("config_hash")
    checkpoints = ckpt.list_checkpoints(out / CHECKPOINTS) if out.is_dir() else []
    return ckpt.read_state(checkpoints[-1]).get("config_hash") if checkpoints else None


def check_out(out: Path, identity_hash: str, keep_checkpoints: bool = False,
              identity: dict[str, Any] | None = None) -> tuple[dict[str, Any] | None, bool]:
    """(manifest, already_done) of the fine-tune in `out`: the finished manifest if it is done (already_done is
    False when this call finished an interrupted publish), (None, False) when it is to be trained or resumed.
    Cleans our own leftovers; raises for a foreign folder or another fine-tune."""
    if not out.is_dir():
        return None, False
    done = _read(out / MANIFEST)
    if done is not None:
        _same(done, identity_hash, out, identity)
        tidy(out, keep_checkpoints or bool(done.get("keep_checkpoints")))
        return done, True
    ready = _read(out / READY / MANIFEST)
    if ready is not None:
        _same(ready, identity_hash, out, identity)
        _finish(out, keep_checkpoints)
        return ready, False
    found = ckpt.list_checkpoints(out / CHECKPOINTS)
    theirs = _not_checkpoints(out / CHECKPOINTS)
    if theirs:  # removed with checkpoints/ once the output is written: refused, never deleted
        raise UserError(f"--out {out}: {out / CHECKPOINTS} holds files harness finetune did not write "
                        f"({', '.join(theirs[:5])}): move them out of the folder and rerun (nothing was deleted)")
    if found and (state := ckpt.read_state(found[-1])).get("config_hash") != identity_hash:
        why = settings_differ(state.get("config"), identity) or (
            "other model, data, settings or image decoding, or a harness that named the base model otherwise, e.g. "
            "a local folder before it was named by its content")
        raise UserError(f"--out {out} holds checkpoints of a different fine-tune ({why}): choose another --out, or "
                        f"delete {out / CHECKPOINTS} to start over")
    others = [p for p in out.iterdir() if p.name not in (CHECKPOINTS, OWN_LOCK)]
    if not others:
        return None, False
    foreign = [p.name for p in others if not _staging(p)]
    if found and foreign:
        raise UserError(f"--out {out} holds this fine-tune's checkpoints and also files harness finetune did not "
                        f"write ({', '.join(sorted(foreign)[:5])}): move them out of the folder and rerun to "
                        "resume (nothing was deleted)")
    if not found:
        shown = ", ".join(sorted(foreign or [p.name for p in others])[:5])
        raise UserError(f"--out {out} exists and is not a fine-tune output folder ({shown}): "
                        "choose a new or empty folder")
    for entry in others:  # our staging folders only: the checkpoints hold the training, the output is redone
        _remove(entry)
    return None, False
