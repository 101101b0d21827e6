"""The `lexical` judge: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D exactly as pycocoevalcap, plus rouge-score ROUGE-1/2/L F.

Records: `answer` is the reference text, `prediction` the generated text (one reference each). The text is first
cleaned by the named `--convention` (none, r2gen, imageclef; see lexical_text.py), then tokenized by pycocoevalcap's
PTB tokenizer (Java) for the COCO metrics, as COCOEvalCap and PeFoMed do; `tokenizer=split` instead scores the cleaned
text split on whitespace, as R2Gen's `compute_scores` does (its " . " tokens then count); rouge-score tokenizes the
cleaned text itself.

One scoring run starts Java three times in all (PTB tokenizer for references and predictions in parallel, then
METEOR, whose slow paraphrase-table load is cut to the entries the run can use; see meteor_paraphrase.py), and
keeps per sample what corpus metrics need (tokens, METEOR statistics) in the row's details, so `aggregate` gives any
slice or bootstrap resample its exact pycocoevalcap numbers in milliseconds, without Java.

Per-sample row metrics: pycocoevalcap's sentence BLEU (`bleu_list`), METEOR segment score, ROUGE-L, CIDEr-D (IDF
of the whole scored set), rouge-score F values, and SPICE when asked for. The corpus numbers (results.json) come
from `aggregate`: corpus BLEU and METEOR are not means of the per-sample values.

Setup (describe()'s "setup", a leaderboard row's identity): `rouge_stemmer` and `spice`, resolved to booleans, and
`tokenizer` when it is not the default `ptb` (so rows recorded before the setting existed keep their identity).
`meteor_table` and `meteor_workers` are left out: the cut paraphrase table gives the full table's statistics and
the workers only split the work, so neither changes a number.
"""

from __future__ import annotations

import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UserError
from harness.extras import install_hint
from harness.flags import parse_flag
from harness.judge_api import Aggregator, JudgeOptions, JudgePlugin
from harness.judges.coco_java import METEOR_JAR, PARAPHRASE_TABLE, JavaVersion, PTBJob, coco_dir, require_java
from harness.judges.coco_meteor import MeteorProcess, MeteorStopped, meteor_score, score_line
from harness.judges.coco_ngram import bleu
from harness.judges.coco_rouge import RougeScore, coco_rouge_l
from harness.judges.lexical_corpus import BLEU_NAMES, ROUGE_SCORE_NAMES, LexicalCorpus, corpus_from_rows
from harness.judges.lexical_text import CONVENTIONS, clean

METRICS = {
    "Bleu_1": "BLEU-1, corpus level with 'closest' reference length (pycocoevalcap Bleu(4)); per sample: bleu_list",
    "Bleu_2": "BLEU-2 (as Bleu_1)",
    "Bleu_3": "BLEU-3 (as Bleu_1)",
    "Bleu_4": "BLEU-4 (as Bleu_1)",
    "METEOR": "METEOR 1.5 -l en -norm (pycocoevalcap Meteor); corpus = score of summed statistics",
    "ROUGE_L": "ROUGE-L, beta 1.2 (pycocoevalcap Rouge); corpus = mean",
    "CIDEr": "CIDEr-D (pycocoevalcap Cider: IDF from the evaluated references, x10); corpus = mean",
    "rouge1_f": "ROUGE-1 F (rouge-score RougeScorer on the cleaned text); corpus = mean",
    "rouge2_f": "ROUGE-2 F (rouge-score); corpus = mean",
    "rougeL_f": "ROUGE-L F (rouge-score); corpus = mean",
    "SPICE": "SPICE F 'All' (pycocoevalcap Spice, only with spice=true); corpus = mean of scored samples",
}
TOKENIZERS = {
    "ptb": "pycocoevalcap PTBTokenizer (lowercased, punctuation tokens dropped), as COCOEvalCap and PeFoMed",
    "split": "the cleaned text split on whitespace, as R2Gen's compute_scores (punctuation tokens count); runs of "
             "whitespace count as one space, as in R2Gen's decoded texts",
}
_CACHE_LIMIT = 4096
MAX_METEOR_WORKERS = 32  # Java processes of up to 2 GB each: more would only exhaust memory


def _flag(settings: dict[str, Any], key: str) -> bool:
    value = settings.get(key, False)
    return parse_flag(value, f"--judge-arg {key}={value}")


def _tokenizer(settings: dict[str, Any]) -> str:
    value = str(settings.get("tokenizer", "ptb"))
    if value not in TOKENIZERS:
        raise UserError(f"--judge-arg tokenizer={value}: expected {' or '.join(TOKENIZERS)}")
    return value


class LexicalJudge(JudgePlugin):
    id = "lexical"
    version = "1"
    conventions = tuple(CONVENTIONS)
    default_convention = "none"
    task_kinds = ("report", "caption", "vqa")
    accepted_settings = ("spice", "rouge_stemmer", "tokenizer", "meteor_table", "meteor_workers")
    mean_metrics = False  # corpus BLEU/METEOR/CIDEr: confidence intervals by bootstrap over rows
    bootstrap_ci = True  # aggregate is cheap (no Java): see LexicalCorpus

    def __init__(self, options: JudgeOptions) -> None:
        super().__init__(options)
        settings = options.settings
        self.spice = _flag(settings, "spice")
        self.rouge_stemmer = _flag(settings, "rouge_stemmer")
        self.tokenizer = _tokenizer(settings)
        self.meteor_table = str(settings.get("meteor_table", "filtered"))
        if self.meteor_table not in ("filtered", "full"):
            raise UserError(f"--judge-arg meteor_table={self.meteor_table}: expected 'filtered' or 'full'")
        workers = str(settings.get("meteor_workers", "auto"))
        if workers != "auto" and not (workers.isdigit() and 1 <= int(workers) <= MAX_METEOR_WORKERS):
            raise UserError(f"--judge-arg meteor_workers={workers}: expected an integer from 1 to "
                            f"{MAX_METEOR_WORKERS} (each is a Java process of up to 2 GB) or 'auto'")
        self.meteor_workers = workers
        self.java = require_java()
        coco_dir()
        try:
            import rouge_score  # noqa: F401
        except ImportError:
            raise UserError(f"the lexical judge needs 'rouge-score': {install_hint('lexical')}") from None
        if self.spice:
            from harness.judges.coco_spice import spice_dir

            spice_dir()
        self._positions: dict[int, tuple[dict[str, Any], LexicalCorpus, int]] = {}
        self._aggregates: dict[tuple[int, ...], tuple[list[dict[str, Any]], dict[str, float | None]]] = {}
        self._run_info: dict[str, Any] = {}

    @classmethod
    def resolve_setup(cls, settings: dict[str, Any], convention: str | None) -> dict[str, Any]:
        setup: dict[str, Any] = {"rouge_stemmer": _flag(settings, "rouge_stemmer"), "spice": _flag(settings, "spice")}
        tokenizer = _tokenizer(settings)
        return setup if tokenizer == "ptb" else {**setup, "tokenizer": tokenizer}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["text_cleaning"] = CONVENTIONS[self.convention]
        info["tokenizer"] = TOKENIZERS[self.tokenizer]
        info["metric_definitions"] = {k: v for k, v in METRICS.items() if k != "SPICE" or self.spice}
        info["tools"] = {name: _version(name) for name in ("pycocoevalcap", "rouge-score")}
        info.update(self._run_info)
        return info

    # ------------------------------------------------------------------ scoring
    def score(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.java = require_java()
        references = [clean(_text(r.get("answer")), self.convention) for r in records]
        predictions = [clean(_text(r.get("prediction")), self.convention) for r in records]
        if not records:
            return []
        with tempfile.TemporaryDirectory(prefix="harness-lexical-") as tmp:
            workdir = Path(tmp)
            jobs = [PTBJob(self.java, references, workdir, "references"),
                    PTBJob(self.java, predictions, workdir, "predictions")] if self.tokenizer == "ptb" else []
            version = JavaVersion(self.java)
            try:
                rouge = RougeScore(self.rouge_stemmer)
                rouge_rows = [rouge.score(ref, pred) for ref, pred in zip(references, predictions)]
                if jobs:
                    ref_tokens, hyp_tokens = jobs[0].result(), jobs[1].result()
                else:
                    ref_tokens = [" ".join(text.split()) for text in references]
                    hyp_tokens = [" ".join(text.split()) for text in predictions]
            finally:
                for job in jobs:
                    job.kill()
            try:
                meteor_stats, corpus = self._meteor_and_corpus(ref_tokens, hyp_tokens, rouge_rows, workdir)
            except MeteorStopped as exc:  # exc.done: the lines before it, over every worker's part
                i = min(exc.done, len(records) - 1)
                memory = "OutOfMemoryError" in exc.cause
                raise UserError(
                    f"METEOR (Java) stopped at sample {records[i].get('id')!r} ({len(hyp_tokens[i].split())} words "
                    f"predicted, {len(ref_tokens[i].split())} in the reference): {exc.cause}; nothing of this judge "
                    "was recorded" + (": METEOR 1.5 holds a text of some ten thousand words in its 2 GB; shorten "
                                      "that prediction (or cap --max-new-tokens) and score again" if memory else
                                      ": score again")) from None
            spice = None
            if self.spice:
                from harness.judges.coco_spice import run_spice

                spice = run_spice(self.java, ref_tokens, hyp_tokens, workdir)
                corpus.add_mean("SPICE", spice)  # its corpus value, as for rows read back (corpus_from_rows)
        self._run_info["java"] = version.result()
        cider = corpus.per_sample_cider()
        rows = []
        for i in range(len(records)):
            stats = corpus.bleu_stats[i].tolist()
            metrics: dict[str, float | None] = dict(zip(BLEU_NAMES, bleu(stats)))
            metrics["METEOR"] = meteor_score(meteor_stats[i])
            metrics["ROUGE_L"] = float(corpus.means["ROUGE_L"][i])
            metrics["CIDEr"] = float(cider[i])
            metrics.update(rouge_rows[i])
            if spice is not None:
                metrics["SPICE"] = spice[i]
            details = {
                "reference_tokens": ref_tokens[i],
                "prediction_tokens": hyp_tokens[i],
                "bleu_stats": stats,
                "meteor_stats": [int(v) if v.is_integer() else v for v in meteor_stats[i]],
            }
            rows.append({"metrics": metrics, "details": details})
        for i, row in enumerate(rows):
            self._positions[id(row)] = (row, corpus, i)
        return rows

    def _meteor_and_corpus(self, ref_tokens: list[str], hyp_tokens: list[str], rouge_rows: list[dict[str, float]],
                           workdir: Path) -> tuple[list[list[float]], LexicalCorpus]:
        """Run METEOR on the SCORE lines while the Python metrics are computed; return the statistics and the
        corpus holding everything `aggregate` needs."""
        lines = [score_line(hyp, ref) for hyp, ref in zip(hyp_tokens, ref_tokens)]
        paraphrase = self._paraphrase_table(lines, workdir)
        n_workers = self._workers(len(lines))
        chunk = -(-len(lines) // n_workers)
        parts = [lines[i: i + chunk] for i in range(0, len(lines), chunk)]
        processes = [MeteorProcess(self.java, coco_dir() / METEOR_JAR, paraphrase) for _ in parts]
        try:
            for process, part in zip(processes, parts):
                process.send(part)
            means = {"ROUGE_L": [coco_rouge_l(h, r) for h, r in zip(hyp_tokens, ref_tokens)]}
            means.update({name: [row[name] for row in rouge_rows] for name in ROUGE_SCORE_NAMES})
            corpus = LexicalCorpus(ref_tokens, hyp_tokens, means)
            stats: list[list[float]] = []
            for process, part in zip(processes, parts):
                try:
                    stats.extend(process.receive(len(part)))
                except MeteorStopped as exc:  # counted over every part, for the sample it stopped at
                    raise MeteorStopped(len(stats) + exc.done, len(lines), exc.cause) from None
        finally:
            for process in processes:
                process.close()
        corpus.meteor_stats = np.array(stats, dtype=float).reshape(-1, 23)
        self._run_info["meteor_workers"] = len(processes)
        return stats, corpus

    def _workers(self, n_lines: int) -> int:
        if self.meteor_workers != "auto":
            return max(1, min(int(self.meteor_workers), n_lines))
        return 2 if n_lines >= 400 and (os.cpu_count() or 1) >= 2 else 1

    def _paraphrase_table(self, lines: list[str], workdir: Path) -> Path | None:
        """METEOR's paraphrase table cut to this run's vocabulary (None: the jar's full default table)."""
        from harness.judges.meteor_paraphrase import candidate_tokens, load_index

        index = load_index(coco_dir() / PARAPHRASE_TABLE) if self.meteor_table == "filtered" else None
        if index is None:
            self._run_info["meteor_paraphrase_table"] = "full (pycocoevalcap's paraphrase-en.gz)"
            return None
        path = workdir / "paraphrase-subset.gz"
        kept = index.write_subset(candidate_tokens(lines, index.max_len), path)
        self._run_info["meteor_paraphrase_table"] = (
            f"pycocoevalcap's paraphrase-en.gz cut to the {kept} of {index.entries} entries whose words occur in "
            "the run (same statistics as the full table)"
        )
        return path

    # -------------------------------------------------------------- aggregation
    def aggregate(self, records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, float | None]:
        key = tuple(map(id, rows))
        hit = self._aggregates.get(key)
        if hit is not None:
            return dict(hit[1])
        corpus, indices = self._locate(rows)
        values = corpus.metrics(indices)
        if len(self._aggregates) >= _CACHE_LIMIT:
            self._aggregates.clear()
        self._aggregates[key] = (list(rows), values)  # holding the rows keeps their ids from being reused
        return dict(values)

    @classmethod
    def saved_aggregator(cls, rows: list[dict[str, Any]], convention: str | None, setup: Any) -> Aggregator:
        """The corpus metrics of any positions of `rows`, from their details (no Java: METEOR from its statistics)."""
        try:
            corpus = corpus_from_rows(rows)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        return corpus.metrics

    def _locate(self, rows: list[dict[str, Any]]) -> tuple[LexicalCorpus, list[int]]:
        """The corpus these rows were scored in and their positions. Rows from elsewhere (read back from a file)
        get a corpus rebuilt from their details, registered so that later subsets of them are cheap."""
        found = [self._positions.get(id(row)) for row in rows]
        if rows and all(f is not None and f[0] is row for f, row in zip(found, rows)):
            corpus = found[0][1]
            if all(f[1] is corpus for f in found):
                return corpus, [f[2] for f in found]
        unique = list({id(row): row for row in rows}.values())
        try:
            corpus = corpus_from_rows(unique)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        for i, row in enumerate(unique):
            self._positions[id(row)] = (row, corpus, i)
        return corpus, [self._positions[id(row)][2] for row in rows]

    def close(self) -> None:
        """Nothing stays running: every Java process ends inside `score`."""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        raise UserError(f"the lexical judge takes one reference text per sample, got a list: {str(value)[:80]}")
    return str(value)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
