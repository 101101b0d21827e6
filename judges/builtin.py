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
    register(
        JudgeInfo(
            id="gpt4",
            loader="harness.judges.gpt4:GPT4Judge",
            description="LLM judge: VQA answer correct (1) or not (0); conventions default (gpt-4o, JSON verdict) "
            "and pefomed (PeFoMed GPT-4 protocol)",
            aliases=["gpt4-judge", "llm-binary"],
            capabilities={"task_kinds": ["vqa"], "conventions": ["default", "pefomed"], "needs_api": True},
        )
    )
    register(
        JudgeInfo(
            id="likert",
            loader="harness.judges.likert:LikertJudge",
            description="LLM judge: report/caption rated 0-4 against the reference, WASM and level counts; "
            "conventions default and pefomed",
            aliases=["llm-likert", "wasm"],
            capabilities={"task_kinds": ["report", "caption"], "conventions": ["default", "pefomed"],
                          "needs_api": True},
        )
    )
    register(
        JudgeInfo(
            id="semantic",
            loader="harness.judges.semantic:SemanticJudge",
            description="Embedding cosine similarity (bundled all-MiniLM-L6-v2, offline) and optional BERTScore "
            "(--judge-arg bertscore=true, bertscore_model=..., bertscore_layers=N)",
            aliases=["embedding-similarity", "bertscore"],
            capabilities={"task_kinds": ["vqa", "report", "caption"], "conventions": []},
        )
    )
    register(
        JudgeInfo(
            id="lexical",
            loader="harness.judges.lexical:LexicalJudge",
            description="BLEU-1..4, METEOR, ROUGE-L, CIDEr-D exactly as pycocoevalcap (needs Java), plus "
            "rouge-score ROUGE-1/2/L F (conventions: none, r2gen, imageclef)",
            aliases=["coco", "pycocoevalcap", "nlg"],
            capabilities={"task_kinds": ["report", "caption", "vqa"], "conventions": ["none", "r2gen", "imageclef"],
                          "requires": ["java"]},
        )
    )
