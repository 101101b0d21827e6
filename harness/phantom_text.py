"""The words of the phantom tasks: questions, reports and captions stated from a case's findings.

Split from harness/phantom.py (which draws the pixels); the wording varies with the case's random generator,
so the same seed always gives the same text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

ORGANS = ("chest", "head", "abdomen", "knee")
MODALITIES = ("x-ray", "ct", "mri")


@dataclass
class PhantomQA:
    """One question about a case. CLOSED ones are yes/no or two-option; each is asked so that its answers are
    balanced (yes/no questions ask about the true value half the time), OPEN ones ask for a count, organ,
    modality or location."""

    question: str
    answer: str
    answer_type: Literal["OPEN", "CLOSED"]
    question_type: str


FIELD_NAME = {"chest": "lung", "head": "hemisphere", "abdomen": "abdomen", "knee": "knee"}
MODALITY_ARTICLE = {"x-ray": "an x-ray", "ct": "a CT scan", "mri": "an MRI"}
MODALITY_WORD = {"x-ray": "radiograph", "ct": "CT", "mri": "MRI"}
BRIGHTNESS_WORDS = {
    "x-ray": {"bright": ("bright", "dense", "radiopaque"), "dark": ("dark", "lucent")},
    "ct": {"bright": ("bright", "hyperdense"), "dark": ("dark", "hypodense")},
    "mri": {"bright": ("bright", "hyperintense"), "dark": ("dark", "hypointense")},
}
NORMAL_SENTENCES = {  # first group describes the lesion field and is left out when a lesion is there
    "chest": (("The lungs are clear.", "Both lungs are clear.", "No focal consolidation is seen."),
              ("The heart size is normal.", "The cardiomediastinal silhouette is within normal limits."),
              ("No pleural effusion or pneumothorax.", "There is no pleural effusion.")),
    "head": (("The brain parenchyma is unremarkable.", "Gray-white differentiation is preserved."),
             ("The ventricles are normal in size.", "There is no midline shift."),
             ("The calvarium is intact.", "No skull fracture is seen.")),
    "abdomen": (("The solid organs are unremarkable.", "No focal abdominal mass is seen."),
                ("The bowel gas pattern is normal.", "There is no bowel obstruction."),
                ("No free intraperitoneal air.", "The spine is intact.")),
    "knee": (("The bones and soft tissues of both knees are unremarkable.", "No focal bone lesion is seen."),
             ("The joint spaces are preserved.", "Joint alignment is normal."),
             ("There is no joint effusion.", "No fracture or dislocation.")),
}
NORMAL_IMPRESSION = {
    "chest": ("No acute cardiopulmonary abnormality.", "Normal chest."),
    "head": ("No acute intracranial abnormality.", "Normal head study."),
    "abdomen": ("No acute abdominal abnormality.", "Normal abdomen."),
    "knee": ("No acute osseous abnormality.", "Normal knees."),
}
COUNT_WORD = {1: "a", 2: "two", 3: "three"}


def _pick(rng: np.random.Generator, options: tuple | list) -> Any:
    return options[int(rng.integers(len(options)))]


def _lesion_np(f: dict[str, Any]) -> tuple[str, str]:
    """("the lesion", "Is") or ("the lesions", "Are")."""
    return ("the lesions", "Are") if f["count"] > 1 else ("the lesion", "Is")


def _yes_no_about(rng: np.random.Generator, truth: str, values: tuple[str, ...]) -> tuple[str, str]:
    """Ask about the true value half the time, else a wrong one: yes and no stay balanced per wording."""
    if rng.random() < 0.5:
        return truth, "yes"
    return _pick(rng, [v for v in values if v != truth]), "no"


def question_list(f: dict[str, Any], rng: np.random.Generator) -> list[PhantomQA]:
    organ, modality, present = f["organ"], f["modality"], f["lesion"]
    qa = []
    wording, normal_wording = _pick(rng, [
        ("Is there a lesion in this image?", False), (f"Is there an abnormality in the {organ}?", False),
        ("Does this image show a lesion?", False), (f"Is this {organ} image normal?", True),
        (f"Is the {organ} free of lesions?", True)])
    qa.append(PhantomQA(wording, "yes" if present != normal_wording else "no", "CLOSED", "PRES"))

    closed_type = _pick(rng, ("MODALITY", "ORGAN"))
    if closed_type == "MODALITY":
        asked, ans = _yes_no_about(rng, modality, MODALITIES)
        text = _pick(rng, (f"Is this {MODALITY_ARTICLE[asked]}?", f"Was this image taken with {asked.upper()}?"))
        qa.append(PhantomQA(text.replace("X-RAY", "x-ray"), ans, "CLOSED", "MODALITY"))
    else:
        asked, ans = _yes_no_about(rng, organ, ORGANS)
        text = _pick(rng, (f"Is this an image of the {asked}?", f"Does this image show the {asked}?"))
        qa.append(PhantomQA(text, ans, "CLOSED", "ORGAN"))

    if present:
        noun, verb = _lesion_np(f)
        qtype = _pick(rng, ("POS", "SIZE", "COLOR"))
        attr, values = {"POS": ("side", ("left", "right")), "SIZE": ("size", ("small", "large")),
                        "COLOR": ("brightness", ("bright", "dark"))}[qtype]
        truth = f[attr]
        if rng.random() < 0.5:  # two-option question, options in random order
            a, b = values if rng.random() < 0.5 else values[::-1]
            text = {"POS": f"{verb} {noun} on the {a} or the {b} side?",
                    "SIZE": f"{verb} {noun} {a} or {b}?", "COLOR": f"{verb} {noun} {a} or {b}?"}[qtype]
            qa.append(PhantomQA(text, truth, "CLOSED", qtype))
        else:
            asked, ans = _yes_no_about(rng, truth, values)
            text = {"POS": f"{verb} {noun} in the {asked} {FIELD_NAME[organ]}?",
                    "SIZE": f"{verb} {noun} {asked}?", "COLOR": f"{verb} {noun} {asked}?"}[qtype]
            qa.append(PhantomQA(text, ans, "CLOSED", qtype))

    open_types = ["COUNT", "ORGAN" if closed_type == "MODALITY" else "MODALITY"] + (["POS"] if present else [])
    open_type = _pick(rng, open_types)
    if open_type == "COUNT":
        text = _pick(rng, ("How many lesions are there?", f"How many lesions are seen in the {organ}?"))
        qa.append(PhantomQA(text, str(f["count"]), "OPEN", "COUNT"))
    elif open_type == "MODALITY":
        text = _pick(rng, ("What modality is this?", "What imaging modality was used?", "How was this image taken?"))
        qa.append(PhantomQA(text, modality, "OPEN", "MODALITY"))
    elif open_type == "ORGAN":
        text = _pick(rng, ("Which organ is shown in this image?", "What part of the body is imaged?"))
        qa.append(PhantomQA(text, organ, "OPEN", "ORGAN"))
    else:
        noun, verb = _lesion_np(f)
        text = _pick(rng, (f"Where {verb.lower()} {noun}?", f"Where {verb.lower()} {noun} located?"))
        qa.append(PhantomQA(text, f"{f['side']} {FIELD_NAME[organ]}", "OPEN", "POS"))
    return qa


def _finding_phrase(f: dict[str, Any], rng: np.random.Generator) -> str:
    """'two large hyperdense lesions in the left lung'."""
    adjective = _pick(rng, BRIGHTNESS_WORDS[f["modality"]][f["brightness"]])
    noun = "lesions" if f["count"] > 1 else "lesion"
    article = COUNT_WORD[f["count"]]
    if article == "a" and adjective[0] in "aeiou":
        article = "an"
    return f"{article} {f['size']} {adjective} {noun} in the {f['side']} {FIELD_NAME[f['organ']]}"


def report_text(f: dict[str, Any], rng: np.random.Generator) -> str:
    organ, modality = f["organ"], f["modality"]
    sentences = []
    if rng.random() < 0.5:
        planes = "Frontal and lateral views" if modality == "x-ray" else "Axial and sagittal images"
        sentences.append(f"{planes} of the {organ}.")
    groups = NORMAL_SENTENCES[organ]
    if f["lesion"]:
        phrase = _finding_phrase(f, rng)
        verb = "are" if f["count"] > 1 else "is"
        lead = _pick(rng, (f"There {verb} {phrase}.", f"{phrase[0].upper()}{phrase[1:]} {verb} seen."))
        sentences.append(lead)
        sentences += [_pick(rng, g) for g in groups[1:]]
        sentences.append(_pick(rng, ("Further evaluation is recommended.", "Clinical correlation is advised.")))
    else:
        sentences += [_pick(rng, g) for g in groups]
        sentences.append(_pick(rng, NORMAL_IMPRESSION[organ]))
    return " ".join(sentences)


def caption_text(f: dict[str, Any], rng: np.random.Generator) -> str:
    organ, modality = f["organ"], f["modality"]
    view = {"x-ray": ("Frontal radiograph", "X-ray"), "ct": ("Axial CT", "CT scan"),
            "mri": ("Axial MRI", "MR image")}[modality]
    head = f"{_pick(rng, view)} of the {organ}"
    if f["lesion"]:
        return f"{head} showing {_finding_phrase(f, rng)}."
    return f"{head} {_pick(rng, ('with no abnormality', 'showing no lesion'))}."
