"""The HTTP side of tests/fake_llm_servers.py: the request handler speaking both providers' routes.

Kept apart so each file stays small; `FakeLLMServer` (the scriptable state) lives in fake_llm_servers.py.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import sys
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from fake_llm_servers import FakeLLMServer, Fault


def iso(offset_s: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=offset_s)).isoformat().replace("+00:00", "Z")


_ROUTE_WORDS = {"", "v1", "chat", "completions", "messages", "files", "batches", "content", "results", "cancel",
                "models", "version"}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connect at once (concurrency 64 and more)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a timed-out or cancelled call) is normal here; socketserver would print its
        # traceback to stderr, where the tests look for tracebacks of the harness.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    fake: FakeLLMServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    # plumbing --------------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    def _key(self) -> str:
        auth = self.headers.get("Authorization", "")
        return auth.removeprefix("Bearer ").strip() or self.headers.get("x-api-key", "")

    def _flavor(self) -> str:
        return "anthropic" if self.path.startswith("/v1/messages") else "openai"

    def _route(self) -> str:
        parts = self.path.split("?")[0].rstrip("/").split("/")
        # normalise ids: /v1/batches/batch_1 -> /v1/batches/{id}
        return "/".join(p if p in _ROUTE_WORDS else "{id}" for p in parts)

    # dispatch --------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET", b"")

    def do_POST(self) -> None:
        self._dispatch("POST", self._read_body())

    def _dispatch(self, method: str, raw: bytes) -> None:
        fake = self.fake
        route = self._route()
        with fake._lock:
            fake.counts[f"{method} {route}"] += 1
            fake.last_key = self._key()
        if fake.api_key is not None and self._key() != fake.api_key:
            # echo the key like a careless server would: the client must not leak it
            self._send(401, fake.error_body(self._flavor(), 401, f"Incorrect API key provided: {self._key()}"))
            return
        handler = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/messages"): self._chat,
            ("POST", "/v1/files"): self._upload,
            ("GET", "/v1/files/{id}"): self._file_info,
            ("GET", "/v1/models"): self._models,
            ("GET", "/version"): self._version,
            ("GET", "/v1/files/{id}/content"): self._file_content,
            ("POST", "/v1/batches"): self._openai_batch_create,
            ("GET", "/v1/batches"): self._batch_list,
            ("GET", "/v1/batches/{id}"): self._openai_batch_get,
            ("POST", "/v1/messages/batches"): self._anthropic_batch_create,
            ("GET", "/v1/messages/batches"): self._batch_list,
            ("GET", "/v1/messages/batches/{id}"): self._anthropic_batch_get,
            ("GET", "/v1/messages/batches/{id}/results"): self._anthropic_batch_results,
        }.get((method, route))
        if handler is None:
            self._send(404, fake.error_body(self._flavor(), 404, f"no route {method} {self.path}"))
            return
        handler(raw)

    def _chat(self, raw: bytes) -> None:
        fake = self.fake
        flavor = self._flavor()
        body = json.loads(raw)
        problem = fake.invalid(flavor, body, self.headers.get("anthropic-version", ""))
        if problem:
            self._send(400, fake.error_body(flavor, 400, problem))
            return
        with fake._lock:
            index = len(fake.requests)
            fake.requests.append(body)
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            fault = fake._take_fault(body, index)
            if fake.latency:
                time.sleep(fake.latency)
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if fault is not None and fault.body is not None:
                self._send(fault.status, fault.body.replace(b"{key}", self._key().encode()))
                return
            if fault is not None and fault.status != 200:
                headers = {"retry-after": fault.retry_after} if fault.retry_after is not None else {}
                message = fault.message.replace("{key}", self._key())
                self._send(fault.status, fake.error_body(flavor, fault.status, message), headers)
                return
            text = fault.text if fault is not None and fault.text is not None else fake.reply(body)
            if flavor == "anthropic":
                self._send(200, fake.anthropic_message(body, text))
            else:
                self._send(200, fake.openai_completion(body, text))
        finally:
            with fake._lock:
                fake.in_flight -= 1

    def _upload(self, raw: bytes) -> None:
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        fields: dict[str, Any] = {}
        filename = "upload.jsonl"
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                filename = part.get_filename()
            fields[name] = part.get_payload(decode=True)
        file_id = self.fake._next_id("file-")
        self.fake.files[file_id] = fields["file"]
        self._send(200, {"id": file_id, "object": "file", "bytes": len(fields["file"]),
                         "created_at": int(time.time()), "filename": filename,
                         "purpose": fields.get("purpose", b"batch").decode(), "status": "processed"})

    def _models(self, raw: bytes) -> None:  # vLLM's /v1/models: an adapter's card has root and parent
        self._send(200, {"object": "list", "data": self.fake.model_cards})

    def _version(self, raw: bytes) -> None:  # vLLM's GET /version
        if self.fake.server_version is None:
            self._send(404, self.fake.error_body("openai", 404, "no route GET /version"))
            return
        self._send(200, {"version": self.fake.server_version})

    def _file_info(self, raw: bytes) -> None:
        file_id = self.path.split("/")[3]
        if file_id not in self.fake.files:
            self._send(404, self.fake.error_body("openai", 404, f"no file {file_id}"))
            return
        self._send(200, {"id": file_id, "object": "file", "bytes": len(self.fake.files[file_id]),
                         "created_at": int(time.time()), "filename": "f.jsonl", "purpose": "batch",
                         "status": "processed"})

    def _file_content(self, raw: bytes) -> None:
        file_id = self.path.split("/")[3]
        if file_id not in self.fake.files:
            self._send(404, self.fake.error_body("openai", 404, f"no file {file_id}"))
            return
        self._send(200, self.fake.files[file_id], content_type="application/octet-stream")

    def _openai_batch_create(self, raw: bytes) -> None:
        body = json.loads(raw)
        if body.get("input_file_id") not in self.fake.files:
            self._send(400, self.fake.error_body("openai", 400, "unknown input_file_id"))
            return
        fault = self.fake.take_create_fault()
        batch = self.fake.new_openai_batch(body) if fault is None or fault.creates else None
        self._created(fault, batch)

    def _created(self, fault: Fault | None, batch: dict[str, Any] | None) -> None:
        """The reply to a create call: the batch, or (after the fault's delay) the fault's error."""
        if fault is not None:
            time.sleep(fault.delay)
            if fault.status != 200 or batch is None:
                status = 500 if fault.status == 200 else fault.status
                self._send(status, self.fake.error_body(self._flavor(), status, fault.message))
                return
        assert batch is not None
        self._send(200, public(batch))

    def _batch_list(self, raw: bytes) -> None:
        """Batches newest first, `limit` per page (capped at `list_limit`), after the id `after` / `after_id`."""
        query = parse_qs(urlsplit(self.path).query)
        flavor = self._flavor()
        after = (query.get("after_id" if flavor == "anthropic" else "after") or [None])[0]
        limit = min(int((query.get("limit") or ["20"])[0]), self.fake.list_limit)
        prefix = "msgbatch_" if flavor == "anthropic" else "batch_"
        newest = [public(b) for b in reversed(list(self.fake.batches.values())) if b["id"].startswith(prefix)]
        ids = [b["id"] for b in newest]
        start = ids.index(after) + 1 if after in ids else 0
        page = newest[start:start + limit]
        listed = {"data": page, "has_more": start + limit < len(newest),
                  "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}
        self._send(200, listed if flavor == "anthropic" else {"object": "list", **listed})

    def _openai_batch_get(self, raw: bytes) -> None:
        batch = self.fake.batches.get(self.path.split("/")[3])
        if batch is None:
            self._send(404, self.fake.error_body("openai", 404, "no such batch"))
            return
        with self.fake._lock:
            if batch["status"] == "validating":
                batch["status"] = "in_progress"
        self.fake.poll_batch(batch, self.fake._finish_openai_batch)
        self._send(200, public(batch))

    def _anthropic_batch_create(self, raw: bytes) -> None:
        body = json.loads(raw)
        fault = self.fake.take_create_fault()
        batch = self.fake.new_anthropic_batch(body["requests"]) if fault is None or fault.creates else None
        self._created(fault, batch)

    def _anthropic_batch_get(self, raw: bytes) -> None:
        batch = self.fake.batches.get(self.path.split("/")[4])
        if batch is None:
            self._send(404, self.fake.error_body("anthropic", 404, "no such batch"))
            return
        self.fake.poll_batch(batch, self.fake._finish_anthropic_batch)
        self._send(200, public(batch))

    def _anthropic_batch_results(self, raw: bytes) -> None:
        batch = self.fake.batches.get(self.path.split("/")[4])
        if batch is None or "_results" not in batch:
            self._send(404, self.fake.error_body("anthropic", 404, "results not ready"))
            return
        self._send(200, batch["_results"], content_type="application/binary")


def public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}
