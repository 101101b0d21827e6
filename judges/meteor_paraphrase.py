"""METEOR's English paraphrase table, cut down to the entries a scoring run can use.

METEOR 1.5 spends most of its start-up (10+ s) reading pycocoevalcap's `paraphrase-en.gz` (5.3 M entries). An
entry (phrase1 -> phrase2) can only produce a match when every word of phrase1 occurs in one sentence and every
word of phrase2 in the other; entries with a word that occurs nowhere in the run are dead weight. We write a table
holding only the entries whose words all belong to a superset of the run's METEOR tokens, in the original order,
and hand it to the same jar with `-a`. The matcher compares word ids for equality and walks the table in insertion
order, so the kept entries produce the same matches in the same order: the statistics are identical (the tests
check this against pycocoevalcap's own `Meteor()`). `--judge-arg meteor_table=full` uses the full table.

To make the cut fast (well under a second), the table is indexed once into the harness cache (20-60 s and up to
2 GB of memory while building, about 180 MB on disk): a vocabulary, one token-id array, line offsets and the lines
grouped by their rarest word, loaded memory-mapped afterwards. It is built in a hidden folder named by host and
process and renamed into place, so a build killed part-way is never used, and what it left is removed by the next
judge to start once its process is gone (`processes.remove_stale_temporaries`).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import sys
import tempfile
from collections import defaultdict
from itertools import count, repeat
from pathlib import Path

import numpy as np

from harness.io import make_readable
from harness.paths import cache_dir
from harness.processes import remove_stale_temporaries, temp_tag

INDEX_VERSION = "2"
# METEOR's Normalizer letter/digit class; a "piece" is a run of it, or any other single non-space character
_ALNUM = "0-9A-Za-zŠŽšžŸÀ-ÖØ-öø-žЀ-ӿԀ-ԧꙀ-ꙮ꙾-ꚗᴀ-ᵿ"
_PIECES = re.compile(f"[{_ALNUM}]+|[^{_ALNUM} ]")
_ALNUM_RUN = re.compile(f"[{_ALNUM}]+")
# characters and entities METEOR's normalizer rewrites before tokenizing
_REWRITES = str.maketrans({"`": "'", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                           "\u2013": "-", "\u2014": "-"})
_ENTITIES = (("&quot;", '"'), ("&apos;", "'"), ("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&"))
_ALWAYS = ('"', "'", "-", "--", "<", ">", "&", ".", "...")


def candidate_tokens(lines: list[str], max_len: int) -> set[str]:
    """A superset of the tokens METEOR's `-norm` tokenizer (then lowercasing) can produce from these lines.

    METEOR's Normalizer rewrites a few quote/dash characters and SGML entities, inserts spaces between runs of its
    letter/digit class and other characters, and deletes the periods of acronyms ("U.S.A." -> "USA"). So every
    token is a run of consecutive "pieces" (a letter/digit run, or one other character) of one space-separated
    chunk of a rewritten line, possibly with its non-letter/digit pieces dropped. tests/test_lexical_judge.py checks
    this against the jar's own Normalizer on real and adversarial text.
    """
    out: set[str] = set(_ALWAYS)
    chunks: set[str] = set()
    for line in lines:
        for variant in {line, line.lower()}:
            rewritten = variant.translate(_REWRITES)
            for entity, char in _ENTITIES:
                rewritten = rewritten.replace(entity, char)
            chunks.update(variant.split(" "))  # other white space stays inside chunks, as pieces
            chunks.update(rewritten.split(" "))
    for chunk in chunks:
        pieces = _PIECES.findall(chunk)
        for i in range(len(pieces)):
            token, letters = "", ""
            for piece in pieces[i:]:
                token += piece
                if _ALNUM_RUN.fullmatch(piece):
                    letters += piece
                if len(letters) > max_len:
                    break
                if len(token) <= max_len:
                    out.add(token)
                out.add(letters)
    return {t.lower() for t in out} | out


class ParaphraseIndex:
    """The paraphrase table as token ids (memory-mapped), able to write a table cut down to a vocabulary.

    Token ids are ranks by frequency (0 = most frequent), so each phrase line's largest id is its rarest word: a
    line can only survive the cut if its rarest word is known, and `lines_by_key` lists the lines by that word.
    """

    def __init__(self, folder: Path) -> None:
        self.vocab = (folder / "vocab.txt").read_bytes().decode("utf-8").split("\n")
        self.ids = {token: i for i, token in enumerate(self.vocab)}
        self._vocab_array = np.array(self.vocab, dtype=object)
        self.tokens = np.load(folder / "tokens.npy", mmap_mode="r")
        self.offsets = np.load(folder / "offsets.npy", mmap_mode="r")
        self.lines_by_key = np.load(folder / "lines_by_key.npy", mmap_mode="r")
        self.key_offsets = np.load(folder / "key_offsets.npy")
        self.probs = np.load(folder / "probs.npy", mmap_mode="r")
        self.max_len = max(len(t) for t in self.vocab)

    @property
    def entries(self) -> int:
        return len(self.probs)

    def _token_positions(self, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions in `tokens` of the given lines' tokens (concatenated) and each line's token count."""
        starts = self.offsets[lines].astype(np.int64)
        lengths = self.offsets[lines + 1].astype(np.int64) - starts
        positions = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
        return positions, lengths

    def kept_entries(self, vocabulary: set[str]) -> np.ndarray:
        """Sorted indices of the entries whose words (both phrases) are all in `vocabulary`."""
        known_ids = sorted(self.ids[t] for t in vocabulary if t in self.ids)
        known = np.zeros(len(self.vocab), dtype=bool)
        known[known_ids] = True
        slices = [self.lines_by_key[self.key_offsets[k]: self.key_offsets[k + 1]] for k in known_ids]
        if not slices:
            return np.zeros(0, dtype=np.int64)
        lines = np.concatenate(slices).astype(np.int64)
        # an entry is a candidate when the rarest words of both its phrases are known
        first, second = np.zeros(self.entries, dtype=bool), np.zeros(self.entries, dtype=bool)
        first[lines[lines % 2 == 0] // 2] = True
        second[lines[lines % 2 == 1] // 2] = True
        entries = np.flatnonzero(first & second)
        lines = np.stack([2 * entries, 2 * entries + 1], axis=1).ravel()
        positions, lengths = self._token_positions(lines)
        if not len(lines):
            return entries
        bad = np.logical_or.reduceat(~known[self.tokens[positions]], np.cumsum(lengths) - lengths)
        return entries[~(bad[0::2] | bad[1::2])]

    def write_subset(self, vocabulary: set[str], out: Path) -> int:
        """Write (gzip) the entries whose words are all in `vocabulary`, in table order; return their count."""
        keep = self.kept_entries(vocabulary)
        lines = np.stack([2 * keep, 2 * keep + 1], axis=1).ravel()
        positions, lengths = self._token_positions(lines)
        words = self._vocab_array[self.tokens[positions]]
        separators = np.full(len(words), " ", dtype=object)
        separators[np.cumsum(lengths) - 1] = "\n"
        joined = np.empty(2 * len(words), dtype=object)
        joined[0::2], joined[1::2] = words, separators
        phrases = "".join(joined.tolist()).split("\n")
        text: list[str] = [""] * (3 * len(keep))
        text[0::3] = map(repr, self.probs[keep].tolist())
        text[1::3], text[2::3] = phrases[0:2 * len(keep):2], phrases[1:2 * len(keep):2]
        with gzip.open(out, "wb", compresslevel=1) as fh:
            fh.write(("\n".join(text) + "\n").encode("utf-8") if text else b"")
        return len(keep)


def load_index(table: Path) -> ParaphraseIndex | None:
    """The index of `table` from the cache, built on first use; None when the table's layout is not the
    expected single-space format (then the full table is used)."""
    stat = table.stat()
    folder = cache_dir() / "meteor-paraphrase" / f"v{INDEX_VERSION}-{stat.st_size}-{stat.st_mtime_ns}"
    remove_stale_temporaries(folder.parent)  # what a build killed part-way left (up to 180 MB each)
    if (folder / "unfilterable").exists():
        return None
    if not (folder / "probs.npy").exists():
        print(f"lexical: indexing METEOR's paraphrase table once into {folder} (20-60 s)",
              file=sys.stderr, flush=True)
        _build(table, folder)
        if (folder / "unfilterable").exists():
            return None
    return ParaphraseIndex(folder)


def _build(table: Path, folder: Path) -> None:
    """Build the index into a hidden temporary folder named by this host and process (`processes.temp_tag`: once
    that process is gone, `load_index` removes what it left), then rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".build.{temp_tag()}.", dir=folder.parent))
    try:
        _write_index(table, tmp)
        make_readable(tmp)  # mkdtemp's 0700: another user sharing the cache could not read the index
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first
            if not (folder / "probs.npy").exists() and not (folder / "unfilterable").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_index(table: Path, out: Path) -> None:
    with gzip.open(table, "rb") as fh:
        lines = fh.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if len(lines) % 3:
        (out / "unfilterable").write_text("line count is not a multiple of 3\n")
        return
    probs = np.fromiter(map(float, lines[0::3]), dtype=np.float64, count=len(lines) // 3)
    del lines[0::3]  # phrase1, phrase2, phrase1, phrase2, ...
    ids: defaultdict[bytes, int] = defaultdict(count().__next__)
    id_blocks, length_blocks = [], []
    for start in range(0, len(lines), 1_000_000):
        block = lines[start: start + 1_000_000]
        lengths = np.fromiter(map(bytes.count, block, repeat(b" ")), dtype=np.int64, count=len(block)) + 1
        blob = b"\n".join(block)
        tokens = blob.split()
        if len(tokens) != lengths.sum() or any(ch in blob for ch in (b"\t", b"\r", b"\x0c", b"  ")):
            (out / "unfilterable").write_text("a phrase is not single-space separated\n")
            return
        id_blocks.append(np.fromiter(map(ids.__getitem__, tokens), dtype=np.uint32, count=len(tokens)))
        length_blocks.append(lengths)
    del lines
    token_ids = np.concatenate(id_blocks)
    lengths = np.concatenate(length_blocks)
    words = list(ids)  # insertion order = id order
    try:
        for word in words:
            word.decode("utf-8")
    except UnicodeDecodeError:
        (out / "unfilterable").write_text("the table is not valid UTF-8\n")
        return
    # renumber by frequency rank, so that a line's largest id is its rarest word (its key)
    rank = np.empty(len(words), dtype=np.int64)
    rank[np.argsort(-np.bincount(token_ids, minlength=len(words)), kind="stable")] = np.arange(len(words))
    token_ids = rank[token_ids]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    keys = np.maximum.reduceat(token_ids, offsets[:-1])
    lines_by_key = np.argsort(keys, kind="stable")
    key_offsets = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=len(words)), out=key_offsets[1:])
    index_type = np.uint32 if len(token_ids) < 2**32 else np.uint64
    np.save(out / "tokens.npy", token_ids.astype(np.uint16 if len(words) < 2**16 else np.uint32))
    np.save(out / "offsets.npy", offsets.astype(index_type))
    np.save(out / "lines_by_key.npy", lines_by_key.astype(index_type))
    np.save(out / "key_offsets.npy", key_offsets)
    (out / "vocab.txt").write_bytes(b"\n".join(words[i] for i in np.argsort(rank).tolist()))
    np.save(out / "probs.npy", probs)  # written last: its presence marks a complete index
