"""The prompt and decoding settings a run is made with, less those its model cannot use: a setting that changes no
answer must not make another run id (the same answers twice, as two leaderboard rows). Each one dropped is said.

- a model that decodes nothing (the `prior`, capability `decodes: False`) reads no prompt and no decoding setting;
- greedy decoding (temperature 0) draws nothing, so `--seed` and `--top-p` change no answer of a model that
  declares them unused when greedy (capability `greedy_ignores`: the local backends both; the OpenAI API models
  `top_p` only, as they send their seed even at temperature 0);
- a model that sends some settings whatever their value (capability `never_sends`: `claude`, whose API takes no
  temperature, top_p or seed and samples at the provider's default) is not run with them.
"""

from __future__ import annotations

import sys
from typing import Any

from harness.types import GenerationSettings


def _flags(values: dict[str, Any]) -> str:
    return " and ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())


def used_settings(task: Any, model_info: Any, prompt: str | None,
                  generation: dict[str, Any]) -> tuple[str, str, GenerationSettings]:
    """(prompt variant, its template, generation settings) for `harness run`, the ignored ones dropped with a
    warning. Every value is checked first, even where ignored: a mistake is said."""
    variant, template = task.prompt_template(prompt)
    settings = task.generation_settings(generation)
    if model_info.capabilities.get("decodes", True) is False:
        if variant != "default":
            print(f"warning: --prompt {variant} ignored: model '{model_info.id}' reads no prompt (its answers are "
                  "learnt from the training split), so this is the run with the default prompt", file=sys.stderr)
            variant, template = task.prompt_template(None)
        if generation:
            print(f"warning: {_flags(generation)} ignored: model '{model_info.id}' decodes nothing (its answers are "
                  "learnt from the training split), so this is the run without them", file=sys.stderr)
            settings = task.generation_settings({})
        return variant, template, settings
    never = {k: v for k, v in generation.items() if k in set(model_info.capabilities.get("never_sends", ()))}
    if never:
        them = "it" if len(never) == 1 else "them"
        print(f"warning: {_flags(never)} ignored: model '{model_info.id}' does not send {them} (its API takes no "
              f"{', '.join(k.replace('_', '-') for k in model_info.capabilities['never_sends'])}), so this is the run "
              f"without {them}", file=sys.stderr)
        generation = {k: v for k, v in generation.items() if k not in never}
        settings = task.generation_settings(generation)
    unused = set(model_info.capabilities.get("greedy_ignores", ())) if not settings.do_sample else set()
    dropped = {k: v for k, v in generation.items() if k in unused}
    if dropped:
        them = "it" if len(dropped) == 1 else "them"
        print(f"warning: {_flags(dropped)} ignored: decoding is greedy (temperature 0), which draws nothing, so this "
              f"is the run without {them}", file=sys.stderr)
        settings = task.generation_settings({k: v for k, v in generation.items() if k not in unused})
    return variant, template, settings
