"""Shared test setup: offline hub variables, the real data in ../shared/data, temporary caches, one torch
thread for tiny models, and the random tiny-vlm and tiny PeFoMed files (tests/tiny_pefomed.py) built once per
session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HARNESS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep every test's caches (phantom data, judge cache) out of the user's home."""
    cache = tmp_path_factory.getbasetemp() / "harness-cache"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))
    for name in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):  # a developer's proxy must not receive test calls
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data expected at {SHARED_DATA} (set HARNESS_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices gain nothing from threads, and OpenMP threads stall badly on a busy 2-core machine.
    Modules of tiny-model tests take it with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pefomed_tiny(tmp_path_factory):
    """EVA weights, vision config, LLaMA folder and PeFoMed checkpoint of the tiny PeFoMed (read-only)."""
    from tiny_pefomed import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny_pefomed"))


@pytest.fixture(scope="session")
def pefomed_converted(pefomed_tiny, tmp_path_factory):
    """The tiny PeFoMed checkpoint converted by `harness convert pefomed-checkpoint` (read-only)."""
    from tiny_pefomed import convert

    out = tmp_path_factory.mktemp("converted") / "adapter"
    assert convert(str(pefomed_tiny.checkpoint_path), "--out", str(out), "--base-model", str(pefomed_tiny.llm_dir)) == 0
    return out


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    """The random tiny-vlm build (not the pretrained one), in the session's shared harness cache."""
    from harness.plugins.tiny_vlm import ensure_tiny_vlm

    return ensure_tiny_vlm(tmp_path_factory.getbasetemp() / "harness-cache", base="random")


@pytest.fixture
def own_llm_cache(tmp_path, monkeypatch) -> Path:
    """A cache folder of this test's own (an empty LLM cache) with the session's phantom data linked in (generated
    once), set as HARNESS_CACHE_DIR; returns it."""
    from harness.plugin_manager import tasks
    from harness.task import Task

    shared = Path(os.environ["HARNESS_CACHE_DIR"])
    Task(tasks().get("phantom-vqa")).samples("test")  # generated once into the session cache
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "phantom").symlink_to(shared / "phantom", target_is_directory=True)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))
    return cache
