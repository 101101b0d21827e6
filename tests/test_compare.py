"""`harness compare A B`: paired differences of two scored runs on the same samples, with the judge's own numbers,
a paired interval and a p-value (McNemar's exact test for 0/1 verdicts), and one-line refusals of runs or judges
that are not comparable."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import binomtest


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=300)


def run_prior(out: Path, *extra: str) -> Path:
    proc = harness("run", "--model", "prior", "--task", "phantom-vqa", "--judge", "exact", "--output", str(out),
                   "--no-progress", *extra)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("compare")
    return run_prior(root / "a"), run_prior(root / "b", "--model-args", "by=question_type")


def verdicts(run: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (run / "scores.jsonl").read_text().splitlines()]
    return {r["id"]: r["judges"]["exact/pefomed"]["metrics"]["accuracy"] for r in rows}


def compared(tmp_path: Path, a: Path, b: Path, *extra: str) -> dict:
    out = tmp_path / "comparison.json"
    proc = harness("compare", str(a), str(b), "-o", str(out), "--no-progress", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def test_accuracy_difference_uses_mcnemar_on_the_samples_only_one_run_gets_right(runs, tmp_path):
    a, b = runs
    report = compared(tmp_path, a, b, "--breakdown", "answer_type")
    overall = next(c for c in report["comparisons"] if c["metric"] == "accuracy" and c["breakdown"] is None)
    va, vb = verdicts(a), verdicts(b)
    a_only = sum(1 for i in va if va[i] == 1 and vb[i] == 0)
    b_only = sum(1 for i in va if va[i] == 0 and vb[i] == 1)
    assert a_only and b_only  # the two priors differ on some samples both ways
    assert overall["discordant"] == {"a_only": a_only, "b_only": b_only} and overall["n"] == len(va) == 361
    assert overall["p_method"] == "mcnemar-exact"
    assert overall["p_value"] == pytest.approx(binomtest(min(a_only, b_only), a_only + b_only, 0.5).pvalue)
    results = [json.loads((run / "results.json").read_text())["judges"][0] for run in (a, b)]
    assert overall["a"] == pytest.approx(results[0]["metrics"]["accuracy"]["value"])
    assert overall["difference"] == pytest.approx(
        results[1]["metrics"]["accuracy"]["value"] - results[0]["metrics"]["accuracy"]["value"])
    low, high = overall["ci95"]
    assert low < overall["difference"] < high and overall["ci_method"] == "paired-bootstrap-expanded"
    closed = next(c for c in report["comparisons"] if c["value"] == "CLOSED")
    assert closed["b"] == pytest.approx(results[1]["breakdowns"]["answer_type"]["CLOSED"]["accuracy"]["value"])
    # B against A: the same comparison mirrored
    mirrored = next(c for c in compared(tmp_path, b, a)["comparisons"] if c["metric"] == "accuracy")
    assert mirrored["difference"] == pytest.approx(-overall["difference"])
    assert mirrored["ci95"] == pytest.approx([-high, -low]) and mirrored["p_value"] == overall["p_value"]


def test_a_run_against_itself_differs_by_nothing(runs, tmp_path):
    proc = harness("compare", str(runs[0]), str(runs[0]), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.strip().startswith("accuracy "))
    assert "+0.0000  [+0.0000, +0.0000]" in line and " 1.0000 " in line and "only A right 0, only B right 0" in line
    assert ("  A and B have the same configuration (the same run id): any difference is the model's nondeterminism"
            in proc.stdout.splitlines())


def test_two_runs_under_one_label_say_what_differs(runs, tmp_path):
    """Two runs of one model and prompt were two identical 'A: prior' and 'B: prior' lines (only the paths told
    them apart): the header says which settings differ, and the JSON lists them."""
    import shutil

    longer = tmp_path / "longer"  # as a model that decodes would have it, run with --max-new-tokens 12
    shutil.copytree(runs[0], longer)
    results = json.loads((longer / "results.json").read_text())
    results["generation"]["max_new_tokens"] = 12
    results["run_id"] = results["run_id"][:-4] + "beef"
    (longer / "results.json").write_text(json.dumps(results))
    report = compared(tmp_path, runs[0], longer)
    assert report["differs"] == [{"setting": "generation.max_new_tokens", "a": 16, "b": 12}]
    proc = harness("compare", str(runs[0]), str(longer), "--no-progress")
    assert "  A and B differ in generation.max_new_tokens 16 in A, 12 in B" in proc.stdout.splitlines()
    same = run_prior(tmp_path / "same", "--model-args", "by=answer_type")  # the default, typed out: the same run
    report = compared(tmp_path, runs[0], same)
    assert report["differs"] == [{"setting": "model.args.by", "a": None, "b": "answer_type"}]
    proc = harness("compare", str(runs[0]), str(same), "--no-progress")
    assert "same configuration (the same run id)" in proc.stdout
    proc = harness("compare", str(runs[0]), str(runs[1]), "--no-progress")  # labels differ: they say it already
    assert "differ in" not in proc.stdout and "prior[by=question_type]" in proc.stdout


def test_a_partial_run_is_compared_on_the_samples_both_have(runs, tmp_path):
    partial = run_prior(tmp_path / "partial", "--limit", "50", "--model-args", "by=none")
    report = compared(tmp_path, runs[0], partial)
    assert report["judges"]["exact/pefomed"] == {"paired": 50, "only_a": 311, "only_b": 0}
    overall = next(c for c in report["comparisons"] if c["metric"] == "accuracy")
    ids = set(verdicts(partial))
    va = verdicts(runs[0])
    assert overall["a"] == pytest.approx(sum(va[i] for i in ids) / 50)  # A on B's 50 samples, not on all 361


def test_report_metrics_are_the_lexical_judges_corpus_numbers(tmp_path):
    rng = random.Random(3)
    references = [f"the {organ} shows {n} small lesions on the {side} side with no effusion"
                  for organ in ("chest", "head", "knee", "abdomen") for n in ("two", "three", "four")
                  for side in ("left", "right")]
    folders = []
    for name, keep in (("worse", 0.5), ("better", 0.9)):
        preds = tmp_path / f"{name}.jsonl"
        lines = [{"id": f"s{i}", "answer": ref, "prediction": " ".join(w for w in ref.split() if rng.random() < keep)}
                 for i, ref in enumerate(references)]
        preds.write_text("".join(json.dumps(line) + "\n" for line in lines))
        folder = tmp_path / f"scored-{name}"
        proc = harness("score", str(preds), "--task-type", "report", "--task-name", "reports", "--judge", "lexical",
                       "--output", str(folder), "--no-progress")
        assert proc.returncode == 0, proc.stderr
        folders.append(folder)
    report = compared(tmp_path, *folders)
    entries = [json.loads((f / "results.json").read_text())["judges"][0]["metrics"] for f in folders]
    unscored = edited_copy(folders[0], tmp_path / "unscored", lambda i, row: {**row, "judges": {
        key: {**judged, "metrics": dict.fromkeys(judged["metrics"])} if i < 3 else judged
        for key, judged in row["judges"].items()}})
    # samples a judge left unscored in one run (an LLM reply that could not be read) are compared in neither
    partly = compared(tmp_path, unscored, folders[1])
    assert partly["judges"]["lexical/none"] == {"paired": 21, "only_a": 0, "only_b": 3}
    assert {c["n"] for c in partly["comparisons"]} == {21}
    by_metric = {c["metric"]: c for c in report["comparisons"]}
    assert {"Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} <= set(by_metric)
    for name, c in by_metric.items():
        assert (c["a"], c["b"]) == (pytest.approx(entries[0][name]["value"]), pytest.approx(entries[1][name]["value"]))
        assert c["ci95"][0] > 0 and c["p_value"] < 0.01, name  # clearly better everywhere
        assert (c["ci_method"], c["p_method"], c["n"]) == ("paired-bootstrap-expanded", "paired-randomization", 24)
    text = harness("compare", *map(str, folders), "--resamples", "200", "--no-progress").stdout
    line = next(line for line in text.splitlines() if line.strip().startswith("CIDEr "))
    assert " <0.0050 " in line  # no draw came as far from 0: p = 1/201, below what 200 draws can tell


def test_runs_that_are_not_comparable_are_refused_in_one_line(runs, tmp_path):
    report_run = tmp_path / "report"
    assert harness("run", "--model", "prior", "--task", "phantom-report", "--judge", "lexical", "--limit", "5",
                   "--output", str(report_run), "--no-progress").returncode == 0
    llava = tmp_path / "llava"
    assert harness("score", str(runs[1]), "--judge", "exact:llava-med", "--output", str(llava),
                   "--no-progress").returncode == 0
    cases = [
        ((str(runs[0]), str(report_run)), "not runs on the same samples: task id 'phantom-vqa' vs 'phantom-report'"),
        ((str(runs[0]), str(llava)), "have no judge in common (A: exact:pefomed; B: exact:llava-med)"),
        ((str(runs[0]), str(runs[1]), "--judge", "gpt4"), "--judge gpt4: not a judge both runs were scored with"),
        ((str(runs[0]), str(runs[1]), "--metric", "bleu"), "--metric bleu: no such metric"),
        ((str(runs[0]), str(runs[1]), "--breakdown", "organs"), "--breakdown organs: no sample compared has that "
                                                                "field or judge group (did you mean 'organ'?)"),
        ((str(runs[0]), str(runs[1]), "--breakdown", ""), "--breakdown '': expected a field name"),
        ((str(runs[0]), str(tmp_path)), "not a scored run folder (missing results.json, scores.jsonl)"),
        ((str(runs[0]), str(runs[1]), "--resamples", "5"), "--resamples 5: expected 100 to 100000"),
    ]
    for args, expected in cases:
        proc = harness("compare", *args, "--no-progress")
        assert proc.returncode != 0 and expected in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_a_judge_set_up_differently_is_not_compared(tmp_path):
    lines = [{"id": f"s{i}", "answer": "no acute cardiopulmonary process", "prediction": "no acute process"}
             for i in range(5)]
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps(line) + "\n" for line in lines))
    folders = []
    for stem in ("false", "true"):
        folder = tmp_path / stem
        assert harness("score", str(preds), "--task-type", "report", "--judge", "lexical", "--judge-arg",
                       f"rouge_stemmer={stem}", "--output", str(folder), "--no-progress").returncode == 0
        folders.append(str(folder))
    proc = harness("compare", *folders, "--judge", "lexical", "--no-progress")
    assert proc.returncode != 0 and "judge lexical:none is set up differently in the two runs (setup" in proc.stderr
    proc = harness("compare", *folders, "--no-progress")  # every judge left out: nothing to compare
    assert proc.returncode != 0 and proc.stderr.startswith("error: nothing to compare: judge lexical:none is set up")


def test_dependent_samples_are_resampled_in_whole_clusters(runs, tmp_path, capsys):
    """phantom-vqa asks several questions about each case: a copy whose source sets cluster_by case_id gets the
    cluster methods, whose interval draws whole cases (with the same difference)."""
    import types

    import yaml

    from harness import plugin_manager
    from harness.cli import main
    from harness.hookspecs import hookimpl

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "tasks" / "phantom-vqa.yaml").read_text())
    config.update(id="phantom-vqa-cases", aliases=[])
    config["sources"][0]["cluster_by"] = "case_id"
    task_file = tmp_path / "phantom-vqa-cases.yaml"
    task_file.write_text(yaml.safe_dump(config))
    plugin = types.ModuleType("tests_compare_clusters")
    plugin.register_tasks = hookimpl(lambda register: register(task_file))  # type: ignore[attr-defined]
    pm = plugin_manager.get_plugin_manager()
    pm.register(plugin, name="tests.compare_clusters")
    registries = (plugin_manager.models, plugin_manager.tasks, plugin_manager.judges)
    try:
        for registry in registries:
            registry.cache_clear()
        for out, extra in (("ca", []), ("cb", ["--model-args", "by=question_type"])):
            assert main(["run", "--model", "prior", "--task", "phantom-vqa-cases", "--judge", "exact", "--output",
                         str(tmp_path / out), "--no-progress", *extra]) == 0
    finally:
        pm.unregister(name="tests.compare_clusters")
        for registry in registries:
            registry.cache_clear()
    capsys.readouterr()
    plain = next(c for c in compared(tmp_path, *runs)["comparisons"] if c["metric"] == "accuracy")
    clustered = next(c for c in compared(tmp_path, tmp_path / "ca", tmp_path / "cb")["comparisons"]
                     if c["metric"] == "accuracy")
    assert clustered["difference"] == pytest.approx(plain["difference"])
    cases = {json.loads(line)["case_id"] for line in (tmp_path / "ca" / "predictions.jsonl").read_text().splitlines()}
    counts = compared(tmp_path, tmp_path / "ca", tmp_path / "cb")["judges"]["exact/pefomed"]
    assert counts == {"paired": 361, "only_a": 0, "only_b": 0, "clusters": len(cases)}
    text = harness("compare", str(tmp_path / "ca"), str(tmp_path / "cb"), "--no-progress").stdout
    assert f"judge exact:pefomed: 361 samples scored in both runs, in {len(cases)} clusters (case_id)" in text
    assert (clustered["ci_method"], clustered["p_method"]) == ("paired-cluster-bootstrap-expanded",
                                                               "paired-cluster-randomization")
    assert clustered["ci95"] != pytest.approx(plain["ci95"])
    # the interval of a bootstrap that draws whole cases, computed here from the per-sample verdicts
    import numpy as np

    va, vb = verdicts(tmp_path / "ca"), verdicts(tmp_path / "cb")
    ids = sorted(va)
    cases = [json.loads(line)["case_id"] for line in (tmp_path / "ca" / "predictions.jsonl").read_text().splitlines()]
    case_of = dict(zip([json.loads(line)["id"] for line in (tmp_path / "ca" / "predictions.jsonl").read_text()
                        .splitlines()], cases))
    groups: dict[str, list[float]] = {}
    for i in ids:
        groups.setdefault(case_of[i], []).append(vb[i] - va[i])
    sums, sizes = np.array([sum(g) for g in groups.values()]), np.array([len(g) for g in groups.values()])
    rng = np.random.default_rng(0)
    draws = [sums[pick].sum() / sizes[pick].sum() for pick in (rng.integers(0, len(sums), len(sums))
                                                               for _ in range(1000))]
    from scipy.stats import norm, t

    k = len(sums)  # the expanded percentile interval's ends for k clusters (Hesterberg)
    tail = norm.sf(math.sqrt(k / (k - 1)) * t.ppf(0.975, k - 1))
    assert clustered["ci95"] == pytest.approx(list(np.quantile(draws, [tail, 1 - tail])))


def test_the_llm_judges_saved_aggregate_is_their_aggregate():
    """The vectorised aggregate `harness compare` resamples gives aggregate_repeats' numbers on any positions
    (repeats, unscored replies, a sample never scored)."""
    from harness.judges.gpt4 import GPT4Judge
    from harness.judges.llm_judge_common import aggregate_repeats

    rng = random.Random(0)
    rows = [{"metrics": {}, "details": {"verdicts": [rng.choice([0, 1, 1, None]) for _ in range(3)]}}
            for _ in range(40)]
    rows[5]["details"]["verdicts"] = [None, None, None]
    aggregate = GPT4Judge.saved_aggregator(rows, "default", {})
    for _ in range(20):
        positions = [rng.randrange(len(rows)) for _ in range(len(rows))]
        expected = aggregate_repeats([rows[p] for p in positions], "binary", "accuracy")
        got = aggregate(positions)
        assert got["accuracy"] == pytest.approx(expected["accuracy"])
        assert got["accuracy_std"] == pytest.approx(expected["accuracy_std"])


def edited_copy(run: Path, to: Path, edit) -> Path:
    """A copy of a run folder whose scores.jsonl rows went through `edit(row)`."""
    import shutil

    shutil.copytree(run, to)
    rows = [json.loads(line) for line in (to / "scores.jsonl").read_text().splitlines()]
    (to / "scores.jsonl").write_text("".join(json.dumps(edit(i, row)) + "\n" for i, row in enumerate(rows)))
    return to


def test_rows_of_another_setup_or_edited_by_hand_are_refused_not_blended(runs, tmp_path):
    def other_setup(i: int, row: dict) -> dict:
        if i < 10:  # some samples re-judged with another setup (as a later run on a subset leaves them)
            row["judges"]["exact/pefomed"]["setup"] = {"judge_model": "another"}
        return row

    def list_metrics(i: int, row: dict) -> dict:
        if i == 3:
            row["judges"]["exact/pefomed"]["metrics"] = [1]
        return row

    def nan_metric(i: int, row: dict) -> dict:
        if i == 3:
            row["judges"]["exact/pefomed"]["metrics"]["accuracy"] = float("nan")
        return row

    cases = [(other_setup, "holds 10 exact:pefomed verdicts made with another setup than its results.json records"),
             (list_metrics, "judge exact:pefomed: its 'metrics' is no object"),
             (nan_metric, "judge exact:pefomed: metric 'accuracy' is NaN (expected a number or null")]
    for n, (edit, expected) in enumerate(cases):
        copy = edited_copy(runs[1], tmp_path / f"b{n}", edit)
        proc = harness("compare", str(runs[0]), str(copy), "--judge", "exact", "--no-progress")
        assert proc.returncode != 0 and expected in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_slices_without_the_metric_are_left_out_and_file_scored_runs_have_breakdowns(tmp_path):
    """llava-med's closed_accuracy exists on CLOSED samples only: no OPEN row with a p-value on nothing; predictions
    scored from a file keep their fields (the folder holds the predictions as read)."""
    rows = [{"id": f"q{i}", "question": "q", "answer": "yes" if i % 2 else "left lung",
             "answer_type": "CLOSED" if i % 2 else "OPEN", "organ": "chest" if i % 3 else "head"} for i in range(40)]
    folders = []
    for name, right in (("a", 0.4), ("b", 0.8)):
        preds = tmp_path / f"{name}.jsonl"
        preds.write_text("".join(json.dumps({**r, "prediction": r["answer"] if (i * 7 % 10) / 10 < right else "no"})
                                 + "\n" for i, r in enumerate(rows)))
        folder = tmp_path / f"scored-{name}"
        assert harness("score", str(preds), "--task-type", "vqa", "--task-name", "mine", "--judge",
                       "exact:llava-med", "--output", str(folder), "--no-progress").returncode == 0
        folders.append(folder)
    report = compared(tmp_path, *folders, "--breakdown", "answer_type")
    shown = {(c["metric"], c["value"]) for c in report["comparisons"]}
    assert ("closed_accuracy", "CLOSED") in shown and ("closed_accuracy", "OPEN") not in shown
    assert all(c["n"] > 0 and c["p_value"] is not None for c in report["comparisons"])
    # closed_accuracy overall is over the closed questions: the same comparison as on its CLOSED slice
    overall, closed = (next(c for c in report["comparisons"] if c["metric"] == "closed_accuracy" and c["value"] == v)
                       for v in (None, "CLOSED"))
    assert {k: overall[k] for k in ("a", "b", "ci95", "p_value", "n")} == {k: closed[k] for k in
                                                                           ("a", "b", "ci95", "p_value", "n")}
    organs = compared(tmp_path, *folders, "--breakdown", "organ")["comparisons"]
    assert {c["value"] for c in organs if c["breakdown"] == "organ"} == {"chest", "head"}


def test_an_interval_and_a_p_value_that_disagree_are_said(tmp_path):
    """B right on 5 more of 40 questions and nowhere worse: McNemar's p is 2/32 = 0.0625, while the bootstrap
    interval (which rarely draws none of the 5) excludes 0."""
    folders = []
    for name, extra in (("a", 0), ("b", 5)):
        preds = tmp_path / f"{name}.jsonl"
        preds.write_text("".join(json.dumps({"id": f"q{i}", "question": "q", "answer": "yes", "answer_type": "CLOSED",
                                             "prediction": "yes" if i < 20 + extra else "no"}) + "\n"
                                 for i in range(40)))
        folder = tmp_path / f"scored-{name}"
        assert harness("score", str(preds), "--task-type", "vqa", "--task-name", "mine", "--judge", "exact",
                       "--output", str(folder), "--no-progress").returncode == 0
        folders.append(str(folder))
    proc = harness("compare", *folders, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.strip().startswith("accuracy "))
    assert "+0.1250" in line and " 0.0625 " in line and "only A right 0, only B right 5" in line
    assert ("note: exact:pefomed accuracy: the 95% interval excludes 0 but p = 0.0625: only 5 samples differ, and a "
            "percentile bootstrap interval is too narrow with few differing samples; the test's p-value (valid under "
            "no difference) is the one to go by") in proc.stderr
