"""`served_models`: which models answered a run's predictions, counted over its predictions lines.

An API model writes the model name each reply gives (a server or proxy may answer with another model than the one
asked for) as its line's `generation_details.served_model`, from a live call or from the LLM cache alike. A model
whose `identity()` holds `served_models` has that count made here, over every line the run uses, whichever
invocation or cache hit made it: model.json counts the latest line of each sample in predictions.jsonl, results.json
the lines it describes (`harness score` counts them again from the files). A line with an answer whose reply named
no model (a cache entry stored before the cache kept the name, a server that does not say, a line written before
lines recorded it) is counted under UNKNOWN, never as the model asked for.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"  # replies whose model is not known


def served_model(row: dict[str, Any]) -> str | None:
    """The model a predictions line's reply says answered, None when it does not say."""
    details = row.get("generation_details")
    name = details.get("served_model") if isinstance(details, dict) else None
    return name if isinstance(name, str) and name else None


def count_served(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Lines per model name their replies gave; lines with an answer and no name under UNKNOWN (a failed line that
    names no model had no reply)."""
    counts: Counter[str] = Counter()
    for row in rows:
        name = served_model(row)
        if name is not None:
            counts[name] += 1
        elif not row.get("error"):
            counts[UNKNOWN] += 1
    return dict(sorted(counts.items()))


def with_served_models(identity: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`identity` with its `served_models` counted over `rows` (left as it is when it records none: a local model)."""
    if "served_models" not in identity:
        return identity
    return {**identity, "served_models": count_served(rows)}


def latest_lines(pred_path: Path) -> list[dict[str, Any]]:
    """The latest line of each sample in a predictions file ([] when there is none yet)."""
    from harness.run_files import read_predictions

    if not pred_path.exists():
        return []
    return list({row["id"]: row for row in read_predictions(pred_path, repair_tail=True)}.values())


def note_earlier_models(identity: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """One note when a run resumes over lines answered by another model than the one asked for (a proxy that fell
    back to another model during an earlier invocation), as the model notes it of the replies it gets itself."""
    from harness.providers.aliases import same_model

    asked = identity.get("model")
    if "served_models" not in identity or not isinstance(asked, str):
        return
    other = Counter(name for row in rows if (name := served_model(row)) and not same_model(name, asked))
    if other:
        (name, n), *more = other.most_common()
        also = f" (and {sum(k for _, k in more)} by {len(more)} other model(s))" if more else ""
        print(f"note: {n} earlier prediction(s) of this run were answered as model '{name}', not '{asked}'{also} "
              "(recorded in results.json as served_models)", file=sys.stderr)
