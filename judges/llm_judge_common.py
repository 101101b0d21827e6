"""Shared machinery of the LLM judges: requests, repeats and their aggregation (their settings and setup:
llm_judge_settings.py; reply parsing: llm_replies.py).

`LLMJudge` is the base of the binary (`gpt4`) and Likert (`likert`) judges. It sends one user message
per sample and repeat through the provider layer (harness.providers: cache, concurrency, retries),
parses each reply into a verdict, and keeps replies that cannot be parsed as "unscored" (None), never 0.
Calls that failed (no reply after the retries) are also None but counted apart (`failed_calls`), with one
`note:` line on stderr, since rerunning the same command retries exactly those.
Per-sample rows keep every repeat's verdict and raw reply, so `aggregate` can compute the per-repeat
corpus values (mean and sample standard deviation across repeats) for any subset of rows.
Setup (describe()'s "setup", a leaderboard row's identity): provider, resolved model id, base URL, prompt
template sha256, temperature, seed, max_tokens, repeats and structured output, as resolved.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from harness.errors import UserError
from harness.judge_api import Aggregator, JudgeOptions, JudgePlugin
from harness.judges.llm_judge_settings import ACCEPTED_SETTINGS, judge_setup, resolve_settings
from harness.judges.llm_prompts import SCHEMAS, TEMPLATES, fill, template_sha256
from harness.judges.llm_replies import LIKERT_LEVELS, parse_reply


# ------------------------------------------------------------------------------------------ aggregation
def wasm(counts: list[int] | tuple[int, ...]) -> float | None:
    """Weighted average score: sum(i * N_i) / sum(N_i) over Likert levels 0..4."""
    total = sum(counts)
    return sum(i * n for i, n in enumerate(counts)) / total if total else None


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1; None with fewer than two values). Repeats that agree give
    exactly their value and 0 (summing them gave a std of 6.8e-17)."""
    if not values:
        return None, None
    if len(values) >= 2 and min(values) == max(values):
        return values[0], 0.0
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def repeats_aggregator(rows: list[dict[str, Any]], kind: str, metric: str) -> Aggregator:
    """aggregate_repeats' `metric` and `metric_std` over row positions, vectorised (a paired comparison resamples
    it thousands of times): per repeat the mean of the scored verdicts, then the mean and std over repeats."""
    import numpy as np

    key = "verdicts" if kind == "binary" else "scores"
    per_sample = [row.get("details", {}).get(key) or [] for row in rows]
    repeats = max((len(v) for v in per_sample), default=0)
    table = np.full((len(rows), repeats), np.nan)
    for i, values in enumerate(per_sample):
        for r, value in enumerate(values):
            if value is not None:
                table[i, r] = float(value)

    def aggregate(positions: Any) -> dict[str, float | None]:
        chosen = table[np.asarray(positions, dtype=np.int64)]
        counts = (~np.isnan(chosen)).sum(axis=0)
        sums = np.nansum(chosen, axis=0)
        mean, std = mean_std([float(s / c) for s, c in zip(sums, counts) if c])
        return {metric: mean, f"{metric}_std": std}

    return aggregate


def aggregate_repeats(rows: list[dict[str, Any]], kind: str, metric: str) -> dict[str, float | None]:
    """Corpus numbers of an LLM judge over any subset of its rows.

    Per repeat r the corpus value is the mean over the samples whose repeat r was scored (for Likert
    that is the WASM of repeat r's level counts); reported are the mean and sample std over repeats.
    """
    key = "verdicts" if kind == "binary" else "scores"
    per_sample = [row.get("details", {}).get(key) or [] for row in rows]
    repeats = max((len(v) for v in per_sample), default=0)
    per_repeat: list[float] = []
    counts = [0] * len(LIKERT_LEVELS)
    for r in range(repeats):
        scored = [v[r] for v in per_sample if r < len(v) and v[r] is not None]
        if scored:
            per_repeat.append(sum(scored) / len(scored))
        if kind == "likert":
            for value in scored:
                counts[int(value)] += 1
    mean, std = mean_std(per_repeat)
    out: dict[str, float | None] = {metric: mean, f"{metric}_std": std, "repeats": repeats}
    out["unscored_replies"] = sum(int(row.get("details", {}).get("unscored", 0)) for row in rows)
    out["failed_calls"] = sum(int(row.get("details", {}).get("failed_calls", 0)) for row in rows)
    out["scored_samples"] = sum(1 for v in per_sample if any(x is not None for x in v))
    if kind == "likert":
        out.update({f"likert_{i}": n for i, n in enumerate(counts)})
    for name in ("input_tokens", "output_tokens", "paid_input_tokens", "paid_output_tokens"):
        out[name] = sum(int(row.get("details", {}).get(name, 0)) for row in rows)
    for name in ("cost_usd", "replies_cost_usd"):
        out[name] = sum(float(row.get("details", {}).get(name, 0.0)) for row in rows)
    return out


# ------------------------------------------------------------------------------------------------- judge
def _on_this_machine(provider: str, base_url: str) -> bool:
    """Whether a judge keeps the data on this machine: an openai-compatible server on a loopback address."""
    from harness.providers.aliases import is_loopback

    return provider == "openai-compatible" and is_loopback(base_url)


class LLMJudge(JudgePlugin):
    """Base of the LLM judges; subclasses set `kind` ("binary"/"likert"), `metric` and `task_kinds`."""

    kind = "binary"
    metric = "accuracy"
    conventions = ("default", "pefomed")
    default_convention = "default"
    accepted_settings = ACCEPTED_SETTINGS
    mean_metrics = False  # mean over repeats of per-repeat means, not a plain per-sample mean

    def __init__(self, options: JudgeOptions) -> None:
        super().__init__(options)
        from harness.providers import make_client

        self.settings = resolve_settings(dict(options.settings), self.convention)
        if self.settings.repeats > 1:  # a mean over repeats, not a share of verdicts, even where the repeats agree:
            self.proportion_metrics = ()  # one interval method for one setup (it was Wilson when they all agreed)
        self.template = TEMPLATES[(self.kind, self.convention)]
        # refuse before asking for an API key, and again on the client (the provider layer's own rule)
        self._refuse_external_if_credentialed()
        self.client = make_client(dict(self.settings.client))
        if self._must_stay_local() and not _on_this_machine(self.client.provider, self.client.base_url):
            raise self._refusal(self.client.model, self.client.provider, self.client.base_url)
        if self.client.provider == "anthropic":
            given = [key for key in ("temperature", "seed") if options.settings.get(key) not in (None, "")]
            if given:  # never sent: recording it, or caching by it, would claim a choice that was not made
                raise UserError(f"judge setting {' and '.join(given)}: the Anthropic API (2026-10-21) takes no "
                                f"temperature or seed, so {self.client.model} samples at its default; leave "
                                f"{'them' if len(given) > 1 else 'it'} out")

    @classmethod
    def resolve_setup(cls, settings: dict[str, Any], convention: str | None) -> dict[str, Any]:
        """The setup of these settings, resolved as make_client does (alias to pinned id, default base URL)."""
        from harness.providers.aliases import normalise_base_url, resolve_model

        convention = convention or cls.default_convention
        resolved = resolve_settings(dict(settings), convention)
        client = resolved.client
        provider, model = resolve_model(str(client["model"]), client.get("provider"), client.get("base_url"))
        base_url = normalise_base_url(provider, client.get("base_url"))
        return judge_setup(resolved, provider, model, base_url, TEMPLATES[(cls.kind, convention)])

    def setup(self) -> dict[str, Any]:
        c = self.client
        return judge_setup(self.settings, c.provider, c.model, c.base_url, self.template)

    def _must_stay_local(self) -> bool:
        return self.options.credentialed and not self.settings.allow_external

    def _refuse_external_if_credentialed(self) -> None:
        """Credentialed data (MIMIC-CXR, ...) goes only to a judge on this machine unless the user allows it.

        As for API models (plugins/api_vlm.py check_credentialed), only provider openai-compatible on a loopback
        URL is on this machine: an openai/anthropic model behind a loopback URL is usually a forwarding proxy.
        """
        from harness.providers.aliases import normalise_base_url, resolve_model

        if not self._must_stay_local():
            return
        client = self.settings.client
        provider, model = resolve_model(str(client["model"]), client.get("provider"), client.get("base_url"))
        base_url = normalise_base_url(provider, client.get("base_url"))
        if not _on_this_machine(provider, base_url):
            raise self._refusal(model, provider, base_url)

    def _refusal(self, model: str, provider: str, base_url: str) -> UserError:
        return UserError(
            f"judge '{self.id}': this task's data is credentialed and the judge model '{model}' is an "
            f"external API ({provider} at {base_url}); refusing to send it. Use a judge served on this "
            "machine (--judge-base-url http://127.0.0.1:PORT/v1 with an openai-compatible model; an openai or "
            "anthropic model there counts as external) or, if your data use agreement allows "
            "it, pass --allow-external-judge"
        )

    # -- requests
    def prompt(self, record: dict[str, Any]) -> str:
        prediction = record.get("prediction")
        prediction = "" if prediction is None else str(prediction)
        reference = str(record.get("answer") or "")
        if self.kind == "binary":
            question = str(record.get("question") or "")
            return fill(self.template, question=question, true_answer=reference, generated_answer=prediction)
        return fill(self.template, ground_truth=reference, generated_report=prediction)

    def requests(self, records: list[dict[str, Any]]) -> list[Any]:
        from harness.providers.base import ChatRequest

        s = self.settings
        schema = SCHEMAS[self.kind] if s.structured_output else None
        out = []
        for record in records:
            messages = [{"role": "user", "content": self.prompt(record)}]
            for r in range(s.repeats):
                seed = None if s.seed is None else s.seed + r  # same seed on every repeat would copy it
                out.append(ChatRequest(messages=messages, max_tokens=s.max_tokens, temperature=s.temperature,
                                       seed=seed, json_schema=schema, repeat=r))
        return self._own_draws(out)

    def _own_draws(self, requests: list[Any]) -> list[Any]:
        """When the judge samples (temperature > 0, or Anthropic, which takes no temperature), identical requests
        of different samples are separate draws (`draw` 1, 2, ... after the first), as PeFoMed asked once per
        sample; at temperature 0 they stay one call whose reply serves them all. With a seed, draw d of repeat r
        is sent seed + r + d * repeats (one seed for all would make a seeded server's draws copies again)."""
        from collections import Counter
        from dataclasses import replace

        if not (self.settings.temperature > 0 or self.client.provider == "anthropic"):
            return requests
        seen: Counter[str] = Counter()
        out = []
        for request in requests:
            key = self.client.key(request)
            draw = seen[key]
            seed = None if request.seed is None else request.seed + draw * self.settings.repeats
            out.append(replace(request, draw=draw, seed=seed) if draw else request)
            seen[key] += 1
        return out

    # -- scoring
    def score(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not records:
            return []
        results = self.client.run(self.requests(records), progress=self._progress())
        self._note_served(results)
        values = [parse_reply(res.text, self.kind, self.convention) for res in results]  # each parsed once
        self._note_failures(results, values)
        n = self.settings.repeats
        return [self._row(results[i * n : (i + 1) * n], values[i * n : (i + 1) * n]) for i in range(len(records))]

    def _note_served(self, results: list[Any]) -> None:
        """Count the model each reply the verdicts use names, made now or taken from the cache (which keeps the
        name; a reply cached before it did, or naming none, is counted as UNKNOWN), with a note when one is not the
        model asked for (a proxy or a server answering with another model); for an OpenAI-compatible server that
        answered now, what it says of the model and itself (GET /v1/models, /version: a re-score from the cache
        asks nothing). Recorded by describe(), outside the setup."""
        from collections import Counter

        from harness.providers.aliases import same_model
        from harness.served_models import UNKNOWN

        asked = self.client.model
        served = Counter(res.served_model or UNKNOWN for res in results if res.served_model or res.text is not None)
        self.served = dict(sorted(served.items()))
        other = [m for m in self.served if m != UNKNOWN and not same_model(m, asked)]
        if other:
            print(f"note: judge '{self.id}': {self.client.base_url} answered as model '{other[0]}', not '{asked}' "
                  "(recorded in results.json as served_models)", file=sys.stderr)
        live = any(res.served_model and not res.from_cache for res in results)
        self.server = self.client.server_description() if live else {}

    def _progress(self) -> bool:
        """Show the calls' progress bar: never with the command's --no-progress, else only when stderr is a
        terminal (never in a log file)."""
        if self.options.progress is not None:
            return self.options.progress
        return bool(getattr(sys.stderr, "isatty", lambda: False)())

    def _note_failures(self, results: list[Any], values: list[Any]) -> None:
        """One note line when calls failed for good: they are unscored, and a rerun retries just those; one when
        replies could not be read (`values`: each reply's verdict or score, None where it has none)."""
        from harness.secrets import redact

        failed = [res for res in results if res.text is None]
        if failed:
            first = redact(str(failed[0].error or "no reply"))
            print(f"note: judge '{self.id}': {len(failed)} of {len(results)} calls failed (first error: {first}); "
                  "their samples are unscored: run the same command again to retry them", file=sys.stderr)
        unread = [res.text for res, value in zip(results, values) if res.text is not None and value is None]
        if unread:
            first = " ".join(redact(unread[0]).split())[:120]
            print(f"note: judge '{self.id}': {len(unread)} of {len(results)} replies of {self.client.model} could "
                  f"not be read as a {'verdict' if self.kind == 'binary' else '0-4 score'} (first: {first!r}); "
                  "their samples are unscored (the replies are cached: another --judge-model asks again)",
                  file=sys.stderr)

    def _row(self, results: list[Any], values: list[Any]) -> dict[str, Any]:
        scored = [v for v in values if v is not None]
        failed = sum(1 for res in results if res.text is None)
        details: dict[str, Any] = {
            "verdicts" if self.kind == "binary" else "scores": values,
            "replies": [res.text for res in results],
            "unscored": len(values) - len(scored) - failed,  # replies that could not be parsed
            "failed_calls": failed,  # calls without a reply (provider errors); a rerun retries them
            "input_tokens": sum(res.input_tokens for res in results),  # of every reply used, cached ones too
            "output_tokens": sum(res.output_tokens for res in results),
            "paid_input_tokens": sum(0 if res.cached else res.input_tokens for res in results),  # calls made now
            "paid_output_tokens": sum(0 if res.cached else res.output_tokens for res in results),
            "cost_usd": sum(0.0 if res.cached else res.cost_usd for res in results),  # paid by this run
            # what the replies used cost when they were made (a re-score from the cache: cost_usd 0, this not)
            "replies_cost_usd": sum(res.cost_usd for res in results),
            "judge_model": self.client.model,  # which model's replies these are (a re-judge replaces the row)
            "cached": sum(1 for res in results if res.cached),
        }
        errors = [res.error for res in results if res.error]
        if errors:
            details["errors"] = errors
        value = sum(scored) / len(scored) if scored else None
        return {"metrics": {self.metric: value}, "details": details}

    def aggregate(self, records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, float | None]:
        return aggregate_repeats(rows, self.kind, self.metric)

    @classmethod
    def saved_aggregator(cls, rows: list[dict[str, Any]], convention: str | None, setup: Any) -> Aggregator:
        """The metric and its std across repeats (as aggregate_repeats), from the rows' per-repeat verdicts."""
        return repeats_aggregator(rows, cls.kind, cls.metric)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        s = self.settings
        setup = self.setup()  # one rule for what is sent: the Anthropic API takes no temperature or seed
        out.update({
            "model": self.client.model,
            "provider": self.client.provider,
            "base_url": self.client.base_url,
            "client": self.client.describe(),
            "prompt_sha256": template_sha256(self.template),
            "json_schema": SCHEMAS[self.kind] if s.structured_output else None,
            "temperature": setup["temperature"],
            "seed": setup["seed"],
            "max_tokens": s.max_tokens,
            "repeats": s.repeats,
        })
        out.update({k: v for k, v in (("served_models", getattr(self, "served", None)),
                                      ("server", getattr(self, "server", None))) if v})
        return out

    def close(self) -> None:
        close = getattr(getattr(self, "client", None), "close", None)
        if callable(close):
            close()
