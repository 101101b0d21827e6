"""`--model vllm --model-args arch=...,base_url=...,probe=false`: the adapter probe is skipped on a server as it is
on the offline engine (it ran anyway, so a run whose adapter the user knew the probe misjudges could not go on), and
results.json says whether it ran (`served_adapter.probed`). A probe that finds the served adapter changes nothing
still stops the run when probe is left on.

The server is a local HTTP server on 127.0.0.1 answering /v1/models and /v1/completions as vLLM does; the arch
plugin is a light class defined here (no vLLM, no model weights).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from harness.errors import UserError
from harness.model_api import ModelContext

ADAPTER_DIR: list[Path] = []  # the arch plugin's adapter folder, set by the fixture


class Embedder:
    """The arch=... contract the vllm plugin checks: embed_requests, llm_path, adapter_path."""

    def __init__(self, args: dict[str, str], context: ModelContext) -> None:
        self.llm_path = Path("/nonexistent/llm")  # not a folder here: the base-weights check only notes it
        self.adapter_path = ADAPTER_DIR[0]

    def embed_requests(self, requests):  # pragma: no cover - no generation in these tests
        raise AssertionError("no generation here")


@pytest.fixture
def server(tmp_path):
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                                             "target_modules": ["q_proj"]}))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.ones((8, 16), np.float32),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": np.zeros((16, 8), np.float32)},
              str(adapter / "adapter_model.safetensors"))
    ADAPTER_DIR[:] = [adapter]
    completions: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def reply(self, data: dict) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self.reply({"object": "list", "data": [
                {"id": "/srv/llm", "object": "model", "root": "/srv/llm", "parent": None},
                {"id": "pefomed", "object": "model", "root": str(adapter), "parent": "/srv/llm"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            completions.append(body["model"])
            # the adapter answers as the base model does: a LoRA vLLM did not apply
            self.reply({"object": "text_completion", "choices": [{"index": 0, "text": " yes", "logprobs": {
                "tokens": ["token_id:42", "token_id:7"], "token_logprobs": [-0.5, -0.25]},
                "finish_reason": "length"}]})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", completions
    httpd.shutdown()


def load(base_url: str, probe: str | None) -> object:
    from harness.plugins.vllm_backend import VLLMModel

    args = {"arch": f"{__name__}:Embedder", "base_url": base_url, "served_model": "pefomed"}
    return VLLMModel(args | ({"probe": probe} if probe else {}), ModelContext())


def test_probe_false_skips_the_probe_on_a_server_and_records_that_it_did(server):
    base_url, completions = server
    model = load(base_url, "false")
    assert completions == []
    assert model.client.served_adapter["probed"] is False and model.client.served_adapter["checked"] is True


def test_the_probe_runs_on_a_server_by_default_and_stops_an_adapter_that_changes_nothing(server):
    base_url, completions = server
    with pytest.raises(UserError, match="does not change the output"):
        load(base_url, None)
    assert completions == ["/srv/llm", "pefomed"]
