"""SQLite cache of LLM call results and of submitted batch ids (`<cache dir>/llm-cache.sqlite`, WAL mode).

The key is the sha256 of the provider, resolved model, base URL, the weights an OpenAI-compatible server says it
serves under that name (vLLM's `root` and `parent`, when it says) and the whole request (messages with images as
their sha256, max_tokens, temperature, seed, json_schema, repeat index). Only successful replies are stored
(text, token usage, cost, time, base URL, the model the reply says answered), never the prompt and never a
credential. Rerunning, resuming or re-scoring therefore makes no repeated calls. Several processes may write at
once (WAL + busy timeout).
A reply the provider billed but that is no answer (refused, content-filtered, empty) is not a result to serve again:
`billed_failures` keeps only its usage and cost, one row per call, so that `harness cache` counts what was spent;
so does `paid_twice` for a reply paid for while another process stored its answer to the same request first (two
runs asking the same at once: one entry is kept, both calls were billed).

A new entry is stored `unclaimed` and claimed when the call that made it has handed its results to the caller: an
entry a killed or interrupted run paid for but never used stays unclaimed, and the run that takes it from the
cache later counts its cost as its own (so the costs of runs sharing a cache add up to what was paid). An entry
records its `owner` (host, process id and start time): while that process still runs on this host it will count the
entry itself, so another run reading it meanwhile takes it as `cached` (it cost that run nothing). A judge's claim is
pending (PENDING, with the claimer as owner) until its results file is written: a process killed in between leaves
it to the next run, as an unclaimed entry.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from harness.errors import UserError
from harness.paths import cache_dir
from harness.providers import claims, pricing
from harness.providers.base import ChatRequest, ChatResult
from harness.providers.entry_owner import PENDING, free_to_claim, owner

KEY_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY, provider TEXT NOT NULL, model TEXT NOT NULL, text TEXT NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
    batch INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, base_url TEXT);
CREATE TABLE IF NOT EXISTS batches (
    batch_key TEXT PRIMARY KEY, provider TEXT NOT NULL, model TEXT NOT NULL, base_url TEXT NOT NULL,
    batch_id TEXT NOT NULL, n_requests INTEGER NOT NULL, submitted_at REAL NOT NULL,
    request_keys TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS billed_failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    base_url TEXT, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
    batch INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS paid_twice (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    base_url TEXT, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
    batch INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL);
"""


BLANK = " \t\n\v\f\r"  # a cached text of these alone is no reply (the same set in get_many and put's SQL)


def cache_path() -> Path:
    return cache_dir() / "llm-cache.sqlite"


def _canonical_content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image":
            parts.append({"type": "image", "sha256": hashlib.sha256(part["data"]).hexdigest()})
        else:
            raise ValueError(f"ChatRequest: unknown content part type {kind!r} (expected 'text' or 'image')")
    return parts


def request_key(provider: str, model: str, base_url: str, request: ChatRequest,
                served: dict[str, str] | None = None) -> str:
    """The cache key of one request to one endpoint and model (64 hex characters); `served`: the weights an
    OpenAI-compatible server says answer under that model name (another adapter served under the same name after a
    restart is another model, not a cache hit)."""
    payload = {
        "v": KEY_VERSION, "provider": provider, "model": model, "base_url": base_url,
        "messages": [{"role": m["role"], "content": _canonical_content(m["content"])} for m in request.messages],
        "max_tokens": request.max_tokens, "temperature": request.temperature, "seed": request.seed,
        "json_schema": request.json_schema, "repeat": request.repeat,
    }
    if request.draw:  # only then: the keys of every first draw stay those of older caches
        payload["draw"] = request.draw
    if served:  # only then, likewise: a server that does not say keeps its keys
        payload["served"] = served
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def batch_key(provider: str, model: str, base_url: str, keys: Iterable[str]) -> str:
    """Identity of one batch submission: the set of its request keys."""
    blob = "\n".join([provider, model, base_url, *sorted(keys)])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _add_columns(conn: sqlite3.Connection) -> None:
    """Caches written by older versions get the newer columns: base_url (NULL: endpoint not recorded), unclaimed
    (0: their entries were all used), owner (NULL: free to claim), truncated (0: not known to be cut) and
    served_model (NULL: which model the reply says answered is unknown)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
    for name, definition in (("base_url", "TEXT"), ("unclaimed", "INTEGER NOT NULL DEFAULT 0"), ("owner", "TEXT"),
                             ("truncated", "INTEGER NOT NULL DEFAULT 0"), ("served_model", "TEXT")):
        if name in columns:
            continue
        try:
            conn.execute(f"ALTER TABLE results ADD COLUMN {name} {definition}")
        except sqlite3.OperationalError as exc:  # another process added it first
            if "duplicate column" not in str(exc):
                raise


class LLMCache:
    """The results and batches tables; one connection shared by the threads of one process (locked)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_path()
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            deadline, pause = time.monotonic() + 60, 0.05
            while True:
                try:
                    self._conn = self._open()
                    break
                except sqlite3.OperationalError as exc:  # another process opening it too: its lock, once more
                    if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                        self._cannot_open(exc)
                    time.sleep(pause)
                    pause = min(1.0, 2 * pause)
                except (OSError, sqlite3.DatabaseError) as exc:
                    self._cannot_open(exc)
        return self._conn

    def _open(self) -> sqlite3.Connection:
        """A connection with the tables and columns made: in one write transaction taken up front (BEGIN
        IMMEDIATE waits for the lock), since a statement that reads the schema and then writes it may meet a
        writer of another process in between, and SQLite then answers "database is locked" without waiting."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=60000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            _add_columns(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _cannot_open(self, exc: Exception) -> NoReturn:
        raise UserError(f"LLM cache {self.path}: cannot open it ({exc}); delete the file if it is damaged, or set "
                        "HARNESS_CACHE_DIR to a writable folder") from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> LLMCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # results ---------------------------------------------------------------------------------------------
    def get_many(self, keys: list[str]) -> dict[str, ChatResult]:
        found: dict[str, ChatResult] = {}
        with self._lock:
            db = self._db()
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    "SELECT key, text, input_tokens, output_tokens, cost_usd, unclaimed, owner, truncated, "
                    f"served_model FROM results WHERE key IN ({marks})", chunk,
                ).fetchall()
                # unclaimed: paid, never used: ours
                for key, text, n_in, n_out, cost, unclaimed, holder, truncated, served in rows:
                    if not isinstance(text, str) or not text.strip(BLANK):
                        continue  # a reply without text is a failure (never stored now; an old or edited cache)
                    counted_elsewhere = bool(unclaimed) and not free_to_claim(unclaimed, holder)
                    found[key] = ChatResult(text=text, input_tokens=n_in, output_tokens=n_out,
                                            cached=not unclaimed or counted_elsewhere, cost_usd=cost,
                                            from_cache=True, truncated=bool(truncated),
                                            served_model=served if isinstance(served, str) and served else None)
        return found

    def claim(self, keys: list[str], stored_here: Iterable[str] = ()) -> set[str]:
        """Mark entries as used by the caller, whose run counts their cost; returns the keys it claimed. An entry
        another process claimed first is not returned (its cost is counted there: once in all). Inside
        `claims.counted_when_recorded` the claim is pending (PENDING, this process as owner) until results.json
        records it (`finalize`): killed before that, the entries are free again once this process is gone.
        `stored_here`: keys of calls this process made itself (it counts what they cost anyway); their entries are
        claimed only if this process stored them: one another process stored first (the same question asked at
        the same time; `put` keeps the first) is that process's paid reply, left for the run that uses it."""
        claimed: set[str] = set()
        state, holder = (PENDING, owner()) if claims.pending() else (0, None)
        mine, own = set(stored_here), owner()
        with self._lock:
            db = self._db()
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                db.execute("BEGIN IMMEDIATE")  # read and flip in one write transaction: one claimant per entry
                try:
                    rows = db.execute(f"SELECT key, unclaimed, owner FROM results WHERE unclaimed != 0 AND key IN "
                                      f"({marks})", chunk).fetchall()
                    free = [key for key, unclaimed, was in rows if free_to_claim(unclaimed, was)
                            and (key not in mine or was == own)]
                    if free:
                        db.execute(f"UPDATE results SET unclaimed = ?, owner = coalesce(?, owner) WHERE key IN "
                                   f"({','.join('?' * len(free))})", [state, holder, *free])
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:  # SQLite may have rolled back itself (disk full, I/O error)
                        db.execute("ROLLBACK")
                    raise
                claimed.update(free)
                claims.note(self.path, free)
        return claimed

    def finalize(self, keys: list[str]) -> None:
        """The pending claims of `keys` are counted by a results file now written: final (claims.settle)."""
        self._set_claim_state(keys, 0, PENDING)

    def unclaim(self, keys: list[str]) -> None:
        """Give back entries this process claimed and then recorded nothing for (claims.give_back)."""
        self._set_claim_state(keys, 1, PENDING)

    def _set_claim_state(self, keys: list[str], state: int, was: int) -> None:
        with self._lock:
            db = self._db()
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                db.execute(f"UPDATE results SET unclaimed = ? WHERE unclaimed = ? AND owner = ? AND key IN ({marks})",
                           [state, was, owner(), *chunk])

    def put(self, key: str, provider: str, model: str, result: ChatResult, *, batch: bool = False,
            base_url: str | None = None) -> None:
        """Store one successful result (failures are not cached: the next run asks again). An entry already there
        (another process asked the same at the same time, or collected the same batch) is kept as it is: never
        reopened once claimed."""
        if result.text is None:
            return
        with self._lock:
            stored = self._db().execute(
                "INSERT INTO results (key, provider, model, text, input_tokens, output_tokens, cost_usd, "
                "batch, created_at, base_url, unclaimed, owner, truncated, served_model) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?) "
                # an entry without text (stored by an older harness) is no answer: this one takes its place
                "ON CONFLICT(key) DO UPDATE SET text = excluded.text, input_tokens = excluded.input_tokens, "
                "output_tokens = excluded.output_tokens, cost_usd = excluded.cost_usd, batch = excluded.batch, "
                "created_at = excluded.created_at, base_url = excluded.base_url, unclaimed = 1, "
                "owner = excluded.owner, truncated = excluded.truncated, served_model = excluded.served_model "
                "WHERE trim(results.text, ' ' || char(9, 10, 11, 12, 13)) = ''",  # BLANK's characters
                (key, provider, model, result.text, result.input_tokens, result.output_tokens, result.cost_usd,
                 int(batch), time.time(), base_url, owner(), int(result.truncated), result.served_model),
            ).rowcount
        if not stored and not batch:  # a live call whose twin another process stored first: billed all the same
            self._put_billed("paid_twice", key, provider, model, result, batch=False, base_url=base_url)

    def put_billed_failure(self, key: str, provider: str, model: str, result: ChatResult, *, batch: bool = False,
                           base_url: str | None = None) -> None:
        """Record the usage and cost of a reply that was billed but is no answer (refused, filtered, empty): never
        served again (the next run asks again), only counted by `stats`."""
        self._put_billed("billed_failures", key, provider, model, result, batch=batch, base_url=base_url)

    def _put_billed(self, table: str, key: str, provider: str, model: str, result: ChatResult, *, batch: bool,
                    base_url: str | None) -> None:
        """One billed call that left no entry of its own in `results` (billed_failures, paid_twice)."""
        if not (result.input_tokens or result.output_tokens):
            return
        with self._lock:
            self._db().execute(
                f"INSERT INTO {table} (key, provider, model, base_url, input_tokens, output_tokens, cost_usd, "
                "batch, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, provider, model, base_url, result.input_tokens, result.output_tokens, result.cost_usd,
                 int(batch), time.time()))

    def note_endpoint(self, keys: list[str], base_url: str, *, priced: bool) -> None:
        """Record the endpoint of entries stored without it; behind a custom base URL (`priced` false) their
        cost is 0, whatever an older version estimated at list price."""
        stale = "base_url IS NULL" if priced else "(base_url IS NULL OR cost_usd != 0)"
        with self._lock:
            db = self._db()
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                # read first: a cache hit is usually up to date, and then nothing is written
                if db.execute(f"SELECT 1 FROM results WHERE {stale} AND key IN ({marks}) LIMIT 1", chunk).fetchone():
                    db.execute(f"UPDATE results SET base_url = ? WHERE base_url IS NULL AND key IN ({marks})",
                               [base_url, *chunk])
                    if not priced:
                        db.execute(f"UPDATE results SET cost_usd = 0 WHERE cost_usd != 0 AND key IN ({marks})",
                                   chunk)

    # batches ---------------------------------------------------------------------------------------------
    def batches_for(self, provider: str, model: str, base_url: str) -> list[dict[str, Any]]:
        """Submitted, not yet collected batches to this endpoint and model (oldest first); a batch id "" marks a
        chunk whose create call was sent at `submitted_at` and never answered (the run died or gave up)."""
        with self._lock:
            rows = self._db().execute(
                "SELECT batch_key, batch_id, request_keys, submitted_at FROM batches "
                "WHERE provider = ? AND model = ? AND base_url = ? ORDER BY submitted_at",
                (provider, model, base_url)).fetchall()
        return [{"batch_key": bkey, "batch_id": batch_id, "keys": set(json.loads(keys)), "submitted_at": when}
                for bkey, batch_id, keys, when in rows]

    def put_batch(self, key: str, provider: str, model: str, base_url: str, batch_id: str,
                  request_keys: list[str]) -> None:
        with self._lock:
            self._db().execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (key, provider, model, base_url, batch_id, len(request_keys), time.time(),
                                json.dumps(sorted(request_keys))))

    def batch_ids(self) -> set[str]:
        """The ids of all stored batches (any endpoint), which no lost create call made."""
        with self._lock:
            return {row[0] for row in self._db().execute("SELECT batch_id FROM batches WHERE batch_id != ''")}

    def delete_batch(self, key: str) -> None:
        with self._lock:
            self._db().execute("DELETE FROM batches WHERE batch_key = ?", (key,))

    # the `harness cache` command -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._lock:
            db = self._db()
            entries = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            batches = db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
            per_endpoint = db.execute(
                "SELECT provider, model, base_url, COUNT(*), SUM(cost_usd), 0, 0 FROM results "
                "GROUP BY provider, model, base_url UNION ALL "
                "SELECT provider, model, base_url, 0, SUM(cost_usd), COUNT(*), 0 FROM billed_failures "
                "GROUP BY provider, model, base_url UNION ALL "
                "SELECT provider, model, base_url, 0, SUM(cost_usd), 0, COUNT(*) FROM paid_twice "
                "GROUP BY provider, model, base_url ORDER BY 1, 2, 3").fetchall()
        size = sum(p.stat().st_size for p in self._files())
        models: dict[tuple[str, str], dict[str, Any]] = {}
        for provider, model, base_url, n, cost, failed, twice in per_endpoint:
            row = models.setdefault((provider, model), {"provider": provider, "model": model, "entries": 0,
                                                        "cost_usd": 0.0, "unpriced_entries": 0,
                                                        "base_urls": [], "billed_failures": 0, "paid_twice": 0})
            row["entries"] += n
            row["billed_failures"] += failed  # replies billed but not answers (refused, filtered, empty)
            row["paid_twice"] += twice  # replies another process had stored first (asked at once)
            if base_url is not None and base_url not in row["base_urls"]:
                row["base_urls"].append(base_url)
            if base_url is not None and not pricing.priced_endpoint(provider, base_url):
                row["unpriced_entries"] += n  # custom base URL: no API fees (0 since the endpoint is stored)
            else:
                row["cost_usd"] += cost or 0.0
        for row in models.values():
            row["cost_usd"] = round(row["cost_usd"], 6)
            if row["unpriced_entries"]:
                row["pricing"] = pricing.UNPRICED_NOTE
        return {
            "path": str(self.path), "entries": entries, "size_bytes": size, "pending_batches": batches,
            "models": list(models.values()),
        }

    def clear(self) -> int:
        """Delete every stored result and batch id; returns the number of results removed."""
        with self._lock:
            db = self._db()
            n = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            db.execute("DELETE FROM results")
            db.execute("DELETE FROM batches")
            db.execute("DELETE FROM billed_failures")
            db.execute("DELETE FROM paid_twice")
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return n

    def _files(self) -> list[Path]:
        names = (self.path, self.path.with_name(self.path.name + "-wal"), self.path.with_name(self.path.name + "-shm"))
        return [p for p in names if p.exists()]
