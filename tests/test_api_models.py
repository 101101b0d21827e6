"""API model baselines (`gpt-4o`, `claude`, `openai-compatible`) against local fake provider servers.

The fake servers (tests/fake_llm_servers.py) speak the OpenAI and Anthropic wire formats on 127.0.0.1. Their
reply function decodes the inline images of each request and answers the phantom question asked about exactly
those pixels, so a perfect score proves that the right images arrived intact with the right prompt.
Run as a script, this file is the `harness` CLI with any task YAML listed in $API_TEST_TASKS registered.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_llm_servers import FakeLLMServer, Fault, prompt_text

from harness.errors import UserError
from harness.model_api import ModelContext
from harness.plugin_manager import tasks as task_registry
from harness.task import Task
from harness.task_config import load_task_config
from harness.types import GenerationRequest, GenerationSettings

HERE = Path(__file__).resolve()
SECRET = "sk-test-SECRET-7c1e9a40b2d85f36"
FAST = "max_retries=1,retry_base_delay=0.01,retry_max_delay=0.02"


def api_plugin(task_files: list[Path]) -> Any:
    """A pluggy plugin that registers these task files (the API models come from plugins/builtin.py)."""
    import types

    from harness.hookspecs import hookimpl

    plugin = types.ModuleType("tests_api_models")

    @hookimpl
    def register_tasks(register) -> None:
        for path in task_files:
            register(Path(path))

    plugin.register_tasks = register_tasks  # type: ignore[attr-defined]
    return plugin


def launch(argv: list[str]) -> int:
    """`harness ARGV` in this process with the task files in $API_TEST_TASKS registered."""
    from harness.cli import main
    from harness.plugin_manager import get_plugin_manager

    tasks = [Path(p) for p in os.environ.get("API_TEST_TASKS", "").split(os.pathsep) if p]
    get_plugin_manager().register(api_plugin(tasks), name="tests.api_models")
    return main(argv)


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# ------------------------------------------------------------------------------------------------ helpers
def pixel_hash(image: Any) -> str:
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def decode(data: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(data))  # PNG: lossless, so the pixels must equal the sample's


def request_images(body: dict[str, Any]) -> list[bytes]:
    """The inline images of a chat request in either wire format, checking each one's declared type."""
    out = []
    for block in body["messages"][0]["content"]:
        if block["type"] == "image_url":
            head, _, data = block["image_url"]["url"].partition(",")
            assert head == "data:image/png;base64"
            out.append(base64.b64decode(data))
        elif block["type"] == "image":
            assert block["source"]["type"] == "base64" and block["source"]["media_type"] == "image/png"
            out.append(base64.b64decode(block["source"]["data"]))
    return out


@pytest.fixture(scope="module")
def phantom_answers(tmp_path_factory) -> dict[str, list[tuple[str, str]]]:
    """pixel hash of a phantom test image -> [(question, answer)] of the samples about it.

    The phantom data is generated once into the session's cache (the one tests/conftest.py points to).
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "harness-cache"))
        samples = Task(task_registry().get("phantom-vqa")).samples("test")[:40]
        table: dict[str, list[tuple[str, str]]] = {}
        for sample in samples:
            table.setdefault(pixel_hash(sample.images[0].open()), []).append((sample.question, sample.answer))
    return table


@pytest.fixture
def answer_from_pixels(phantom_answers):
    """A fake-server reply function: the answer to the phantom question asked about the request's image."""

    def reply(body: dict[str, Any]) -> str:
        images = request_images(body)
        if len(images) != 1:
            return f"expected one image, got {len(images)}"
        text = prompt_text(body)
        for question, answer in phantom_answers.get(pixel_hash(decode(images[0])), []):
            if question in text:
                return answer
        return "unknown image or question"

    return reply


@pytest.fixture
def env(phantom_answers, own_llm_cache, monkeypatch) -> dict[str, str]:
    """Environment of a harness run: its own LLM cache (the phantom data shared), no API keys."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_COMPATIBLE_API_KEY", "API_TEST_TASKS"):
        monkeypatch.delenv(name, raising=False)
    return dict(os.environ)


def harness_subprocess(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`harness ARGS` in a fresh interpreter (this file run as a script), with this process's environment."""
    proc = subprocess.run([sys.executable, str(HERE), *args], env=dict(os.environ), capture_output=True,
                          text=True, timeout=120, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def harness(env, capsys):
    """`harness(*args)`: the CLI in this process (faster than a subprocess: the SDKs import once) with the API
    models and the task files appended to `harness.task_files` registered; returns exit code and output."""
    from harness import plugin_manager
    from harness.cli import main

    task_files: list[Path] = []
    pm = plugin_manager.get_plugin_manager()
    pm.register(api_plugin(task_files), name="tests.api_models")
    registries = (plugin_manager.models, plugin_manager.tasks, plugin_manager.judges)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        for registry in registries:
            registry.cache_clear()
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        if check:
            assert code == 0, err
        return subprocess.CompletedProcess(list(args), code, out, err)

    run.task_files = task_files  # type: ignore[attr-defined]
    yield run
    pm.unregister(name="tests.api_models")
    for registry in registries:
        registry.cache_clear()


def run_args(model: str, model_args: str, runs: Path, *extra: str) -> list[str]:
    return ["run", "--model", model, "--model-args", model_args, "--task", "phantom-vqa", "--limit", "10",
            "--judge", "exact", "--runs-dir", str(runs), "--no-progress", *extra]


def only_run(runs: Path) -> Path:
    (run_dir,) = list(runs.iterdir())
    return run_dir


def predictions(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def accuracy(run_dir: Path) -> float:
    results = json.loads((run_dir / "results.json").read_text())
    return results["judges"][0]["metrics"]["accuracy"]["value"]


def assert_secret_absent(texts: list[str], *folders: Path) -> None:
    for text in texts:
        assert SECRET not in text and SECRET[-8:] not in text
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path


# -------------------------------------------------------------------------------------------------- tests
def test_openai_compatible_end_to_end_and_reruns_make_no_calls(env, harness, answer_from_pixels, tmp_path):
    runs = tmp_path / "runs"
    with FakeLLMServer(reply=answer_from_pixels) as server:
        args = run_args("openai-compatible", f"base_url={server.openai_base_url},model=tiny", runs)
        first = harness_subprocess(*args)
        assert server.chat_calls == 10
        run_dir = only_run(runs)
        assert accuracy(run_dir) == 1.0  # every request carried its own image, intact, with its question
        for body in server.requests:
            assert body["model"] == "tiny" and body["max_tokens"] == 16
            assert body["temperature"] == 0.0 and body["seed"] == 0
            parts = body["messages"][0]["content"]
            assert [p["type"] for p in parts] == ["image_url", "text"]
            assert parts[1]["text"].endswith("Answer with a single word or short phrase.")
        rows = predictions(run_dir)
        by_prompt = {prompt_text(b): b for b in server.requests}
        for row in rows:
            body = next(b for p, b in by_prompt.items() if p.startswith(row["question"]))
            assert (row["prompt_tokens"], row["completion_tokens"]) == server.usage(body, row["prediction"])
        results = json.loads((run_dir / "results.json").read_text())
        assert results["model"]["identity"] == {"provider": "openai-compatible", "model": "tiny",
                                                "base_url": server.openai_base_url}
        assert "10 requests, 0 from the cache" in first.stderr and "no API fees counted" in first.stderr
        usage = json.loads((run_dir / "model.json").read_text())["identity"]["usage"]  # written after generating
        assert usage["requests"] == 10 and usage["from_cache"] == 0 and usage["input_tokens"] > 0

        again = harness_subprocess(*args)  # the same command: nothing left to generate
        assert server.chat_calls == 10 and again.stdout == first.stdout
        elsewhere = harness(*args, "--output", str(tmp_path / "copy"))  # a new run dir: all from the cache
        assert server.chat_calls == 10
        assert "10 requests, 10 from the cache" in elsewhere.stderr
        assert [r["prediction"] for r in predictions(tmp_path / "copy")] == [r["prediction"] for r in rows]
        assert accuracy(tmp_path / "copy") == 1.0


def test_claude_through_the_anthropic_format(env, harness, answer_from_pixels, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    with FakeLLMServer(reply=answer_from_pixels, api_key=SECRET) as server:
        proc = harness(*run_args("claude", f"base_url={server.anthropic_base_url}", runs))
        assert server.counts["POST /v1/messages"] == 10 and server.chat_calls == 10
        for body in server.requests:
            assert body["model"] == "claude-sonnet-4-6" and body["max_tokens"] == 16
            assert "temperature" not in body and "seed" not in body
            assert [b["type"] for b in body["messages"][0]["content"]] == ["image", "text"]
        run_dir = only_run(runs)
        assert accuracy(run_dir) == 1.0
        identity = json.loads((run_dir / "results.json").read_text())["model"]["identity"]
        assert identity["provider"] == "anthropic" and identity["model"] == "claude-sonnet-4-6"
        assert "temperature" in identity["sampling"]
        loaded = json.loads((run_dir / "model.json").read_text())["identity"]  # the alias as given, and why
        assert loaded["requested"] == "claude" and "claude-sonnet-4-5-20250929" in loaded["alias_note"]
        rows = predictions(run_dir)
        tokens_in = sum(r["prompt_tokens"] for r in rows)
        tokens_out = sum(r["completion_tokens"] for r in rows)
        assert tokens_in > 85 * 10 and tokens_out >= 10
        assert f"{tokens_in} input + {tokens_out} output tokens" in proc.stderr
        # the fake server is a custom base URL, not Anthropic's API: no list price applies (test_pricing.py)
        assert "no API fees counted (not the provider's own endpoint: http://127.0.0.1" in proc.stderr
        assert_secret_absent([proc.stdout, proc.stderr], runs, Path(os.environ["HARNESS_CACHE_DIR"]))


def test_greedy_api_runs_drop_what_their_api_is_not_sent(env, harness, answer_from_pixels, tmp_path, monkeypatch):
    """--top-p on a greedy API run made another run id (another leaderboard row) though nothing of it was sent, and
    so did --seed or --temperature on claude (Anthropic's API takes none); an OpenAI-format seed is sent, and stays
    in the run id."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", SECRET)
    runs = tmp_path / "runs"
    with FakeLLMServer(reply=answer_from_pixels, api_key=SECRET) as server:
        compatible = run_args("openai-compatible", f"base_url={server.openai_base_url},model=tiny", runs, "--limit",
                              "2")
        assert harness(*compatible).returncode == 0
        proc = harness(*compatible, "--top-p", "0.5")
        assert "warning: --top-p 0.5 ignored: decoding is greedy (temperature 0)" in proc.stderr
        assert len(list(runs.iterdir())) == 1 and all("top_p" not in body for body in server.requests)
        harness(*compatible, "--seed", "3")
        assert len(list(runs.iterdir())) == 2 and server.requests[-1]["seed"] == 3  # sent: another run
        claude = tmp_path / "claude"
        args = run_args("claude", f"base_url={server.anthropic_base_url}", claude, "--limit", "2")
        assert harness(*args).returncode == 0
        proc = harness(*args, "--seed", "3", "--top-p", "0.5")
        assert ("warning: --top-p 0.5 and --seed 3 ignored: model 'claude' does not send them (its API takes no "
                "temperature, top-p, seed), so this is the run without them") in proc.stderr
        assert len(list(claude.iterdir())) == 1
        # sampling: the API samples at its default whatever --temperature says, so it made another run id (another
        # leaderboard row labelled with a temperature never applied)
        proc = harness(*args, "--temperature", "0.7")
        assert "warning: --temperature 0.7 ignored: model 'claude' does not send it" in proc.stderr
        assert len(list(claude.iterdir())) == 1


def test_gpt4o_refused_key_stops_at_once_and_never_leaks(env, harness, answer_from_pixels, tmp_path,
                                                          monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeLLMServer(reply=answer_from_pixels, api_key="another-key") as server:  # echoes the key it got
        args = run_args("gpt-4o", f"base_url={server.openai_base_url},concurrency=1", runs)
        refused = harness(*args, check=False)
        assert refused.returncode == 2 and server.chat_calls == 1  # 401 is not retried
        lines = refused.stderr.strip().splitlines()
        assert lines[-1].startswith("error: openai model gpt-4o-2024-08-06") and "HTTP 401" in lines[-1]
        assert "OPENAI_API_KEY" in lines[-1]
        assert not runs.exists() or not any(runs.iterdir())  # stopped before any work: no run folder left

        server.api_key = SECRET
        done = harness(*args)
        assert server.chat_calls == 11
        body = server.requests[-1]
        assert body["model"] == "gpt-4o-2024-08-06" and body["max_completion_tokens"] == 16
        run_dir = only_run(runs)
        assert accuracy(run_dir) == 1.0
        rows = predictions(run_dir)
        tokens_in, tokens_out = (sum(r[k] for r in rows) for k in ("prompt_tokens", "completion_tokens"))
        assert tokens_in > 0 and tokens_out > 0
        assert "no API fees counted" in done.stderr  # a custom base URL: no list price
        identity = json.loads((run_dir / "results.json").read_text())["model"]["identity"]
        assert identity == {"provider": "openai", "model": "gpt-4o-2024-08-06",
                            "base_url": server.openai_base_url, "max_image_side": 2048}
        assert_secret_absent([refused.stdout, refused.stderr, done.stdout, done.stderr], runs,
                             Path(os.environ["HARNESS_CACHE_DIR"]))


def test_provider_that_stays_down_ends_the_run_and_keeps_earlier_batches(env, harness, answer_from_pixels,
                                                                         tmp_path):
    runs = tmp_path / "runs"
    with FakeLLMServer(reply=answer_from_pixels) as server:
        server.fault_fn = lambda body, index: Fault(status=500, message="down") if index >= 4 else None
        model_args = f"base_url={server.openai_base_url},model=tiny,concurrency=1,down_after=2,{FAST}"
        args = run_args("openai-compatible", model_args, runs, "--batch-size", "2")
        down = harness(*args, check=False)
        assert down.returncode == 2
        last = down.stderr.strip().splitlines()[-1]
        assert last.startswith("error: openai-compatible model tiny at") and "unavailable" in last
        assert "HTTP 500" in last and "run the same command again" in last
        assert server.chat_calls == 8  # 4 answered, then 2 requests x 2 attempts
        run_dir = only_run(runs)
        assert [r["prediction"] for r in predictions(run_dir)] == [r["answer"] for r in predictions(run_dir)]
        assert len(predictions(run_dir)) == 4  # the two batches finished before the outage

        server.fault_fn = None
        harness(*args)
        assert server.chat_calls == 8 + 6
        assert len(predictions(run_dir)) == 10 and accuracy(run_dir) == 1.0


@pytest.fixture
def credentialed_task(tmp_path) -> Path:
    config = yaml.safe_load((HERE.parents[1] / "tasks" / "phantom-vqa.yaml").read_text())
    config.update(id="phantom-vqa-restricted", aliases=[])
    config["metadata"]["credentialed"] = True
    path = tmp_path / "phantom-vqa-restricted.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_credentialed_task_refused_unless_local_or_allowed(env, harness, answer_from_pixels,
                                                           credentialed_task, tmp_path, monkeypatch):
    harness.task_files.append(credentialed_task)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", SECRET)  # what an openai-compatible server receives
    runs = tmp_path / "runs"
    with FakeLLMServer(reply=answer_from_pixels, api_key=SECRET) as server:
        base = f"base_url={server.openai_base_url}"
        args = ["--task", "phantom-vqa-restricted", "--limit", "3", "--judge", "exact",
                "--runs-dir", str(runs), "--no-progress"]
        refused = harness("run", "--model", "gpt-4o", "--model-args", base, *args, check=False)
        assert refused.returncode == 2 and server.chat_calls == 0 and not runs.exists()
        line = refused.stderr.strip()
        assert line.startswith("error: model 'gpt-4o': task 'phantom-vqa-restricted' holds credentialed data")
        assert "allow_external=true" in line and len(line.splitlines()) == 1
        # a server on this machine may see the data; so may an API the user allows explicitly
        harness("run", "--model", "openai-compatible", "--model-args", f"{base},model=tiny", *args)
        harness("run", "--model", "gpt-4o", "--model-args", f"{base},allow_external=true", *args)
        assert server.chat_calls == 6
    labels = {json.loads((d / "run.json").read_text())["model"]["label"] for d in runs.iterdir()}
    assert len(labels) == 2 and not any("allow_external" in label for label in labels)  # a permission: same run
    # a run made before its task YAML was marked credentialed: re-judging it goes by what the task says now
    run_dir = next(runs.iterdir())
    manifest = json.loads((run_dir / "run.json").read_text())
    manifest["task"]["credentialed"] = False
    (run_dir / "run.json").write_text(json.dumps(manifest))
    rejudged = harness("score", str(run_dir), "--judge", "gpt4", "--no-progress", check=False)
    assert rejudged.returncode == 2 and "credentialed" in rejudged.stderr and "--allow-external-judge" in \
        rejudged.stderr, rejudged.stderr
    # its predictions scored as a file named after the task: the same data, the same refusal
    copied = tmp_path / "preds.jsonl"
    copied.write_text((run_dir / "predictions.jsonl").read_text())
    as_file = harness("score", str(copied), "--task-type", "vqa", "--task-name",
                      "phantom-vqa-restricted", "--judge", "gpt4", "--output", str(tmp_path / "ext"), "--no-progress",
                      check=False)
    assert as_file.returncode == 2 and "--allow-external-judge" in as_file.stderr, as_file.stderr
    task = Task(load_task_config(credentialed_task))
    remote = {"base_url": "http://10.20.30.40:8000/v1", "model": "tiny"}
    from harness.plugins.api_vlm import ClaudeModel, OpenAICompatibleModel

    with pytest.raises(UserError, match="credentialed data and tiny is an external API"):
        OpenAICompatibleModel.run_identity(remote, ModelContext(task=task))
    with pytest.raises(UserError, match="credentialed"):  # a loopback URL in front of Claude is still Claude
        ClaudeModel.run_identity({"base_url": "http://127.0.0.1:9/"}, ModelContext(task=task))
    assert OpenAICompatibleModel.run_identity(dict(remote, allow_external="true"), ModelContext(task=task))


def test_several_images_in_order_sampling_and_stop_strings(monkeypatch, tmp_path):
    from PIL import Image

    from harness.plugins.api_vlm import OpenAICompatibleModel

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    frontal, lateral = Image.new("RGB", (8, 6), (200, 10, 10)), Image.new("L", (5, 7), 99)
    with FakeLLMServer(reply=lambda body: " Normal chest. \nExtra text") as server:  # spaces cut, as hf and vllm do
        model = OpenAICompatibleModel({"base_url": server.openai_base_url, "model": "tiny"}, ModelContext())
        settings = GenerationSettings(max_new_tokens=64, temperature=0.7, do_sample=True, seed=3, stop=["\n"])
        request = GenerationRequest(id="a", images=[frontal, lateral], prompt="Write the findings.",
                                    messages=[], generation=settings, task_kind="report")
        (out,) = model.generate([request])
        model.close()
    assert out.text == "Normal chest." and out.error is None
    body = server.requests[0]
    sent = [decode(data) for data in request_images(body)]
    assert [img.size for img in sent] == [(8, 6), (5, 7)]
    assert pixel_hash(sent[0]) == pixel_hash(frontal) and pixel_hash(sent[1]) == pixel_hash(lateral)
    assert body["messages"][0]["content"][-1] == {"type": "text", "text": "Write the findings."}
    assert (body["temperature"], body["seed"], body["max_tokens"]) == (0.7, 3, 64)


def test_listed_with_the_other_models(harness):
    listing = harness("list", "models").stdout
    for model_id in ("gpt-4o", "claude", "openai-compatible"):
        assert any(line.split()[:1] == [model_id] for line in listing.splitlines()), listing


if __name__ == "__main__":
    sys.exit(launch(sys.argv[1:]))
