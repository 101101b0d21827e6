"""`harness agreement`: Cohen's kappa against scikit-learn, label-file errors, and the CLI report."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from harness.agreement import agreement_report, cohen_kappa, read_labels
from harness.cli import main
from harness.errors import UserError


# ----------------------------------------------------------------------------------------------- kappa
@pytest.mark.parametrize("seed", range(25))
def test_binary_kappa_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    a = rng.integers(0, 2, n)
    # correlated second rater: copies a with some flips
    b = np.where(rng.random(n) < rng.uniform(0.05, 0.6), 1 - a, a)
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    assert cohen_kappa(a, b, categories=[0, 1]) == pytest.approx(
        cohen_kappa_score(a, b, labels=[0, 1]), abs=1e-12)


@pytest.mark.parametrize("seed", range(25))
def test_linear_weighted_likert_kappa_equals_sklearn(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(5, 300))
    a = rng.integers(0, 5, n)
    b = np.clip(a + rng.integers(-2, 3, n) * (rng.random(n) < 0.5), 0, 4)
    for weights in ("linear", "quadratic"):
        assert cohen_kappa(a, b, weights=weights) == pytest.approx(
            cohen_kappa_score(a, b, weights=weights), abs=1e-12)
        assert cohen_kappa(a, b, categories=[0, 1, 2, 3, 4], weights=weights) == pytest.approx(
            cohen_kappa_score(a, b, labels=[0, 1, 2, 3, 4], weights=weights), abs=1e-12)


def test_kappa_with_unused_level_follows_the_fixed_scale():
    # level 2 never used: on the fixed 0..4 scale 1 vs 3 is two steps apart, as in sklearn with labels=
    a, b = [0, 1, 3, 4, 1, 3], [0, 3, 1, 4, 1, 4]
    ours = cohen_kappa(a, b, categories=range(5), weights="linear")
    assert ours == pytest.approx(cohen_kappa_score(a, b, labels=list(range(5)), weights="linear"))
    assert ours != pytest.approx(cohen_kappa(a, b, weights="linear"))


def test_kappa_known_value_and_undefined_case():
    # po = 0.75, pe = 0.25*0.5 + 0.75*0.5 = 0.5 -> kappa = 0.5
    assert cohen_kappa([1, 0, 0, 0], [1, 1, 0, 0]) == pytest.approx(0.5)
    assert math.isnan(cohen_kappa([1, 1, 1], [1, 1, 1]))  # one category only: undefined, as in sklearn


# ---------------------------------------------------------------------------------------------- labels
def test_malformed_label_rows_name_file_and_line(tmp_path):
    bad_value = tmp_path / "labels.csv"
    bad_value.write_text("id,rater,label\ns1,alice,1\ns2,alice,yes\n")
    with pytest.raises(UserError, match=r"labels\.csv:3: label 'yes' is not an integer"):
        read_labels(bad_value)

    missing_col = tmp_path / "nocol.csv"
    missing_col.write_text("id,label\ns1,1\n")
    with pytest.raises(UserError, match=r"nocol\.csv:1: missing column\(s\) rater"):
        read_labels(missing_col)

    empty_rater = tmp_path / "empty.csv"
    empty_rater.write_text("id,rater,label\ns1,alice,1\ns2,,0\n")
    with pytest.raises(UserError, match=r"empty\.csv:3: empty 'rater'"):
        read_labels(empty_rater)

    bad_json = tmp_path / "labels.jsonl"
    bad_json.write_text('{"id": "s1", "rater": "a", "label": 1}\n\n{"id": "s2", "rater": "a", "label": \n')
    with pytest.raises(UserError, match=r"labels\.jsonl:3: not valid JSON"):
        read_labels(bad_json)

    duplicate = tmp_path / "dup.jsonl"
    duplicate.write_text('{"id": "s1", "rater": "a", "label": 1}\n{"id": "s1", "rater": "a", "label": 0}\n')
    with pytest.raises(UserError, match=r"dup\.jsonl:2: rater 'a' labels id 's1' twice \(first at .*dup\.jsonl:1\)"):
        read_labels(duplicate)


def test_label_files_from_excel_or_in_another_encoding(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark (it was glued to the first column name); a Latin-1 file is
    one line saying so (it was a UnicodeDecodeError traceback)."""
    bom = tmp_path / "excel.csv"
    bom.write_bytes("\ufeffid,rater,label\ns1,alice,1\n".encode())
    assert [(lab.id, lab.rater, lab.label) for lab in read_labels(bom)] == [("s1", "alice", 1)]
    for name in ("latin.csv", "latin.jsonl"):
        latin = tmp_path / name
        text = ("id,rater,label\ns1,Jos\u00e9,1\n" if name.endswith(".csv")
                else '{"id": "s1", "rater": "Jos\u00e9", "label": 1}\n')
        latin.write_bytes(text.encode("latin-1"))
        with pytest.raises(UserError, match=rf"--labels .*{name}: not UTF-8 text \(byte 0xe9 at offset \d+\); save"):
            read_labels(latin)
    big = tmp_path / "big.csv"  # the byte lies past the first chunk the reader decodes: its offset is in the file
    big.write_bytes(b"\xef\xbb\xbfid,rater,label\n" + b"".join(b"s%d,alice,1\n" % i for i in range(3000))
                    + "s,Jos\u00e9,1\n".encode("latin-1"))
    with pytest.raises(UserError) as err:
        read_labels(big)
    assert str(err.value) == (f"--labels {big}: not UTF-8 text (byte 0xe9 at offset {big.read_bytes().index(0xE9)}); "
                              "save it as UTF-8 (CSV UTF-8 in Excel)")


def test_label_outside_the_judge_scale_names_the_line(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("id,rater,label\ns1,alice,1\ns2,alice,3\n")
    labels = read_labels(path)
    with pytest.raises(UserError, match=r"labels\.csv:3: label 3 is outside 0/1"):
        agreement_report(labels, "binary", {"s1": [1], "s2": [0]})
    report = agreement_report(labels, "likert", {"s1": [1], "s2": [3]})
    assert report["overall"]["agreement"]["mean"] == 1.0


# ------------------------------------------------------------------------------------------------- CLI
def _write_scores(path, key, field, per_sample):
    with open(path, "w") as fh:
        for sid, values in per_sample.items():
            row = {"id": sid, "judges": {key: {"metrics": {}, "details": {field: values}},
                                         "exact/pefomed": {"metrics": {"accuracy": 1.0}, "details": {}}}}
            fh.write(json.dumps(row) + "\n")


def test_cli_binary_report_per_rater_and_overall(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    judge = {"s1": [1, 1, 1], "s2": [1, 0, 1], "s3": [0, 0, None], "s4": [0, 0, 0], "s5": [1, 1, 0]}
    _write_scores(run_dir / "scores.jsonl", "gpt4/pefomed", "verdicts", judge)
    alice = {"s1": 1, "s2": 0, "s3": 0, "s4": 0}
    bob = {"s1": 1, "s2": 1, "s3": 1, "s4": 0, "s5": 1, "unknown": 1}
    labels = tmp_path / "human.csv"
    labels.write_text("id,rater,label\n" + "".join(f"{i},alice,{v}\n" for i, v in alice.items())
                      + "".join(f"{i},bob,{v}\n" for i, v in bob.items()))
    out = tmp_path / "report.json"
    code = main(["agreement", "--labels", str(labels), "--scores", str(run_dir), "--judge", "gpt4",
                 "--output", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "gpt4:pefomed: binary judge" in printed and "alice" in printed and "bob" in printed and "overall" in printed
    report = json.loads(out.read_text())["judges"]["gpt4/pefomed"]
    assert report["repeats"] == 3 and report["raters"] == 2 and report["samples"] == 5
    # one unscored reply (s3's third), counted once though two raters labelled s3 (it was counted per label)
    assert report["labels_without_scores"] == 1 and report["unscored_judge_replies"] == 1
    # n counts pairs per judge repeat: s3's unscored third reply leaves alice 3 pairs in that repeat, 4 in the others
    assert report["per_rater"]["alice"]["n_per_repeat"] == [4, 4, 3]
    assert re.search(r"^alice\s+3-4\s", printed, re.M) and re.search(r"^overall\s+7-9\s", printed, re.M), printed

    def expected(labels_of):
        agree, kappas = [], []
        for r in range(3):
            pairs = [(h, judge[i][r]) for i, h in labels_of.items() if i in judge and judge[i][r] is not None]
            h, j = [p[0] for p in pairs], [p[1] for p in pairs]
            agree.append(np.mean(np.array(h) == np.array(j)))
            kappas.append(cohen_kappa_score(h, j, labels=[0, 1]))
        return agree, kappas

    agree, kappas = expected(alice)
    row = report["per_rater"]["alice"]
    assert row["agreement"]["mean"] == pytest.approx(np.mean(agree))
    assert row["agreement"]["std"] == pytest.approx(np.std(agree, ddof=1))
    assert row["kappa"]["mean"] == pytest.approx(np.mean(kappas))
    assert row["human_mean"] == pytest.approx(0.25)

    pooled = {(i, "a"): v for i, v in alice.items()} | {(i, "b"): v for i, v in bob.items()}
    agree_all, kappa_all = [], []
    for r in range(3):
        pairs = [(h, judge[i][r]) for (i, _), h in pooled.items() if i in judge and judge[i][r] is not None]
        agree_all.append(np.mean([h == j for h, j in pairs]))
        kappa_all.append(cohen_kappa_score([p[0] for p in pairs], [p[1] for p in pairs]))
    assert report["overall"]["agreement"]["mean"] == pytest.approx(np.mean(agree_all))
    assert report["overall"]["kappa"]["mean"] == pytest.approx(np.mean(kappa_all))
    assert report["overall"]["kappa"]["std"] == pytest.approx(np.std(kappa_all, ddof=1))
    # human accuracy: alice 1/4, bob 4/5 -> mean and sample std across the two raters
    assert report["human"]["mean"] == pytest.approx((0.25 + 0.8) / 2)
    assert report["human"]["std"] == pytest.approx(np.std([0.25, 0.8], ddof=1))
    # judge accuracy per repeat over the labelled samples s1..s5: 3/5, 2/5, 2/4
    assert report["judge"]["mean"] == pytest.approx(np.mean([0.6, 0.4, 0.5]))
    assert report["judge"]["std"] == pytest.approx(np.std([0.6, 0.4, 0.5], ddof=1))


def test_cli_likert_exact_within_one_and_linear_kappa(tmp_path, capsys):
    scores = tmp_path / "scores.jsonl"
    judge = {f"r{i}": [i % 5, (i + 1) % 5] for i in range(12)}
    _write_scores(scores, "likert/default", "scores", judge)
    human = {f"r{i}": (i * 3) % 5 for i in range(12)}
    labels = tmp_path / "human.jsonl"
    labels.write_text("".join(json.dumps({"id": k, "rater": "rad1", "label": v}) + "\n" for k, v in human.items()))
    assert main(["agreement", "--labels", str(labels), "--scores", str(scores), "--judge", "likert"]) == 0
    printed = capsys.readouterr().out
    assert "within-one" in printed and "kappa (linear)" in printed
    report = json.loads((tmp_path / "agreement.json").read_text())["judges"]["likert/default"]
    h = [human[k] for k in judge]
    exact, within, kappa = [], [], []
    for r in range(2):
        j = [judge[k][r] for k in judge]
        exact.append(np.mean(np.array(h) == np.array(j)))
        within.append(np.mean(np.abs(np.array(h) - np.array(j)) <= 1))
        kappa.append(cohen_kappa_score(h, j, labels=[0, 1, 2, 3, 4], weights="linear"))
    o = report["overall"]
    assert o["agreement"]["mean"] == pytest.approx(np.mean(exact))
    assert o["within_one"]["mean"] == pytest.approx(np.mean(within))
    assert o["kappa"]["mean"] == pytest.approx(np.mean(kappa))
    for spelled in ("likert:default", "likert/default"):  # run / score / table write judge:convention
        assert main(["agreement", "--labels", str(labels), "--scores", str(scores), "--judge", spelled]) == 0
        assert json.loads((tmp_path / "agreement.json").read_text())["judges"]["likert/default"]["overall"] == o
    assert report["human"]["std"] is None  # one rater: no spread across raters
    assert report["judge"]["mean"] == pytest.approx(np.mean([np.mean([judge[k][r] for k in judge]) for r in range(2)]))


def test_cli_errors_are_one_line(tmp_path, capsys):
    scores = tmp_path / "scores.jsonl"
    _write_scores(scores, "gpt4/pefomed", "verdicts", {"s1": [1]})
    labels = tmp_path / "human.csv"
    labels.write_text("id,rater,label\ns1,alice,1\n")
    assert main(["agreement", "--labels", str(labels), "--scores", str(scores), "--judge", "likert"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no scores of judge 'likert'" in err
    assert "judges in this file: exact:pefomed, gpt4:pefomed" in err  # as --judge takes them
    assert main(["agreement", "--labels", str(labels), "--scores", str(scores), "--judge", "exact"]) == 2
    assert "no per-repeat verdicts" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    other.write_text("id,rater,label\nzzz,alice,1\n")
    assert main(["agreement", "--labels", str(other), "--scores", str(scores), "--judge", "gpt4"]) == 2
    assert "no labelled id" in capsys.readouterr().err


def test_scores_that_are_not_utf8_are_one_line_naming_the_file(tmp_path, capsys):
    """--scores pointed at a binary file was a UnicodeDecodeError traceback."""
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x80\x81\x82\xff" * 8)
    labels = tmp_path / "human.csv"
    labels.write_text("id,rater,label\ns1,alice,1\n")
    assert main(["agreement", "--labels", str(labels), "--scores", str(garbage), "--judge", "gpt4"]) == 2
    assert capsys.readouterr().err == f"error: {garbage}:1: not UTF-8 text (byte 0x80 at offset 0); save it as UTF-8\n"


@pytest.mark.parametrize(("values", "expected"), [
    (None, "must be a list of per-repeat values, got NoneType"),
    (["yes"], "holds 'yes'; expected 0, 1 or null"),
    ([1, 7], "holds 7; expected 0, 1 or null"),
])
def test_a_hand_edited_scores_row_is_named_by_line_and_field(tmp_path, capsys, values, expected):
    scores = tmp_path / "scores.jsonl"
    _write_scores(scores, "gpt4/pefomed", "verdicts", {"s1": [1], "s2": values})
    labels = tmp_path / "human.csv"
    labels.write_text("id,rater,label\ns1,alice,1\ns2,alice,0\n")
    assert main(["agreement", "--labels", str(labels), "--scores", str(scores), "--judge", "gpt4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {scores}:2: field 'judges.gpt4/pefomed.details.verdicts' {expected}"), err
    assert err.count("\n") == 1


def test_a_sample_scored_on_two_lines_is_refused_not_read_as_the_last(tmp_path, capsys):
    """A repeated id (a flipped copy appended by hand, two files joined) silently used the last line's verdicts."""
    scores = tmp_path / "scores.jsonl"
    _write_scores(scores, "gpt4/pefomed", "verdicts", {"s1": [1], "s2": [0]})
    with scores.open("a") as fh:
        fh.write(json.dumps({"id": "s1", "judges": {"gpt4/pefomed": {"metrics": {}, "details": {"verdicts": [0]}}}})
                 + "\n")
    labels = tmp_path / "human.csv"
    labels.write_text("id,rater,label\ns1,alice,1\ns2,alice,0\n")
    assert main(["agreement", "--labels", str(labels), "--scores", str(scores), "--judge", "gpt4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {scores}:3: sample id "s1" is on line 1 too'), err
    assert err.count("\n") == 1


def _one_label_and_verdict(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """(labels, scores, the agreement command up to --output) for one sample rated by one rater."""
    scores = tmp_path / "scores.jsonl"
    _write_scores(scores, "gpt4/pefomed", "verdicts", {"s1": [1]})
    labels = tmp_path / "human.csv"
    labels.write_text("id,rater,label\ns1,alice,1\n")
    return labels, scores, ["agreement", "--labels", str(labels), "--scores", str(scores), "--judge", "gpt4",
                            "--output"]


def test_output_that_cannot_be_a_file_is_refused_before_any_work(tmp_path, capsys):
    _, _, args = _one_label_and_verdict(tmp_path)
    folder = tmp_path / "reports"
    folder.mkdir()
    assert main([*args, str(folder)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no table printed before the error
    assert err == f"error: --output {folder} is a directory; expected a file path (e.g. {folder / 'agreement.json'})\n"
    assert list(folder.iterdir()) == []  # no temporary file left or named
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main([*args, str(blocker / "sub" / "report.json")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: --output {blocker / 'sub' / 'report.json'}: {blocker} is not a ")
    (tmp_path / "agreement.json").mkdir()  # the default report path is taken by a folder
    assert main(args[:-1]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (f"error: the default report path {tmp_path / 'agreement.json'} is a directory; "
                                 "expected a file path (pass --output FILE)\n")


def test_output_never_replaces_the_labels_the_scores_or_another_file(tmp_path, capsys):
    labels, scores, args = _one_label_and_verdict(tmp_path)
    other = tmp_path / "notes.json"
    other.write_text('{"mine": 1}')
    kept = {path: path.read_bytes() for path in (labels, scores, other)}
    for path, says in ((labels, "is --labels"), (scores, "is the scores file"),
                       (other, "exists and is not an agreement report")):
        assert main([*args, str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith(f"error: --output {path} {says}") and err.count("\n") == 1, err
    assert {path: path.read_bytes() for path in kept} == kept
    report = tmp_path / "report.json"
    assert main([*args, str(report)]) == 0 and main([*args, str(report)]) == 0  # a report is replaced by a report


def test_the_human_mean_is_over_the_samples_the_judge_scored_and_undefined_kappas_are_said():
    """s3's judge replies all went unscored: its human label entered the human mean (0.75 against the judge's 0.83
    on other samples) though the report promises both on the same samples; a repeat with an undefined kappa was
    dropped from 'kappa 0.000' without a word."""
    from harness.agreement import Label, format_table

    verdicts = {"s1": [1, 1], "s2": [1, 1], "s3": [None, None], "s4": [1, 0]}
    labels = [Label(id=i, rater="ann", label=v, where=f"labels.csv:{n}")
              for n, (i, v) in enumerate({"s1": 1, "s2": 1, "s3": 0, "s4": 1}.items(), start=2)]
    report = agreement_report(labels, "binary", verdicts)
    assert report["per_rater"]["ann"]["human_mean"] == 1.0 and report["human"]["mean"] == 1.0
    assert report["unscored_judge_replies"] == 2
    # repeat 1: humans and judge all 1 (kappa undefined); repeat 2: kappa 0
    assert report["overall"]["kappa_repeats"] == {"defined": 1, "of": 2}
    assert "overall kappa rests on 1 of 2 judge repeats" in format_table("gpt4/pefomed", report)



def test_verdicts_of_two_judge_models_are_never_blended_into_one_agreement(tmp_path, capsys):
    """A re-judge of a few samples with another judge model leaves scores.jsonl with two setups' verdicts: the
    run says so, and agreement over samples of both setups is refused (it would report a blend of two models)."""
    from fake_llm_servers import FakeLLMServer

    runs = tmp_path / "runs"

    def judged(model: str, limit: int, url: str) -> None:
        assert main(["run", "--model", "prior", "--task", "phantom-vqa", "--limit", str(limit), "--judge", "gpt4",
                     "--judge-base-url", url, "--judge-model", model, "--judge-provider", "openai-compatible",
                     "--runs-dir", str(runs), "--no-progress"]) == 0

    with FakeLLMServer(reply=lambda body: json.dumps({"correct": int(body["model"] == "model-a")})) as server:
        judged("model-a", 12, server.openai_base_url)
        capsys.readouterr()
        judged("model-b", 4, server.openai_base_url)
    assert "keeps 8 earlier gpt4/default verdicts of samples not scored now, made with another setup" \
        in capsys.readouterr().err
    (run_dir,) = list(runs.iterdir())
    rows = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
    models = [row["judges"]["gpt4/default"]["setup"]["model"] for row in rows]
    assert sorted(models) == ["model-a"] * 8 + ["model-b"] * 4
    labels = tmp_path / "human.csv"
    labels.write_text("id,rater,label\n" + "".join(f"{row['id']},alice,1\n" for row in rows))
    code = main(["agreement", "--labels", str(labels), "--scores", str(run_dir), "--judge", "gpt4"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("error: judge gpt4:default: the labelled samples were scored with 2 setups")
    assert "model model-a / model-b; 8 / 4 samples" in err and "\n" not in err

    newer = [row["id"] for row in rows if row["judges"]["gpt4/default"]["setup"]["model"] == "model-b"]
    labels.write_text("id,rater,label\n" + "".join(f"{i},alice,1\n" for i in newer))
    assert main(["agreement", "--labels", str(labels), "--scores", str(run_dir), "--judge", "gpt4"]) == 0
    report = json.loads((run_dir / "agreement.json").read_text())["judges"]["gpt4/default"]
    assert report["judge_setup"]["model"] == "model-b" and report["judge"]["mean"] == 0.0
