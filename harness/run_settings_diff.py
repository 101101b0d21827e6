"""What two runs' configurations differ in (model arguments, adapter, prompt, decoding), for `harness compare`:
two runs of one model and prompt carry the same label, and the reader must still see what A and B are."""

from __future__ import annotations

from typing import Any

#: the parts of results.json that make a run what it is (its run id hashes them), as `harness compare` names them
COMPARED = (("model", "args"), ("model", "adapter_hash"), ("model", "identity"), ("prompt", "variant"),
            ("prompt", "hash"), ("generation",))


def _flat(value: Any, path: str) -> dict[str, Any]:
    if isinstance(value, dict):  # {} has no settings: as absent as a key the other side lacks
        return {k: v for key in sorted(value) for k, v in _flat(value[key], f"{path}.{key}").items()}
    return {path: value}


def _settings(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in COMPARED:
        value: Any = results
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        out.update(_flat(value, ".".join(path)))
    return out


def settings_diff(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """[{"setting", "a", "b"}] for every setting of COMPARED whose values differ between results files a and b
    (`model.args.dtype`, `generation.max_new_tokens`, `prompt.hash`), in that order."""
    left, right = _settings(a), _settings(b)
    keys = list(left) + [k for k in right if k not in left]
    return [{"setting": k, "a": left.get(k), "b": right.get(k)} for k in keys if left.get(k) != right.get(k)]


def _shown(value: Any) -> str:
    text = "unset" if value is None else str(value)
    return text if len(text) <= 32 else text[:29] + "..."


def describe_diff(diff: list[dict[str, Any]], same_run_id: bool, limit: int = 4) -> str:
    """One line for the comparison's header: 'max_new_tokens 16 in A, 32 in B; ...' or that nothing differs (one
    run id: arguments typed differently, such as a default typed out, are the same configuration)."""
    if not diff or same_run_id:
        return ("A and B have the same configuration (the same run id): any difference is the model's "
                "nondeterminism" if same_run_id else "A and B differ in nothing results.json records of their settings")
    shown = "; ".join(f"{d['setting']} {_shown(d['a'])} in A, {_shown(d['b'])} in B" for d in diff[:limit])
    more = f"; and {len(diff) - limit} more" if len(diff) > limit else ""
    return f"A and B differ in {shown}{more}"
