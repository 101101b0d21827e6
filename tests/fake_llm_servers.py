"""Real HTTP servers on 127.0.0.1 that speak the OpenAI and Anthropic wire formats, for tests and benchmarks.

One `FakeLLMServer` serves both formats on an ephemeral port:
- OpenAI (`openai_base_url`, ends in /v1): /v1/chat/completions, /v1/files, /v1/files/{id}/content,
  /v1/batches (create; list, newest first, `after` and `limit`), /v1/batches/{id};
- Anthropic (`anthropic_base_url`, no /v1): /v1/messages, /v1/messages/batches (create; list, newest first,
  `after_id` and `limit`), /v1/messages/batches/{id}, /v1/messages/batches/{id}/results.

Scripting: `reply(request_json) -> str` decides every reply text (`prompt_text(request_json)` gives the
request's text in either format). Fault injection: `add_faults(Fault(...), ...)` queues faults that the next chat
calls receive in arrival order; `fault_fn(request_json, call_index) -> Fault | None` decides per call (it wins
over the queue). A `Fault` can answer with a status (429 with `retry_after`, 500, 401 ...), wait `delay` seconds
(slower than the client's timeout), send a malformed `body`, or replace the reply `text` (an unparsable reply).
Inspection: `requests` (chat bodies in arrival order), `counts` (per "METHOD route"), `chat_calls`,
`max_in_flight`, `last_key` (the API key of the latest request). `latency` delays every chat reply (the
benchmark uses 0.2 s). Careless servers: "{key}" in a fault's `message` or `body` (also of batch items) becomes
the API key the server received, and `batch_failure` makes OpenAI batches end "failed" with that error message.
Batch creation: `add_create_faults(Fault(...), ...)` queues faults for the next create calls (either format): by
default the batch is made and then the reply waits `delay` or answers the fault's status (a reply lost after the
server acted); `Fault(creates=False)` refuses without making one. `list_limit` caps the batches per list page;
`new_openai_batch(body)` and `new_anthropic_batch(requests)` make a batch as if someone else had.

Usable as a context manager (`with FakeLLMServer(reply=...) as server:`) or via the pytest fixture
`fake_llm_server` (import it into a test module or a conftest).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

import fake_llm_http
import pytest


@dataclass
class Fault:
    """What one chat call receives instead of a normal reply."""

    status: int = 200
    retry_after: str | None = None  # the `retry-after` header (seconds or an HTTP date)
    delay: float = 0.0  # seconds to wait before answering
    body: bytes | None = None  # a raw body to send as is (e.g. malformed JSON)
    text: str | None = None  # a reply text that replaces reply(request)
    message: str = "injected fault"
    creates: bool = True  # for a batch creation: whether the batch is made before the fault answers


def prompt_text(request_json: dict[str, Any]) -> str:
    """All text of a chat request (system and messages, either format), joined by newlines."""
    parts: list[str] = []
    system = request_json.get("system")
    if isinstance(system, str):
        parts.append(system)
    elif isinstance(system, list):
        parts.extend(block.get("text", "") for block in system if isinstance(block, dict))
    for message in request_json.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(block.get("text", "") for block in content if block.get("type") == "text")
    return "\n".join(parts)


def count_images(request_json: dict[str, Any]) -> int:
    n = 0
    for message in request_json.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            n += sum(1 for block in content if block.get("type") in ("image", "image_url"))
    return n


def echo_reply(request_json: dict[str, Any]) -> str:
    """Default reply: the last line of the request's text."""
    text = prompt_text(request_json).strip()
    return "echo: " + (text.splitlines()[-1] if text else "")


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 503: "overloaded_error",
                529: "overloaded_error"}


class FakeLLMServer:
    """A scriptable OpenAI + Anthropic server in a background thread (see the module docstring)."""

    def __init__(
        self,
        reply: Callable[[dict[str, Any]], str] | None = None,
        *,
        latency: float = 0.0,
        fault_fn: Callable[[dict[str, Any], int], Fault | None] | None = None,
        batch_polls: int = 1,
        api_key: str | None = None,
    ) -> None:
        self.reply = reply or echo_reply
        self.latency = latency
        self.fault_fn = fault_fn
        self.batch_polls = batch_polls  # status polls before a batch is finished
        self.hold_batches = False  # keep every batch in progress (a slow batch; a simulated restart)
        self.api_key = api_key  # when set, calls with another key get 401
        self.last_key = ""  # the key of the latest request ("{key}" in fault messages and bodies)
        self.served_model: str | None = None  # the model name replies give (default: the one asked for)
        self.model_cards: list[dict[str, Any]] = []  # what GET /v1/models lists
        self.server_version: str | None = None  # what GET /version says (None: 404, as servers other than vLLM)
        self.batch_failure: str | None = None  # OpenAI batches end "failed" with this error message
        self.requests: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}  # in creation order
        self.list_limit = 100  # the most batches one list page holds
        self._faults: list[Fault] = []
        self._create_faults: list[Fault] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> FakeLLMServer:
        server = self

        class Handler(fake_llm_http.Handler):
            fake = server

        self._httpd = fake_llm_http.Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # scripting and inspection ----------------------------------------------------------------------------
    def add_faults(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def add_create_faults(self, *faults: Fault) -> None:
        with self._lock:
            self._create_faults.extend(faults)

    def take_create_fault(self) -> Fault | None:
        with self._lock:
            return self._create_faults.pop(0) if self._create_faults else None

    def new_openai_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        """A batch as POST /v1/batches makes it from `body` (also one another client made)."""
        batch = {"id": self._next_id("batch_"), "object": "batch", "endpoint": body["endpoint"],
                 "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                 "status": "validating", "created_at": int(time.time()), "output_file_id": None,
                 "error_file_id": None, "metadata": body.get("metadata"),
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}, "_polls": 0}
        self.batches[batch["id"]] = batch
        return batch

    def new_anthropic_batch(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        """A Message Batch of `requests` as POST /v1/messages/batches makes it (also one another client made)."""
        batch = {"id": self._next_id("msgbatch_"), "type": "message_batch",
                 "processing_status": "in_progress", "created_at": fake_llm_http.iso(0),
                 "expires_at": fake_llm_http.iso(86400), "ended_at": None, "archived_at": None,
                 "cancel_initiated_at": None, "results_url": None,
                 "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0,
                                    "expired": 0},
                 "_requests": requests, "_polls": 0}
        self.batches[batch["id"]] = batch
        return batch

    @property
    def chat_calls(self) -> int:
        return self.counts["POST /v1/chat/completions"] + self.counts["POST /v1/messages"]

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.counts.clear()
            self.max_in_flight = 0

    def fill(self, text: str) -> str:
        """A fault's message with "{key}" replaced by the key this server received (a careless server)."""
        return text.replace("{key}", self.last_key)

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    def _take_fault(self, body: dict[str, Any], index: int) -> Fault | None:
        if self.fault_fn is not None:
            fault = self.fault_fn(body, index)
            if fault is not None:
                return fault
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def invalid(self, flavor: str, body: dict[str, Any], anthropic_version: str = "2026-10-21") -> str | None:
        """What the real API would reject with 400 (a malformed request from the client under test)."""
        if not body.get("model") or not isinstance(body.get("messages"), list):
            return "model and messages are required"
        if flavor == "anthropic":
            if "max_tokens" not in body:
                return "max_tokens: field required"
            if any(m.get("role") == "system" for m in body["messages"]):
                return "messages: role 'system' is not allowed; use the top-level system field"
            if anthropic_version >= "2026-10-21":
                for name in ("temperature", "top_p", "top_k"):
                    if name in body:
                        return f"{name}: Extra inputs are not permitted"
        return None

    # replies in each format --------------------------------------------------------------------------------
    def usage(self, body: dict[str, Any], text: str) -> tuple[int, int]:
        """Deterministic token counts: words of the prompt (+85 per image) and words of the reply."""
        return len(prompt_text(body).split()) + 85 * count_images(body), len(text.split())

    def openai_completion(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        n_in, n_out = self.usage(body, text)
        return {
            "id": self._next_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
            "model": self.served_model or body.get("model", ""),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": text, "refusal": None}}],
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
        }

    def anthropic_message(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        n_in, n_out = self.usage(body, text)
        tool_choice = body.get("tool_choice") or {}
        if tool_choice.get("type") == "tool":
            try:
                tool_input = json.loads(text)
            except json.JSONDecodeError:
                tool_input = {"text": text}
            content = [{"type": "tool_use", "id": self._next_id("toolu_"), "name": tool_choice["name"],
                        "input": tool_input}]
        else:
            content = [{"type": "text", "text": text}]
        return {
            "id": self._next_id("msg_"), "type": "message", "role": "assistant",
            "model": self.served_model or body.get("model", ""),
            "content": content, "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": n_in, "output_tokens": n_out},
        }

    def error_body(self, flavor: str, status: int, message: str) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(status, "api_error")
        if flavor == "anthropic":
            return {"type": "error", "error": {"type": kind, "message": message}}
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    # batches -----------------------------------------------------------------------------------------------
    def _finish_openai_batch(self, batch: dict[str, Any]) -> None:
        if self.batch_failure is not None:
            batch.update(status="failed", errors={"object": "list", "data": [
                {"code": "invalid_request", "message": self.fill(self.batch_failure), "param": None, "line": 1}]})
            return
        lines = self.files[batch["input_file_id"]].decode().splitlines()
        out, err = [], []
        for index, line in enumerate(filter(None, lines)):
            item = json.loads(line)
            fault = self._take_fault(item["body"], index)
            problem = self.invalid("openai", item["body"])
            if problem:
                fault = Fault(status=400, message=problem)
            if fault is not None and fault.status != 200:
                row = {"id": self._next_id("batch_req_"), "custom_id": item["custom_id"],
                       "response": {"status_code": fault.status, "request_id": "req",
                                    "body": self.error_body("openai", fault.status, self.fill(fault.message))},
                       "error": None}
                err.append(row)
                continue
            text = fault.text if fault is not None and fault.text is not None else self.reply(item["body"])
            out.append({"id": self._next_id("batch_req_"), "custom_id": item["custom_id"], "error": None,
                        "response": {"status_code": 200, "request_id": "req",
                                     "body": self.openai_completion(item["body"], text)}})
        out_id = self._next_id("file-")
        self.files[out_id] = "".join(json.dumps(r) + "\n" for r in out).encode()
        batch.update(status="completed", output_file_id=out_id, completed_at=int(time.time()),
                     request_counts={"total": len(out) + len(err), "completed": len(out), "failed": len(err)})
        if err:
            err_id = self._next_id("file-")
            self.files[err_id] = "".join(json.dumps(r) + "\n" for r in err).encode()
            batch["error_file_id"] = err_id

    def _finish_anthropic_batch(self, batch: dict[str, Any]) -> None:
        rows = []
        for index, item in enumerate(batch["_requests"]):
            fault = self._take_fault(item["params"], index)
            problem = self.invalid("anthropic", item["params"])
            if problem:
                fault = Fault(status=400, message=problem)
            if fault is not None and fault.status != 200:
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": _ERROR_TYPES.get(fault.status, "api_error"), "message": self.fill(fault.message)}}}
            else:
                text = fault.text if fault is not None and fault.text is not None else self.reply(item["params"])
                result = {"type": "succeeded", "message": self.anthropic_message(item["params"], text)}
            rows.append({"custom_id": item["custom_id"], "result": result})
        batch["_results"] = "".join(json.dumps(r) + "\n" for r in rows).encode()
        ok = sum(1 for r in rows if r["result"]["type"] == "succeeded")
        batch.update(processing_status="ended", ended_at=fake_llm_http.iso(0),
                     results_url=f"{self.url}/v1/messages/batches/{batch['id']}/results",
                     request_counts={"processing": 0, "succeeded": ok, "errored": len(rows) - ok,
                                     "canceled": 0, "expired": 0})

    def poll_batch(self, batch: dict[str, Any], finish: Callable[[dict[str, Any]], None]) -> None:
        batch["_polls"] += 1
        if not self.hold_batches and batch["_polls"] >= self.batch_polls and "_done" not in batch:
            batch["_done"] = True
            finish(batch)


@pytest.fixture
def fake_llm_server():
    """A started FakeLLMServer with the echo reply; tests set `.reply`, faults and latency as they need."""
    with FakeLLMServer() as server:
        yield server
