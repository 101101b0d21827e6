"""Checkpoints that cannot run as they are (a processor needing a missing package, a hand-converted checkpoint
whose chat template or processor disagrees with its model) stop `harness run` with one line, not a traceback."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_models


def run_hf(folder: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "harness", "run", "--model", "hf", "--model-args", f"model={folder}",
                           "--task", "phantom-vqa", "--limit", "2", "--judge", "exact", "--no-progress",
                           "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, env=env)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_a_processor_that_needs_torchvision_says_so(tmp_path):
    # transformers 5 builds Qwen2-VL's processor with a video processor, which needs torchvision
    proc = run_hf(tiny_models.tiny_qwen2_vl(tmp_path / "qwen2-vl"), tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: cannot load model {tmp_path / 'qwen2-vl'}: ")  # a local folder: no revision
    assert "needs torchvision: pip install torchvision" in line and "at revision" not in line


def test_a_chat_template_without_the_image_placeholder_is_one_line(tmp_path):
    folder = tiny_models.tiny_llava(tmp_path / "llava")
    (folder / "chat_template.jinja").write_text(  # a hand conversion that lost the <image> placeholder
        "{{ bos_token }}{% for m in messages %}{% for part in m['content'] %}{% if part['type'] == 'text' %}"
        "USER: {{ part['text'] }}{% endif %}{% endfor %}{% endfor %} ASSISTANT:")
    proc = run_hf(folder, tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]  # every sample failed with the reason, each on its line
    assert line.startswith("error: all 2 samples failed") and "<image> tokens" in line
    errors = [json.loads(row)["error"] for row in next((tmp_path / "runs").iterdir()).joinpath(
        "predictions.jsonl").read_text().splitlines()]
    assert all("a hand-converted checkpoint's chat template must write the image placeholder" in e for e in errors)


def test_a_sample_the_processor_refuses_fails_alone_and_its_batch_goes_on():
    """LLaVA-NeXT at some image sizes, or a question with a literal <image>: one sample's image tokens and features
    disagree; the other samples of its micro-batch are generated."""
    from harness.plugins.hf_generation import AdaptiveBatcher

    def prepare(chunk: list[str]) -> list[str]:
        if "odd" in chunk and len(chunk) > 1 or chunk == ["odd"]:
            raise ValueError("Image features and image tokens do not match: tokens: 576, features 580")
        return chunk

    out = AdaptiveBatcher(limit=4).run(["a", "odd", "b", "c", "d"], prepare,
                                       lambda chunk, _: [x.upper() for x in chunk],
                                       lambda item, exc: f"failed {item}: {exc}")
    assert out[0] == "A" and out[2:] == ["B", "C", "D"]
    assert out[1].startswith("failed odd: Image features and image tokens do not match") and "this sample" in out[1]
