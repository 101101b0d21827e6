"""Judge flags shared by `harness run` and `harness score`, and their translation into JudgeOptions."""

from __future__ import annotations

import argparse
from typing import Any

from harness.errors import UserError


def add_judge_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("judging")
    g.add_argument("--judge", action="append", default=None, metavar="ID",
                   help="judge to apply (repeat or comma-separate for several); default: the task's judges")
    g.add_argument("--convention", default=None,
                   help="scoring convention of the judge (exact: pefomed, llava-med, multimedeval; "
                   "LLM judges: pefomed or default)")
    g.add_argument("--judge-model", default=None, help="LLM judge model id or alias (gpt4, gpt-4o, claude)")
    g.add_argument("--judge-provider", default=None, choices=["openai", "anthropic", "openai-compatible"],
                   help="LLM judge provider, where the model id leaves it ambiguous")
    g.add_argument("--judge-base-url", default=None, help="OpenAI-compatible server for the LLM judge")
    g.add_argument("--judge-repeats", type=int, default=None,
                   help="ask the LLM judge N times per sample (N > 1: temperature 1.0 unless "
                        "--judge-arg temperature= says otherwise)")
    g.add_argument("--judge-concurrency", type=int, default=None, help="concurrent LLM judge calls")
    g.add_argument("--judge-timeout", type=float, default=None, help="seconds per LLM judge call")
    g.add_argument("--judge-batch", action="store_true", help="use the provider's batch API (half price)")
    g.add_argument("--allow-external-judge", action="store_true",
                   help="allow sending a credentialed task's data to an external API judge")
    g.add_argument("--judge-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra judge setting (repeatable), e.g. --judge-arg rouge_stemmer=true")


def judge_ids(args: argparse.Namespace, defaults: list[str]) -> list[str]:
    if not args.judge:
        return list(defaults)
    ids: list[str] = []
    for value in args.judge:
        ids.extend(part.strip() for part in value.split(",") if part.strip())
    if not ids:  # `--judge ''` (an unset shell variable): not the task's default judges without a word
        raise UserError(f"--judge {args.judge[0]!r}: no judge id; expected e.g. --judge exact "
                        "(see harness list judges)")
    return ids


_FLAG_SETTINGS = ("model", "provider", "base_url", "repeats", "concurrency", "timeout")  # --judge-<key> flags


def judge_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The judge-specific settings from the flags (only those the user gave)."""
    settings: dict[str, Any] = {}
    for key in _FLAG_SETTINGS:
        value = getattr(args, f"judge_{key}", None)
        if value is not None:
            settings[key] = value
    if getattr(args, "judge_batch", False):
        settings["batch"] = True
    if getattr(args, "allow_external_judge", False):
        settings["allow_external"] = True
    for item in getattr(args, "judge_arg", []) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--judge-arg '{item}': expected KEY=VALUE")
        key = key.strip()
        if key in settings and str(settings[key]) != value:
            flag = f"--judge-{key.replace('_', '-')}" if key in _FLAG_SETTINGS else f"--judge-arg {key}"
            raise UserError(f"--judge-arg {key}={value!r} contradicts {flag} ({settings[key]!r} given before); "
                            "give it once")
        settings[key] = value
    return settings
