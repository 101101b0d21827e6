"""Named text-cleaning conventions applied to references and predictions before lexical scoring.

- `none`: the text as given (pycocoevalcap's PTB tokenizer still lowercases and drops punctuation).
- `r2gen`: R2Gen's `clean_report_iu_xray` (lowercase, list numbering and punctuation removed, sentences joined
  by " . "), reproduced with its quirks. R2Gen then scores this text without the PTB tokenizer, so for its
  numbers add `--judge-arg tokenizer=split` (lexical.py); its references also pass through its own vocabulary
  (rare words become <unk>), which no evaluation outside its code reproduces.
- `imageclef`: the ImageCLEFmedical caption evaluation preprocessing: lowercase, every run of digits replaced by
  the word "number", then every character of `string.punctuation` removed.
"""

from __future__ import annotations

import re
import string

CONVENTIONS: dict[str, str] = {
    "none": "text as given (the PTB tokenizer lowercases and drops punctuation tokens)",
    "r2gen": "R2Gen clean_report_iu_xray: lowercase, numbering and punctuation removed, ' . '-joined sentences",
    "imageclef": "ImageCLEFmedical caption preprocessing: lowercase, digits -> 'number', punctuation removed",
}

# R2Gen's character class, verbatim: note that ":-\[" is a range (':' to '['), so it also removes ;<=>?@
_R2GEN_SENTENCE_CHARS = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")
_DIGITS = re.compile(r"\d+")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _r2gen_sentences(text: str) -> list[str]:
    for _ in range(3):
        text = text.replace("..", ".")
    text = text.replace("1. ", "")
    for number in "2345":
        text = text.replace(f". {number}. ", ". ")
    for number in "2345":
        text = text.replace(f" {number}. ", ". ")
    return text.strip().lower().split(". ")


def _r2gen_sentence(sentence: str) -> str:
    sentence = sentence.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip().lower()
    return _R2GEN_SENTENCE_CHARS.sub("", sentence)


def clean_r2gen(text: str) -> str:
    """R2Gen's `clean_report_iu_xray`. Its filter `sent_cleaner(sent) != []` is always true, so empty
    sentences are kept (an empty report becomes " ."): reproduced as is."""
    return " . ".join(_r2gen_sentence(s) for s in _r2gen_sentences(text)) + " ."


def clean_imageclef(text: str) -> str:
    """ImageCLEFmedical caption evaluator: lowercase, digits -> 'number', punctuation removed (in this order)."""
    return _DIGITS.sub("number", text.lower()).translate(_PUNCTUATION)


def clean(text: str, convention: str) -> str:
    if convention == "none":
        return text
    if convention == "r2gen":
        return clean_r2gen(text)
    if convention == "imageclef":
        return clean_imageclef(text)
    raise ValueError(f"unknown text-cleaning convention {convention!r}")
