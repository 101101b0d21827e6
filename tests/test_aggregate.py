"""Metrics per breakdown value with n and 95% confidence intervals, through one generic mechanism."""

from __future__ import annotations

import pytest

from harness.aggregate import bootstrap_mean_interval, summarize, wilson_interval
from harness.judge_api import JudgeOptions, JudgePlugin


class CorrectJudge(JudgePlugin):
    id = "test-correct"
    task_kinds = ("vqa",)
    proportion_metrics = ("accuracy",)

    def score(self, records):
        return [{"metrics": {"accuracy": float(r["prediction"] == r["answer"])}} for r in records]


class CorpusJudge(JudgePlugin):
    """Ratio of sums, like corpus BLEU: not a mean of per-sample values."""

    id = "test-corpus"
    mean_metrics = False

    def score(self, records):
        return [{"metrics": {"ratio": float(len(r["prediction"]))}, "details": {"len": len(r["answer"])}}
                for r in records]

    def aggregate(self, records, rows):
        total = sum(row["details"]["len"] for row in rows)
        return {"ratio": sum(row["metrics"]["ratio"] for row in rows) / total if total else None}


def test_wilson_matches_the_textbook_formula():
    lo, hi = wilson_interval(8, 10)
    # Wilson score interval for 8/10 at 95%: (0.4902, 0.9433)
    assert lo == pytest.approx(0.49016, abs=1e-4) and hi == pytest.approx(0.94332, abs=1e-4)
    assert wilson_interval(0, 0) is None
    assert wilson_interval(0, 5)[0] == 0.0


def test_wilson_ends_are_exact():
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(50, 50)[1] == 1.0


def test_mean_interval_stays_inside_the_range_of_the_values():
    values = [1.0] * 9 + [0.5]  # a normal approximation gives [0.852, 1.048]: above the largest possible value
    lo, hi = bootstrap_mean_interval(values)
    assert 0.5 <= lo < 0.95 < hi <= 1.0
    assert bootstrap_mean_interval(values) == [lo, hi]  # seeded: the same interval every time
    assert bootstrap_mean_interval([0.3]) is None


def test_duplicated_samples_resampled_as_clusters_give_the_unduplicated_interval():
    values = [0.1 * (i % 7) for i in range(30)]
    alone = bootstrap_mean_interval(values)
    twice = [v for v in values for _ in range(2)]  # each study scored once per view, identical verdicts
    studies = [i for i in range(30) for _ in range(2)]
    assert bootstrap_mean_interval(twice, studies) == pytest.approx(alone)
    naive_lo, naive_hi = bootstrap_mean_interval(twice)
    assert naive_hi - naive_lo < 0.8 * (alone[1] - alone[0])  # treating views as independent: too narrow


def test_each_interval_names_its_method():
    class Recall(CorrectJudge):
        def score(self, records):
            return [{"metrics": {"accuracy": float(r["prediction"] == r["answer"]), "recall": 0.5 + 0.1 * (i % 3)}}
                    for i, r in enumerate(records)]

    records = [{"id": str(i), "answer": "a", "prediction": "ab"[i % 2], "study": i // 2} for i in range(20)]
    judge = Recall(JudgeOptions(task_kind="vqa"))
    plain = summarize(judge, records, judge.score(records), [])["metrics"]
    assert plain["accuracy"]["ci_method"] == "wilson" and plain["recall"]["ci_method"] == "bootstrap-mean-expanded"
    grouped = summarize(judge, records, judge.score(records), [], cluster_key="study")["metrics"]
    assert grouped["accuracy"]["ci_method"] == "cluster-wilson-t" and grouped["recall"]["ci_method"] == \
        "cluster-bootstrap-t-mean"  # 10 studies: fewer than 30 groups
    corpus = CorpusJudge(JudgeOptions(task_kind="report"))
    varied = [{**r, "prediction": "abc"[: 1 + i % 3]} for i, r in enumerate(records)]
    grouped_corpus = summarize(corpus, varied, corpus.score(varied), [], cluster_key="study")["metrics"]
    assert grouped_corpus["ratio"]["ci_method"] == "cluster-bootstrap-corpus-expanded"


def test_a_bootstrap_whose_resamples_all_agree_gives_no_interval_not_a_point():
    """Rows all alike (a BLEU of 0 on each of a slice's 3 reports, a rating of 4 from every verdict): every
    resample gives the same value, and the interval was [v, v], claiming no uncertainty from 3 samples. A metric the
    judge declares in [0, 1] (`unit_metrics`) keeps Wilson's interval at its bound."""
    class Rated(CorrectJudge):
        unit_metrics = ("recall",)

        def score(self, records):
            return [{"metrics": {"rating": 4.0, "recall": 0.0}} for _ in records]

    records = [{"id": str(i), "answer": "abc", "prediction": "a"} for i in range(3)]
    corpus = CorpusJudge(JudgeOptions(task_kind="report"))
    ratio = summarize(corpus, records, corpus.score(records), [])["metrics"]["ratio"]
    assert ratio["value"] == 1 / 3 and ratio["ci95"] is None and ratio["ci_method"] is None
    judge = Rated(JudgeOptions(task_kind="vqa"))
    metrics = summarize(judge, records, judge.score(records), [])["metrics"]
    assert metrics["rating"]["value"] == 4.0 and metrics["rating"]["ci95"] is None
    assert metrics["recall"]["ci_method"] == "wilson" and metrics["recall"]["ci95"][1] > 0.4


def test_breakdowns_use_the_same_aggregation_per_slice():
    records = [
        {"id": "1", "answer": "yes", "prediction": "yes", "answer_type": "CLOSED", "organ": "CHEST"},
        {"id": "2", "answer": "no", "prediction": "yes", "answer_type": "CLOSED", "organ": "HEAD"},
        {"id": "3", "answer": "lung", "prediction": "lung", "answer_type": "OPEN", "organ": "CHEST"},
        {"id": "4", "answer": "ct", "prediction": "mri", "answer_type": "OPEN", "organ": ""},
    ]
    judge = CorrectJudge(JudgeOptions(task_kind="vqa"))
    out = summarize(judge, records, judge.score(records), ["answer_type", "organ"])
    assert out["metrics"]["accuracy"]["value"] == 0.5 and out["metrics"]["accuracy"]["n"] == 4
    assert out["breakdowns"]["answer_type"]["CLOSED"]["accuracy"]["value"] == 0.5
    assert out["breakdowns"]["answer_type"]["OPEN"]["accuracy"]["n"] == 2
    assert set(out["breakdowns"]["organ"]) == {"CHEST", "HEAD"}, "empty values form no slice"
    assert out["breakdowns"]["organ"]["CHEST"]["accuracy"]["value"] == 1.0


def test_unscored_rows_are_counted_not_zero():
    class Partial(CorrectJudge):
        def score(self, records):
            return [{"metrics": {"accuracy": None if r["id"] == "2" else 1.0}} for r in records]

    records = [{"id": str(i), "answer": "a", "prediction": "a"} for i in range(1, 4)]
    judge = Partial(JudgeOptions(task_kind="vqa"))
    metric = summarize(judge, records, judge.score(records), [])["metrics"]["accuracy"]
    assert metric["value"] == 1.0 and metric["n"] == 2 and metric["unscored"] == 1


def test_corpus_metrics_get_a_bootstrap_interval():
    records = [{"id": str(i), "answer": "x" * (i % 5 + 1), "prediction": "y" * (i % 3)} for i in range(40)]
    judge = CorpusJudge(JudgeOptions(task_kind="report"))
    metric = summarize(judge, records, judge.score(records), [])["metrics"]["ratio"]
    lo, hi = metric["ci95"]
    assert lo < metric["value"] < hi


def test_a_mean_that_merely_happens_to_be_0_or_1_is_not_given_wilson():
    """A one-word answer length is 1 for every sample here, but it is no proportion: Wilson would cap it at 1."""

    class Length(JudgePlugin):
        id = "test-length"

        def score(self, records):
            return [{"metrics": {"words": float(len(r["prediction"].split()))}} for r in records]

    records = [{"id": str(i), "answer": "a", "prediction": "yes"} for i in range(8)]
    judge = Length(JudgeOptions(task_kind="vqa"))
    words = summarize(judge, records, judge.score(records), [])["metrics"]["words"]
    assert words["value"] == 1.0 and words["ci_method"] is None and words["ci95"] is None  # no spread: no interval
    records[0]["prediction"] = "yes it is"
    words = summarize(judge, records, judge.score(records), [])["metrics"]["words"]
    assert words["ci_method"] == "bootstrap-mean-expanded" and words["ci95"][1] > 1.0


class ThreeCorpusMetrics(JudgePlugin):
    """Three corpus metrics from one aggregate call, like the lexical judge's BLEU-1..4, METEOR, ROUGE-L, CIDEr;
    counts its aggregate calls."""

    id = "test-three"
    mean_metrics = False
    calls = 0

    def score(self, records):
        return [{"metrics": {"a": 1.0, "b": 1.0, "c": 1.0}, "details": {"len": len(r["prediction"])}}
                for r in records]

    def aggregate(self, records, rows):
        type(self).calls += 1
        total = sum(row["details"]["len"] for row in rows)
        return {"a": total / len(rows), "b": total / (len(rows) + 1), "c": float(total)}


def test_a_corpus_judges_resamples_are_aggregated_once_for_all_its_metrics():
    import harness.aggregate as aggregate

    records = [{"id": str(i), "answer": "x", "prediction": "y" * (i % 7)} for i in range(40)]
    judge = ThreeCorpusMetrics(JudgeOptions())
    summary = summarize(judge, records, judge.score(records), [])
    assert all(summary["metrics"][name]["ci_method"] == "bootstrap-corpus-expanded" for name in "abc")
    low, high = summary["metrics"]["c"]["ci95"]
    assert low < summary["metrics"]["c"]["value"] < high
    assert ThreeCorpusMetrics.calls == 1 + aggregate.BOOTSTRAP_SAMPLES  # not once per resample and metric


def test_intervals_do_not_depend_on_the_order_of_the_samples():
    """The seeded bootstrap resampled rows in file order: the same predictions, shuffled, got another interval."""
    import random

    from harness.aggregate import summarize_slice
    from harness.judge_api import JudgeOptions
    from harness.judges.exact import ExactMatchJudge

    rng = random.Random(3)
    records = [{"id": f"s{i}", "answer": "left lung", "prediction": rng.choice(["left", "lung", "left lung", "x"]),
                "answer_type": "OPEN"} for i in range(60)]
    judge = ExactMatchJudge(JudgeOptions(convention="llava-med", task_kind="vqa"))
    shuffled = records[:]
    rng.shuffle(shuffled)
    first = summarize_slice(judge, records, judge.score(records))["open_recall"]
    second = summarize_slice(judge, shuffled, judge.score(shuffled))["open_recall"]
    assert first["ci_method"] == "bootstrap-mean-expanded" and first == second


def test_a_clustered_proportion_takes_wilson_with_the_effective_sample_size():
    """Questions on one image: a share of 0/1 verdicts gets Wilson's interval on n / design effect. All wrong (0 of
    58 on 20 images), a percentile cluster bootstrap gave [0, 0]."""
    from harness.aggregate import cluster_wilson_interval, t975, wilson_interval

    images = [i // 3 for i in range(60)]
    alike = [float(i // 3 % 2) for i in range(60)]  # every image's three answers all right or all wrong
    # design effect 3 x 20/19 (clusters of 3 perfectly alike; the 20 clusters' small-sample factor): Wilson on 19
    # samples, not 60, with Student's t on 19 degrees of freedom
    assert cluster_wilson_interval(alike, images) == pytest.approx(wilson_interval(9.5, 19, t975(19)))
    mixed = [float(i % 3 == 0) for i in range(60)]  # one right of each image's three: less spread than chance
    assert cluster_wilson_interval(mixed, images) == pytest.approx(wilson_interval(20, 60, t975(19)))  # n at most
    # none right (or one image): no spread to estimate the design effect from: plain Wilson, from which one right
    # answer more widens the interval, never narrows it (taking the images' answers as alike there did)
    assert cluster_wilson_interval([0.0] * 58, images[:58]) == wilson_interval(0, 58)
    one_right = cluster_wilson_interval([1.0] + [0.0] * 57, images[:58])
    assert one_right[1] > wilson_interval(0, 58)[1]
    assert cluster_wilson_interval([1.0, 0.0, 1.0], ["one image"] * 3) == pytest.approx(wilson_interval(2, 3))


def test_few_clusters_widen_the_interval_by_students_t():
    """With 5-10 images, Wilson on the effective sample size with z = 1.96 covered 86-92% (simulation in
    cluster_wilson_interval's docstring); z is now Student's t on images - 1 degrees of freedom."""
    from scipy.stats import t

    from harness.aggregate import Z95, cluster_wilson_interval, t975, wilson_interval

    assert all(t975(df) == pytest.approx(t.ppf(0.975, df), abs=1e-6) for df in range(1, 400))
    values = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    few = [i // 3 for i in range(12)]  # 4 images of 3 questions
    low, high = cluster_wilson_interval(values, few)
    z_low, z_high = wilson_interval(7, 12, Z95)  # this design effect is 1 (at least 1): only z differs
    assert low < z_low and high > z_high and (high - low) > 1.3 * (z_high - z_low)
    assert cluster_wilson_interval([0.0] * 12, few) == wilson_interval(0, 12)  # no spread: plain Wilson


def test_a_recall_that_is_0_in_every_sample_gets_an_interval_not_0_to_0():
    """A token recall of 0 on 58 questions had the 95% interval [0, 0] (a bootstrap of no spread), claiming
    certainty where accuracy's 0 of 58 gets Wilson's [0, 0.062]: a metric in [0, 1] alike at a bound gets Wilson's."""
    from harness.judges.exact import ExactMatchJudge

    judge = ExactMatchJudge(JudgeOptions(convention="multimedeval", task_kind="vqa"))
    records = [{"id": f"q{i:02d}", "answer": "left lung", "prediction": "nothing", "answer_type": "OPEN"}
               for i in range(58)]
    metrics = summarize(judge, records, judge.score(records), [])["metrics"]
    for name in ("recall", "f1", "open_recall"):
        assert metrics[name]["value"] == 0.0 and metrics[name]["ci_method"] == "wilson", name
        assert metrics[name]["ci95"] == pytest.approx(wilson_interval(0, 58)), name
    records[0]["prediction"] = "left"  # some spread: a bootstrap of the mean again
    metrics = summarize(judge, records, judge.score(records), [])["metrics"]
    assert metrics["recall"]["ci_method"] == "bootstrap-mean-expanded" and metrics["recall"]["ci95"][1] > 0
