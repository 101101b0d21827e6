"""The `likert` judge: an LLM rates a generated report or caption against the reference from 0 to 4.

Conventions: `pefomed` (the PeFoMed paper's IU-Xray instructions and "Score:" parsing, model gpt-4 pinned
to gpt-4-0613, max_tokens 100) and `default` (plainer instructions, a JSON score, gpt-4o).
Per sample: `wasm` = mean score over the scored repeats; corpus: `wasm` (sum(i*N_i)/sum(N_i) per repeat)
and `wasm_std` across repeats, the level counts `likert_0`..`likert_4` over all repeats,
`unscored_replies`, tokens and estimated cost.
"""

from __future__ import annotations

from harness.judges.llm_judge_common import LLMJudge


class LikertJudge(LLMJudge):
    id = "likert"
    version = "1"
    kind = "likert"
    metric = "wasm"
    task_kinds = ("report", "caption")
