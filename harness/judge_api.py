"""The judge plugin interface: per-sample scores plus an aggregation rule.

A judge reads prediction records (dicts with id, question, answer, prediction, answer_type and the
breakdown fields) and returns one score row per record: `{"metrics": {name: value or None}, ...}`.
`None` means "unscored" (for example an LLM reply that could not be parsed): counted and reported,
never treated as 0. `aggregate` turns a set of score rows into corpus-level values; the default is the
mean of each metric, and judges with corpus metrics (BLEU, CIDEr) override it. The same `aggregate`
serves the overall numbers and every breakdown slice, so no judge writes per-slice code.

`describe()` records, besides the settings as given, the judge's `setup`: the resolved values of the choices
that change its numbers (defaults filled in, typed), never those that only change speed or cost (workers,
concurrency, timeouts, cache, device, batch size). A leaderboard keeps one row per setup (harness.publish).

`saved_aggregator` is the same aggregation over rows read back from scores.jsonl, built without the judge's tools
(an API key, Java, a GPU): `harness compare` resamples it for paired intervals of two runs' differences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: a judge's corpus metrics over the rows at some positions (positions may repeat, as a bootstrap draws them)
Aggregator = Callable[[Sequence[int]], dict[str, float | None]]


@dataclass
class JudgeOptions:
    """Options the user gave for a judge (`--convention`, judge-specific settings)."""

    convention: str | None = None
    task_kind: str = "vqa"
    settings: dict[str, Any] = field(default_factory=dict)
    credentialed: bool = False
    progress: bool | None = None  # the command's --no-progress (None: a judge decides, e.g. by stderr being a tty)


class JudgePlugin:
    id: str = ""
    version: str = "1"
    conventions: tuple[str, ...] = ()
    default_convention: str | None = None
    task_kinds: tuple[str, ...] = ("vqa", "report", "caption")
    #: settings keys this judge understands (from --judge-model, --judge-repeats, --judge-arg KEY=VALUE ...);
    #: the core passes only these to the judge and records them in results.json, and refuses a key that no
    #: selected judge accepts (harness.scoring.check_settings), so a misspelt --judge-arg is an error
    accepted_settings: tuple[str, ...] = ()
    #: metrics whose per-sample mean is the corpus value (used to pick the confidence interval method)
    mean_metrics: bool = True
    #: metrics whose per-sample values are 0/1 verdicts (correct or not), so that their value is a proportion: they
    #: get Wilson's interval (others a bootstrap, even where their values happen to be 0 or 1 on some slice); a
    #: per-sample value outside [0, 1] is refused (between: a share of repeated verdicts, bootstrapped)
    proportion_metrics: tuple[str, ...] = ()
    #: metrics whose per-sample values lie in [0, 1] without being 0/1 verdicts (a token recall, an F1): a bootstrap
    #: interval, except where every value is 0 (or every value 1), where the bootstrap has no spread to resample and
    #: would give [0, 0] however few the samples: Wilson's interval of 0 (n) of n then, the widest a mean of values in
    #: [0, 1] needs (a 0/1 variable has the largest variance for its mean)
    unit_metrics: tuple[str, ...] = ()

    def __init__(self, options: JudgeOptions) -> None:
        from harness.errors import UserError

        self.options = options
        convention = options.convention or self.default_convention
        if self.conventions and convention not in self.conventions:
            raise UserError(
                f"judge '{self.id}' has no convention '{options.convention}'; "
                f"its conventions: {', '.join(self.conventions)}"
            )
        if options.task_kind not in self.task_kinds:
            raise UserError(
                f"judge '{self.id}' scores {'/'.join(self.task_kinds)} tasks, not '{options.task_kind}'"
            )
        self.convention = convention

    @classmethod
    def resolve_setup(cls, settings: dict[str, Any], convention: str | None) -> dict[str, Any]:
        """The choices among `settings` (as given, e.g. strings from --judge-arg) that change this judge's
        numbers, resolved: defaults filled in and typed, so a default and the same value given explicitly are
        equal. JSON values only. Also applied to results.json files written before `setup` was recorded (their
        recorded settings), so it must work without the judge's tools (Java, an API key, a GPU). Default: every
        accepted setting given, as given (so two values of a setting are two leaderboard rows; override it to
        fill in defaults, or to leave out settings that do not move numbers). Raises UserError for a value the
        judge would refuse."""
        return {key: settings[key] for key in sorted(settings) if key in cls.accepted_settings}

    def setup(self) -> dict[str, Any]:
        """This judge's resolved number-moving choices (describe()'s "setup"); default: resolve_setup of its
        settings. A judge that knows more once built (a model file's hash) may add it here."""
        return self.resolve_setup(dict(self.options.settings), self.convention)

    def describe(self) -> dict[str, Any]:
        """Recorded in results.json: which judge, which convention, which version, settings and setup."""
        return {
            "id": self.id,
            "convention": self.convention,
            "version": self.version,
            "settings": dict(self.options.settings),
            "setup": self.setup(),
        }

    def score(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def aggregate(self, records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, float | None]:
        """Corpus value of every metric over these rows; default: mean over scored rows."""
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for row in rows:
            for name, value in row["metrics"].items():
                counts.setdefault(name, 0)
                sums.setdefault(name, 0.0)
                if value is not None:
                    sums[name] += float(value)
                    counts[name] += 1
        return {name: (sums[name] / counts[name] if counts[name] else None) for name in sums}

    @classmethod
    def saved_aggregator(cls, rows: list[dict[str, Any]], convention: str | None, setup: Any) -> Aggregator | None:
        """`aggregate` over `rows` read back from scores.jsonl (with `convention` and the recorded `setup`), as a
        function of row positions, computed without the judge's tools; None where this judge cannot (then its
        runs are not compared). Default: the mean of each metric's scored values when `mean_metrics`, else None;
        a judge with corpus metrics overrides it (lexical, the LLM judges)."""
        if not cls.mean_metrics:
            return None
        return mean_aggregator(rows)

    def close(self) -> None:
        """Release resources (a Java process, HTTP clients). Called after score(); an exception here is a warning:
        the rows score() returned are still saved."""


def mean_aggregator(rows: list[dict[str, Any]]) -> Aggregator:
    """The default aggregate (the mean of each metric over its scored rows) over row positions, vectorised."""
    import numpy as np

    names = list(dict.fromkeys(name for row in rows for name in row.get("metrics", {})))
    columns = {name: np.array([_number(row.get("metrics", {}).get(name)) for row in rows], dtype=float)
               for name in names}

    def aggregate(positions: Sequence[int]) -> dict[str, float | None]:
        idx = np.asarray(positions, dtype=np.int64)
        out: dict[str, float | None] = {}
        for name, column in columns.items():
            values = column[idx]
            values = values[~np.isnan(values)]
            out[name] = float(values.mean()) if len(values) else None
        return out

    return aggregate


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)
