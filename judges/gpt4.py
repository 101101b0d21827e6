"""The `gpt4` judge: an LLM decides whether a VQA answer is correct (1) or not (0).

Conventions: `pefomed` (the PeFoMed paper's GPT-4 instructions and "Correctness:" parsing, model gpt-4
pinned to gpt-4-0613, max_tokens 100) and `default` (plainer instructions, a JSON verdict, gpt-4o).
Per sample: `accuracy` = mean verdict over the scored repeats; corpus: `accuracy` and `accuracy_std`
across repeats, `unscored_replies`, tokens and estimated cost.
"""

from __future__ import annotations

from harness.judges.llm_judge_common import LLMJudge


class GPT4Judge(LLMJudge):
    id = "gpt4"
    version = "1"
    kind = "binary"
    metric = "accuracy"
    proportion_metrics = ("accuracy",)  # asked once per sample: the share of 1 verdicts (Wilson's interval)
    task_kinds = ("vqa",)
