"""Built-in judge plugins, registered through the same hook as third-party judges.

Registration is cheap: each judge's module is imported only when the judge is used.
"""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.registry import JudgeInfo


@hookimpl
def register_judges(register) -> None:
    register(
        JudgeInfo(
            id="exact",
            loader="harness.judges.exact:ExactMatchJudge",
            description="Exact match after VQA-v2 normalization (conventions: pefomed, llava-med, multimedeval)",
            aliases=["exact-match", "em"],
            capabilities={"task_kinds": ["vqa"], "conventions": ["pefomed", "llava-med", "multimedeval"]},
        )
    )
