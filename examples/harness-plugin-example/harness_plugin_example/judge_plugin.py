"""Hook implementation of the `example-judge` entry point: register the `numeric` judge.

A package may have several entry points; each is one plugin, and HARNESS_PLUGINS selects them by name.
"""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.registry import JudgeInfo


@hookimpl
def register_judges(register) -> None:
    register(
        JudgeInfo(
            id="numeric",
            loader="harness_plugin_example.judge:NumericToleranceJudge",
            description="Numeric answer within a tolerance (--judge-arg tolerance=X, default 0); "
            "non-numeric references are unscored",
            capabilities={"task_kinds": ["vqa"], "conventions": []},
        )
    )
