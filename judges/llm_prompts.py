# ruff: noqa: E501
"""Judge prompt templates: the PeFoMed protocol verbatim, and the harness's own default preset.

The `pefomed` texts are the PeFoMed authors' judge instructions (jinlHe/PeFoMed,
gpt_eval/gpt_eval_medvqa.py and gpt_eval_iuxray.py) exactly as the project's reference
pefomed-judge-prompts.md gives them: the script's f-string indentation and the extra blank lines of its
literal "\\n" escapes are not sent, and there is no trailing newline. Do not edit them: the tests freeze
their sha256, and any change means results no longer follow the published protocol.
Placeholders are `{name}`; `fill` substitutes them in one pass, so braces inside the filled-in texts
are left alone.
"""

from __future__ import annotations

import hashlib
import re

PEFOMED_VQA = """Given a question about an medical image, there is a correct answer to the question and an answer to be determined. If the answer to be determined matches the correct answer or is a good enough answer to the question, output 1; otherwise output 0. Evaluate the answer to be determined (1 or 0).

Question:
- question about the medical image: {question}

Answers:
- correct answer(ground truth): {true_answer}
answer to be determined: {generated_answer}

Task:
- Given a question about an medical image, there is a correct answer to the question and an answer to be determined. If the answer to be determined matches the correct answer or is a good enough answer to the question, output 1; otherwise output 0. Evaluate the answer to be determined (1 or 0).

Output Format:
Correctness: your answer"""

PEFOMED_LIKERT = """Given a actual medical report on a medical image and a generated medical report that needs to be determined, evaluate the generated report to be determined (0 or 1 or 2 or 3 or 4).

standard :
4: The generated medical report exhibits minimal discrepancy in meaning compared to the actual  report, ensuring complete consistency in critical aspects such as diagnosis and treatment recommendations. It encapsulates all requisite information elements without omissions.
Applicability: This level is pertinent when evaluators face difficulty distinguishing between the generated and actual medical reports.
3: Generated medical reports closely resemble actual reports in critical elements, albeit with minor deviations that do not compromise the overall accuracy and intelligibility. They maintain alignment with the principal diagnosis and recommendations of the authentic reports, despite possible negligible discrepancies in non-essential information. These reports encompass nearly all vital information, with minimal omissions that do not impede comprehensive understanding.
Applicability: This criterion applies when the generated report's overall quality approximates that of the actual report, albeit with slight variances in detail.
2: The generated report diverges significantly from the actual report in several key aspects, yet its primary content and intent remain recognizable. Despite discrepancies in crucial information, the core diagnosis and recommendations are accurate. Omissions of some information elements have a marginal impact on the report's overall comprehensibility.
Applicability: This level is relevant when the report's foundational structure mirrors that of the actual report, despite a notable quantity and severity of inaccuracies or omissions.
1: The generated report is quite different from the actual report in several key aspects, which affects the basic understanding and use of the reports. There are multiple errors or misleading statements of key information. More important information is left out, affecting the completeness and practicality of the report.
Applicability: Although the report retains some basic framework or content, there are many errors, which affect the overall quality.
0: The generated report hardly has any consistency with the actual report and completely deviates from the correct message or purpose. The information in the report is completely inconsistent with the actual report and is full of errors or irrelevant content. It lacks the necessary information elements to serve as an effective medical report.
Applicability: It is applicable when the content of the report is completely inconsistent with the intended goal and it is almost impossible to identify it as a valid medical report.

actual medical report:
- actual medical report: {ground_truth}

generated medical report:
- generated medical report to be determined: {generated_report}

Task:
- Given a actual medical report on a medical image and a generated medical report that needs to be determined, evaluate the generated report to be determined (0 or 1 or 2 or 3 or 4).

Output Format(Only "Score:" and a rating number can be output):
Score: your answer"""

# The harness's own preset (convention `default`): plainer instructions, a JSON verdict
# (sent as a JSON schema where the provider supports structured output; parsed leniently otherwise).
DEFAULT_VQA = """You are grading an answer to a question about a medical image. You cannot see the image: judge only by comparing the candidate answer with the reference answer.

Question: {question}
Reference answer: {true_answer}
Candidate answer: {generated_answer}

The candidate is correct (1) if it means the same as the reference answer or is a clinically equivalent answer to the question: synonyms, abbreviations, other wording or word order, and extra detail that does not contradict the reference are fine. It is incorrect (0) if it contradicts the reference, answers a different question, misses the key information, hedges between several answers, or is empty.

Reply with a JSON object only: {"reason": "<one short sentence>", "correct": <0 or 1>}"""

DEFAULT_LIKERT = """You are grading a generated medical report (or image caption) against the reference written by a clinician. Compare the clinical content, not the style or wording.

Reference: {ground_truth}
Generated: {generated_report}

Score from 0 to 4:
4: clinically equivalent: the same findings and diagnosis, nothing important missing or wrong.
3: the same main diagnosis, with minor omissions or errors in non-essential details.
2: the main finding is recognisable, but several important findings are missing or wrong.
1: mostly different: major errors, misleading statements, or key findings missing.
0: unrelated to the reference, or no usable medical content.

Reply with a JSON object only: {"reason": "<one short sentence>", "score": <0, 1, 2, 3 or 4>}"""

VQA_SCHEMA: dict = {
    "type": "object",
    "properties": {"reason": {"type": "string"}, "correct": {"type": "integer", "enum": [0, 1]}},
    "required": ["reason", "correct"],
    "additionalProperties": False,
}

LIKERT_SCHEMA: dict = {
    "type": "object",
    "properties": {"reason": {"type": "string"}, "score": {"type": "integer", "enum": [0, 1, 2, 3, 4]}},
    "required": ["reason", "score"],
    "additionalProperties": False,
}

#: (kind, convention) -> template; kind is "binary" (VQA) or "likert" (reports, captions)
TEMPLATES: dict[tuple[str, str], str] = {
    ("binary", "pefomed"): PEFOMED_VQA,
    ("binary", "default"): DEFAULT_VQA,
    ("likert", "pefomed"): PEFOMED_LIKERT,
    ("likert", "default"): DEFAULT_LIKERT,
}

SCHEMAS: dict[str, dict] = {"binary": VQA_SCHEMA, "likert": LIKERT_SCHEMA}

_PLACEHOLDER = re.compile(r"\{(question|true_answer|generated_answer|ground_truth|generated_report)\}")


def fill(template: str, **values: str) -> str:
    """Substitute `{name}` placeholders in one pass (values are inserted as they are)."""
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)


def template_sha256(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()
