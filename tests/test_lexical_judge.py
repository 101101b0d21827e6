"""The lexical judge against pycocoevalcap's and rouge-score's own scorers on real IU-Xray reports.

One module-level run of each (Java: PTB tokenizer, METEOR) is shared by the parity tests. METEOR's paraphrase
index lives in pytest's cache folder (built once, ~20-60 s, then reused), not in the per-test cache.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycocoevalcap")
pytest.importorskip("rouge_score")
if shutil.which("java") is None:
    pytest.skip("Java is not installed", allow_module_level=True)

from harness.aggregate import summarize  # noqa: E402
from harness.errors import UserError  # noqa: E402
from harness.judge_api import JudgeOptions  # noqa: E402
from harness.judges.lexical import LexicalJudge  # noqa: E402
from harness.judges.lexical_text import clean  # noqa: E402

COCO_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
EDGE_CASES = [  # (reference, prediction)
    ("The heart is normal in size. No pleural effusion.", ""),
    ("Lungs are clear.", "... !!! ,,, ?"),
    ("No acute cardiopulmonary abnormality. Stable XXXX.", "No acute cardiopulmonary abnormality. Stable XXXX."),
    ("Café-au-lait: 5×3 cm β-lesion, naïve µg → 37°C.", "Cafe au lait 5x3 cm beta lesion, naive — 37 °C."),
    ("", "Heart size normal."),
    ("Mild cardiomegaly (stable).", "mild cardiomegaly ||| stable"),
]


# text on which METEOR's Normalizer does more than split (acronym periods, contractions, quotes, entities,
# non-Latin scripts, odd white space): the paraphrase-table cut must keep every entry these can use
ADVERSARIAL = [
    ("THE U.S.A. AND Mr. Smith, e.g. Ph.D. at 5 p.m.", "the united states and mister smith for example"),
    ("he don't know it's o'clock; y'all '90s 1990's", "he does not know it is o ' clock"),
    ("\u201cquoted\u201d \u2018single\u2019 `back` ''double''", '" quoted " \' single \' quotes'),
    ("a&amp;b &quot;x&quot; &lt;tag&gt; &apos;y&apos;", 'a & b " x " < tag >'),
    ("well\u2013known \u2014 dash-separated co-operate T12-L1 C5/6", "well known dash separated cooperate"),
    ("wait... what?! \u2026 ok. 1,000.50 $5 50%", "wait what ok one thousand dollars"),
    ("\u03b1\u03b2\u03b3 \u043a\u0438\u0440\u0438\u043b\u043b\u0438\u0446\u0430 \u4e2d\u6587 caf\u00e9 na\u00efve",
     "greek cyrillic chinese cafe naive"),
    ("tab\there nbsp\u00a0here ideo\u3000space soft\u00adhyphen", "tab here nbsp here"),
    ("no acute disease in the lung", "there is no acute pulmonary process"),
    ("a big house near the river bank", "a large home close to the riverside"),
]


def _judge(convention: str = "none", **settings: str) -> LexicalJudge:
    return LexicalJudge(JudgeOptions(convention=convention, task_kind="report", settings=settings))


@pytest.fixture(scope="module")
def lexical_cache(request, tmp_path_factory) -> Path:
    """A cache folder that outlives the test session, so METEOR's paraphrase index is built only once."""
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("harness-lexical-cache")) if cache else tmp_path_factory.mktemp("harness-lexical-cache")


@pytest.fixture(scope="module")
def pairs(shared_data_dir) -> list[tuple[str, str]]:
    annotation = json.loads((shared_data_dir / "iu-xray" / "annotation.json").read_text())
    references = [x["report"] for x in annotation["test"][:140]]
    predictions = random.Random(7).sample([x["report"] for x in annotation["train"]], len(references))
    return list(zip(references, predictions)) + EDGE_CASES


@pytest.fixture(scope="module")
def shared_data_dir() -> Path:
    """tests/conftest.py's `shared_data`, at module scope (the Java runs are shared by the module)."""
    from conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data expected at {SHARED_DATA} (set HARNESS_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def coco(pairs):
    """pycocoevalcap run exactly as COCOEvalCap runs it; `score(ids)` scores any subset with the same Meteor."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": ref}] for i, (ref, _) in enumerate(pairs)})
    res = tokenizer.tokenize({i: [{"caption": pred}] for i, (_, pred) in enumerate(pairs)})
    meteor = Meteor()
    done: dict[tuple[int, ...], dict] = {}

    def score(ids: list[int]) -> dict[str, tuple[float, list[float]]]:
        if tuple(ids) in done:
            return done[tuple(ids)]
        g, r = {i: gts[i] for i in ids}, {i: res[i] for i in ids}
        bleu, bleu_list = Bleu(4).compute_score(g, r, verbose=0)
        out = {f"Bleu_{k + 1}": (bleu[k], bleu_list[k]) for k in range(4)}
        out["METEOR"] = meteor.compute_score(g, r)
        out["ROUGE_L"] = Rouge().compute_score(g, r)
        out["CIDEr"] = Cider().compute_score(g, r)
        done[tuple(ids)] = out
        return out

    score.meteor = meteor
    return score


@pytest.fixture(scope="module")
def scored(pairs, lexical_cache):
    records = [{"id": f"s{i}", "answer": ref, "prediction": pred, "part": "a" if i % 3 else "b"}
               for i, (ref, pred) in enumerate(pairs)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_CACHE_DIR", str(lexical_cache))
        judge = _judge()
        rows = judge.score(records)
        judge.close()
    return judge, records, rows


def test_corpus_metrics_equal_pycocoevalcap(scored, coco, pairs):
    judge, records, rows = scored
    ours = judge.aggregate(records, rows)
    theirs = coco(list(range(len(pairs))))
    for name in COCO_METRICS:
        assert ours[name] == pytest.approx(float(theirs[name][0]), rel=0, abs=1e-9), name
    # a perfect prediction scores 1 on the sentence metrics pycocoevalcap bounds by 1
    perfect = rows[len(pairs) - len(EDGE_CASES) + 2]["metrics"]
    assert perfect["METEOR"] == pytest.approx(1.0, abs=1e-3) and perfect["ROUGE_L"] == 1.0


def test_per_sample_values_equal_pycocoevalcap(scored, coco, pairs):
    _, _, rows = scored
    theirs = coco(list(range(len(pairs))))
    for name in COCO_METRICS:
        expected = np.asarray(theirs[name][1], dtype=float)
        got = np.array([row["metrics"][name] for row in rows])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, err_msg=name)
    empty_prediction = rows[len(pairs) - len(EDGE_CASES)]["metrics"]
    assert empty_prediction["METEOR"] == 0.0 and empty_prediction["CIDEr"] == 0.0


def test_slice_aggregate_equals_pycocoevalcap_on_the_slice_alone(scored, coco):
    judge, records, rows = scored
    ids = [i for i, r in enumerate(records) if r["part"] == "b"]
    ours = judge.aggregate([records[i] for i in ids], [rows[i] for i in ids])
    theirs = coco(ids)
    for name in COCO_METRICS:
        assert ours[name] == pytest.approx(float(theirs[name][0]), rel=0, abs=1e-9), name
    # the slice's CIDEr uses the slice's own IDF, so it is not the mean of the whole-set per-sample values
    assert ours["CIDEr"] != pytest.approx(np.mean([rows[i]["metrics"]["CIDEr"] for i in ids]), abs=1e-6)


def test_rouge_score_values_equal_rouge_score_package(scored, pairs):
    from rouge_score import rouge_scorer

    _, records, rows = scored
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    for (ref, pred), row in zip(pairs, rows):
        expected = scorer.score(ref, pred)
        for key in ("rouge1", "rouge2", "rougeL"):
            assert row["metrics"][f"{key}_f"] == expected[key].fmeasure
    judge = scored[0]
    overall = judge.aggregate(records, rows)
    assert overall["rougeL_f"] == pytest.approx(np.mean([scorer.score(r, p)["rougeL"].fmeasure for r, p in pairs]))


def test_breakdowns_and_bootstrap_intervals_through_the_core(scored):
    judge, records, rows = scored
    summary = summarize(judge, records, rows, ["part"])
    overall = summary["metrics"]
    assert set(COCO_METRICS) <= set(overall)
    for name in COCO_METRICS:
        low, high = overall[name]["ci95"]
        assert low <= overall[name]["value"] <= high and low < high
    assert set(summary["breakdowns"]["part"]) == {"a", "b"}
    assert summary["breakdowns"]["part"]["b"]["METEOR"]["n"] == sum(r["part"] == "b" for r in records)


def test_rows_read_back_from_a_file_aggregate_the_same(scored, tmp_path):
    judge, records, rows = scored
    saved = json.loads(json.dumps(rows))  # what scores.jsonl gives back
    fresh = _judge()
    assert fresh.aggregate(records, saved) == judge.aggregate(records, rows)
    half = saved[: len(saved) // 2]
    assert fresh.aggregate(records[: len(half)], half) == judge.aggregate(records[: len(half)], rows[: len(half)])


def test_candidate_tokens_cover_what_meteor_normalizer_produces(pairs, coco):
    """Every token the jar's own Normalizer (`-norm`, punctuation kept) makes is among the candidates."""
    import subprocess

    from harness.judges.coco_java import METEOR_JAR, coco_dir
    from harness.judges.meteor_paraphrase import candidate_tokens

    lines = [text for pair in pairs + ADVERSARIAL for text in pair]
    normalizer = ["java", "-cp", str(coco_dir() / METEOR_JAR), "edu.cmu.meteor.util.Normalizer", "en", "true"]
    done = subprocess.run(normalizer, input="\n".join(lines) + "\n", capture_output=True, text=True, encoding="utf-8",
                          check=True)
    produced = {token for line in done.stdout.split("\n") for token in line.lower().split()}
    assert len(produced) > 500
    assert produced - candidate_tokens(lines, 100) == set()


def test_cut_paraphrase_table_gives_the_full_tables_statistics(coco, lexical_cache, monkeypatch, tmp_path):
    """The same SCORE lines through pycocoevalcap's Meteor (full table) and ours (cut table)."""
    from harness.judges.coco_java import METEOR_JAR, PARAPHRASE_TABLE, coco_dir
    from harness.judges.coco_meteor import MeteorProcess, score_line
    from harness.judges.meteor_paraphrase import candidate_tokens, load_index

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(lexical_cache))
    lines = [score_line(hyp, ref) for ref, hyp in ADVERSARIAL]
    index = load_index(coco_dir() / PARAPHRASE_TABLE)
    kept = index.write_subset(candidate_tokens(lines, index.max_len), tmp_path / "cut.gz")
    assert 0 < kept < index.entries // 100
    process = MeteorProcess(shutil.which("java"), coco_dir() / METEOR_JAR, tmp_path / "cut.gz")
    try:
        process.send(lines)
        ours = process.receive(len(lines))
    finally:
        process.close()
    full = [[float(x) for x in coco.meteor._stat(hyp, [ref]).split()] for ref, hyp in ADVERSARIAL]
    assert ours == full
    assert sum(stats[16] + stats[17] for stats in full) > 0  # paraphrase matches did happen


def test_meteor_statistics_do_not_depend_on_the_number_of_processes(scored, lexical_cache):
    _, records, rows = scored
    subset = records[:30]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_CACHE_DIR", str(lexical_cache))
        split = _judge(meteor_workers="3")
        split_rows = split.score(subset)
    assert split.describe()["meteor_workers"] == 3
    assert [r["details"]["meteor_stats"] for r in split_rows] == [r["details"]["meteor_stats"] for r in rows[:30]]


def test_line_separators_in_a_prediction_do_not_shift_the_other_samples(lexical_cache, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(lexical_cache))
    records = [
        {"id": "a", "answer": "No effusion.", "prediction": "first line\u2028second\rthird\x85fourth"},
        {"id": "b", "answer": "Heart normal.", "prediction": "Heart normal."},
    ]
    rows = _judge().score(records)
    assert rows[0]["details"]["prediction_tokens"] == "first line second third fourth"
    assert rows[1]["details"]["prediction_tokens"] == "heart normal"
    assert rows[1]["metrics"]["ROUGE_L"] == 1.0


def test_a_lone_surrogate_in_a_prediction_is_scored_not_a_traceback(lexical_cache, monkeypatch):
    """Valid JSON ("\\ud800") but not UTF-8: writing it for the PTB tokenizer raised UnicodeEncodeError."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(lexical_cache))
    records = [{"id": "a", "answer": "Heart normal.", "prediction": "heart \ud800 normal"},
               {"id": "b", "answer": "Heart normal.", "prediction": "Heart normal."}]
    rows = _judge().score(records)
    assert rows[0]["details"]["prediction_tokens"] == "heart normal"  # written as "?", punctuation the PTB drops
    assert rows[1]["metrics"]["ROUGE_L"] == 1.0


def test_cleaning_conventions():
    report = "1. The heart is normal.. 2. No effusion; lungs clear. 3. Spine: mild (degenerative) changes!"
    assert clean(report, "r2gen") == "the heart is normal . no effusion lungs clear . spine mild degenerative changes ."
    # R2Gen's class ':-\[' is a range, so '<' and '=' go while '-' stays; '/' is deleted, not spaced
    assert clean("Lungs well-expanded, T12 <5 mm/s = ok", "r2gen") == "lungs well-expanded t12 5 mms  ok ."
    assert clean("", "r2gen") == " ."
    assert clean("Axial CT: 2 nodules (3.5 cm) in segment IV.", "imageclef") == (
        "axial ct number nodules numbernumber cm in segment iv"
    )
    assert clean("Keep AS-is 12.", "none") == "Keep AS-is 12."


def test_convention_is_applied_and_recorded(lexical_cache, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(lexical_cache))
    judge = _judge("imageclef")
    rows = judge.score([{"id": "x", "answer": "Axial CT: 2 nodules.", "prediction": "3 nodules on CT"}])
    assert rows[0]["details"]["reference_tokens"] == "axial ct number nodules"
    assert rows[0]["metrics"]["rouge1_f"] == pytest.approx(2 * (3 / 4) * (3 / 4) / (3 / 4 + 3 / 4))
    described = judge.describe()
    assert described["convention"] == "imageclef" and "number" in described["text_cleaning"]
    assert "paraphrase-en.gz cut to" in described["meteor_paraphrase_table"]
    with pytest.raises(UserError, match="no convention 'r2gen-v2'"):
        _judge("r2gen-v2")


def test_missing_java_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError) as err:
        _judge()
    message = str(err.value)
    assert "\n" not in message
    assert "`java` is not on PATH" in message and "apt-get install default-jre-headless" in message


def test_spice_without_corenlp_jars_names_files_and_folder():
    from harness.judges.coco_java import coco_dir
    from harness.judges.coco_spice import CORENLP_JARS

    lib = coco_dir() / "spice" / "lib"
    if all((lib / name).is_file() for name in CORENLP_JARS):
        pytest.skip("the CoreNLP jars are installed here")
    with pytest.raises(UserError) as err:
        _judge(spice="true")
    message = str(err.value)
    assert "\n" not in message and str(lib) in message
    for name in CORENLP_JARS:
        assert name in message or (lib / name).is_file()


@pytest.mark.parametrize("setting", [{"meteor_table": "small"}, {"meteor_workers": "0"}, {"meteor_workers": "500"},
                                     {"spice": "maybe"}])
def test_bad_settings_are_user_errors(setting):
    with pytest.raises(UserError, match="--judge-arg"):
        _judge(**setting)


def test_setup_records_the_resolved_number_moving_settings_only():
    default = _judge().describe()
    assert default["settings"] == {} and default["setup"] == {"rouge_stemmer": False, "spice": False}
    # the defaults given explicitly, the full METEOR table (same statistics) and the workers: the same setup
    same = _judge(rouge_stemmer="false", meteor_table="full", meteor_workers="2").describe()["setup"]
    assert same == default["setup"]
    assert _judge(rouge_stemmer="yes").describe()["setup"] == {"rouge_stemmer": True, "spice": False}
    assert LexicalJudge.resolve_setup({"rouge_stemmer": "true"}, "r2gen") == {"rouge_stemmer": True, "spice": False}


def test_split_tokenizer_reproduces_r2gen_compute_scores(pairs, coco, lexical_cache, monkeypatch):
    """`--convention r2gen --judge-arg tokenizer=split` is R2Gen's compute_scores: pycocoevalcap's scorers on the
    cleaned text with no PTB tokenizer (its " . " tokens count, so the numbers differ from the PTB ones)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(lexical_cache))
    subset = pairs[:40]
    def r2gen_text(text: str) -> str:  # R2Gen tokenizes the cleaned text on white space and decodes it joined by " "
        return " ".join(clean(text, "r2gen").split())

    gts = {i: [r2gen_text(ref)] for i, (ref, _) in enumerate(subset)}
    res = {i: [r2gen_text(pred)] for i, (_, pred) in enumerate(subset)}
    expected = dict(zip((f"Bleu_{k}" for k in range(1, 5)), Bleu(4).compute_score(gts, res, verbose=0)[0]))
    expected["METEOR"] = coco.meteor.compute_score(gts, res)[0]
    expected["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    expected["CIDEr"] = Cider().compute_score(gts, res)[0]
    records = [{"id": f"s{i}", "answer": ref, "prediction": pred} for i, (ref, pred) in enumerate(subset)]
    judge = _judge("r2gen", tokenizer="split")
    rows = judge.score(records)
    got = judge.aggregate(records, rows)
    ptb = _judge("r2gen")
    with_ptb = ptb.aggregate(records, ptb.score(records))
    for name in COCO_METRICS:
        assert got[name] == pytest.approx(float(expected[name]), rel=0, abs=1e-9), name
    assert got["Bleu_4"] > with_ptb["Bleu_4"] + 0.01
    described = judge.describe()
    assert described["setup"] == {"rouge_stemmer": False, "spice": False, "tokenizer": "split"}
    assert "R2Gen" in described["tokenizer"] and "PTBTokenizer" in ptb.describe()["tokenizer"]
    with pytest.raises(UserError, match="--judge-arg tokenizer=nltk: expected ptb or split"):
        _judge(tokenizer="nltk")

