"""Reading an LLM judge's reply into a verdict (binary 0/1) or a rating (Likert 0-4); None = unscored.

Two conventions: `pefomed` is PeFoMed's published parsing, verbatim (the first 0-5 number after the marker);
`default` reads the JSON verdict (structured output), else `"key": n` or `Marker: n`, ignoring a reasoning
model's <think> text and Markdown emphasis, and leaves a reply stating two different verdicts unscored.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: PeFoMed's reply regex, applied to the text after the marker ("Correctness:" or "Score:")
PEFOMED_NUMBER = re.compile(r"\b[0-5](?:\.\d+)?\b")
LIKERT_LEVELS = (0, 1, 2, 3, 4)
BINARY_LEVELS = (0, 1)

# ----------------------------------------------------------------------------------------- reply parsing
def parse_pefomed(reply: str | None, marker: str) -> int | None:
    """PeFoMed's parser: the first 0-5 number after the first `marker`, through int().

    A reply without the marker or number, or with a decimal such as "1.0" (int() raised in the
    original script and the sample went uncounted), gives None.
    """
    if not reply:
        return None
    parts = reply.split(marker)
    if len(parts) < 2:
        return None
    match = PEFOMED_NUMBER.search(parts[1])
    if not match:
        return None
    try:
        return int(match.group(0))
    except ValueError:
        return None


def _as_level(value: Any, allowed: tuple[int, ...]) -> int | None:
    """A verdict or rating as an int in `allowed`, or None. JSON true/false are a binary verdict only: a Likert
    reply {"score": true} is no rating."""
    if isinstance(value, bool):
        if allowed != BINARY_LEVELS:
            return None
        value = int(value)
    if isinstance(value, str):
        value = value.strip()
        if not re.fullmatch(r"\d+(?:\.0+)?", value):
            return None
        value = float(value)
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    return value if isinstance(value, int) and value in allowed else None


def _json_objects(reply: str) -> list[Any]:
    text = reply.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    candidates = [text, fenced.group(1) if fenced else ""]
    brace = re.search(r"\{.*\}", text, re.S)
    if brace:
        candidates.append(brace.group(0))
    found = []
    for candidate in candidates:
        try:
            found.append(json.loads(candidate))
        except (json.JSONDecodeError, ValueError):
            continue
    return found


# a reasoning block: <think>...</think> (unclosed: to the end)
THINKING = re.compile(r"<think(?:ing)?>.*?(?:</think(?:ing)?>|$)", re.S | re.I)
# the end of a reasoning block whose opening tag the chat template supplied (R1 distills, QwQ, Qwen3 served
# without a reasoning parser): the verdict is after it
THINKING_END = re.compile(r"</think(?:ing)?>", re.I)


def parse_default(reply: str | None, key: str, allowed: tuple[int, ...], marker: str) -> int | None:
    """The default preset's parser: the JSON verdict, else `"key": n` anywhere, else `Marker: n`, else a
    bare number; None when none of these gives a value in `allowed`, or when one of them gives two different
    values (a reply weighing "score: 1?" before its "Score: 4" is unscored, never read as its first number).
    A reasoning model's <think>...</think> text (an unclosed one: to the end) is not read; nor is Markdown
    emphasis (**Score:** 3)."""
    reply = THINKING.sub(" ", reply or "").replace("*", "")
    if THINKING_END.search(reply):  # the text after the reasoning, if it holds the verdict; else the whole reply
        after = _parse_default(THINKING_END.split(reply)[-1], key, allowed, marker)  # (a quoted "</think>")
        if after is not None:
            return after
    return _parse_default(reply, key, allowed, marker)


def _parse_default(reply: str, key: str, allowed: tuple[int, ...], marker: str) -> int | None:
    if not reply.strip():
        return None
    for obj in _json_objects(reply):
        if isinstance(obj, dict) and key in obj:
            return _as_level(obj[key], allowed)
    patterns = (
        rf'"?\b{key}\b"?\s*[:=]\s*"?(\w+(?:\.\d+)?)',
        rf"\b{marker}\s*:\s*(\d+(?:\.\d+)?)",
    )
    for pattern in patterns:
        levels = set()
        for match in re.finditer(pattern, reply, re.I):
            word = match.group(1).lower()
            if allowed == BINARY_LEVELS:  # "correct": true is a verdict; "score": true is no rating
                word = {"true": "1", "false": "0"}.get(word, word)
            level = _as_level(word, allowed)
            if level is not None:
                levels.add(level)
        if levels:
            return levels.pop() if len(levels) == 1 else None
    return _as_level(reply.strip().rstrip("."), allowed)


def parse_reply(reply: str | None, kind: str, convention: str) -> int | None:
    """Verdict of one reply: binary 0/1 or Likert 0..4; None = unscored."""
    if kind == "binary":
        if convention == "pefomed":
            value = parse_pefomed(reply, "Correctness:")
            # PeFoMed counted 1 as correct and every other parsed number (0, 2..5) as incorrect
            return None if value is None else int(value == 1)
        return parse_default(reply, "correct", BINARY_LEVELS, "Correctness")
    if convention == "pefomed":
        value = parse_pefomed(reply, "Score:")
        return value if value in LIKERT_LEVELS else None  # PeFoMed left a 5 out of the counts
    return parse_default(reply, "score", LIKERT_LEVELS, "Score")
