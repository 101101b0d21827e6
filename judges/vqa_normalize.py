"""VQA-v2-style answer normalization, as the medical VQA scorers (PeFoMed, LLaVA-Med, MultiMedEval) apply it.

All three scorers carry the same variant of the VQA-v2 evaluation's normalization (LAVIS/MiniGPT-v2 lineage):
its punctuation list has `{ } - !` and lacks the official `: '`. Steps, in order:

1. Punctuation. For each mark in `PUNCTUATION`: if the *original* text has the mark next to a space
   (`"m "` or `" m"`), or the text contains a digit-comma-digit anywhere, the mark is deleted; otherwise it
   becomes a space. So "T2- weighted" -> "T2 weighted" but "T2-weighted" -> "T2 weighted" too, while
   "1,5 cm-wide" -> "15 cmwide" (the digit-comma-digit glues every mark, not only the comma).
2. Periods not followed by a digit are deleted ("3." -> "3", "3.5" stays, ".5" stays). Quirk: the originals
   pass `re.UNICODE` (= 32) positionally as `count`, so at most the first 32 such periods go.
3. Lowercase, split on whitespace, number words none/zero..ten -> "0".."10", drop the articles a/an/the
   (after the number mapping), then expand contractions ("isnt" -> "isn't"). The originals' uppercase
   contraction keys ("Im", "Ive", "Id've", "I'dve") can never match lowercased words and are left out here.
4. Join with single spaces. (The originals then delete "," again: a no-op, step 1 already removed every comma.)

PeFoMed also replaces the substring "x ray" by "xray" afterwards (`pefomed_normalize`), so "box ray" becomes
"boxray" as well.
"""

from __future__ import annotations

import re

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's",
    "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll",
    "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip

_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_MAX_PERIODS_REMOVED = 32  # the originals' `sub("", text, re.UNICODE)`: re.UNICODE == 32 lands in `count`


def strip_punctuation(text: str) -> str:
    """Steps 1 and 2: delete or space out punctuation marks, then delete periods not followed by a digit."""
    glue_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        glued = glue_all or f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if glued else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_MAX_PERIODS_REMOVED)


def normalize_words(text: str) -> list[str]:
    """Step 3: lowercase words with number words as digits, articles dropped and contractions expanded."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return [CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES]


def vqa_normalize(text: str) -> str:
    """The shared normalization (steps 1-4); what LLaVA-Med and MultiMedEval compare."""
    return " ".join(normalize_words(strip_punctuation(text)))


def pefomed_normalize(text: str) -> str:
    """PeFoMed's variant: the shared normalization, then "x ray" -> "xray"."""
    return vqa_normalize(text).replace("x ray", "xray")
