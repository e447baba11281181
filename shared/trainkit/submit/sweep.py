"""`trainkit submit --sweep`: an AzureML SDK v2 sweep job whose trial is the command job `submit` writes.

    --search lr=loguniform(1e-4,1e-1) --search batch_size=choice(8,16) --sampling random
    --objective val/map:maximize --early-termination bandit:slack_factor=0.1,delay_evaluation=2
    --max-trials 20 --max-concurrent-trials 4 --timeout 6h --trial-timeout 1h

Everything is checked before a file is written: each searched key against the trainer's typed
hyperparameters at the values the sampler can produce (a choice's values, a range's bounds), the
objective against the metrics the harness logs (the trial trains with `monitor` set to it, so the
model each trial keeps is the best on the objective, and its value is logged at every evaluation
for early termination to compare), and what azure-ai-ml loads without complaint although the
service would refuse it (a bandit policy with no slack or both, Bayesian sampling with early
termination or a distribution it cannot model, grid sampling over a continuous range).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from trainkit.errors import UserError

SWEEP_SCHEMA_URL = "https://azuremlschemas.azureedge.net/latest/sweepJob.schema.json"
SAMPLINGS = ("random", "grid", "bayesian")
_BAYESIAN_KINDS = ("choice", "uniform", "quniform")  # AzureML's Bayesian sampler models only these
_CALL = re.compile(r"^\s*([a-z]+)\s*\((.*)\)\s*$", re.S)
_ARITY = {"uniform": 2, "loguniform": 2, "quniform": 3, "randint": 1}
# Early-termination policies: their settings and each one's type (AzureML's names).
_POLICIES: dict[str, dict[str, type]] = {
    "bandit": {"slack_factor": float, "slack_amount": float, "evaluation_interval": int, "delay_evaluation": int},
    "median_stopping": {"evaluation_interval": int, "delay_evaluation": int},
    "truncation_selection": {
        "truncation_percentage": int,
        "evaluation_interval": int,
        "delay_evaluation": int,
        "exclude_finished_jobs": bool,
    },
}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Distribution:
    """One searched hyperparameter: `kind` and its arguments as the user wrote them (loguniform in
    real values; AzureML's form, the natural logs, is written by `as_yaml`)."""

    key: str
    kind: str  # choice | uniform | loguniform | quniform | randint
    args: tuple

    def as_yaml(self) -> dict:
        """The search_space entry."""
        if self.kind == "choice":
            return {"type": "choice", "values": list(self.args)}
        if self.kind == "randint":
            return {"type": "randint", "upper": self.args[0]}
        low, high = self.args[:2]
        if self.kind == "loguniform":
            low, high = math.log(low), math.log(high)
        spec = {"type": self.kind, "min_value": low, "max_value": high}
        if self.kind == "quniform":
            spec["q"] = self.args[2]
        return spec

    def reachable(self) -> list[object]:
        """Values the sampler can produce that the trainer must accept: every choice, each bound."""
        if self.kind == "choice":
            return list(self.args)
        if self.kind == "randint":
            return [0, self.args[0] - 1]
        low, high = self.args[:2]
        if self.kind == "quniform":
            q = self.args[2]
            return [float(round(low / q) * q), float(round(high / q) * q)]  # floats, as AzureML samples them
        # A point inside the range too: a sample is rarely a whole number, which an int hyperparameter refuses.
        inside = math.exp(math.log(low) + (math.log(high) - math.log(low)) / math.pi) if self.kind == "loguniform" \
            else low + (high - low) / math.pi  # fmt: skip
        return [float(low), inside, float(high)]


def parse_search(items: Sequence[str]) -> list[Distribution]:
    """`--search KEY=choice(a,b)|uniform(lo,hi)|loguniform(lo,hi)|quniform(lo,hi,q)|randint(n)` options."""
    from trainkit.config import parse_set_options

    found: list[Distribution] = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        match = _CALL.match(text)
        if not sep or not key or not match:
            raise UserError(f"--search {item!r}: expected KEY=choice(a,b,...), uniform(lo,hi), loguniform(lo,hi), "
                            "quniform(lo,hi,q) or randint(n)")  # fmt: skip
        parse_set_options([f"{key}=0"])  # the key's spelling
        kind, raw = match.group(1), [a.strip() for a in match.group(2).split(",")]
        where = f"--search {key}={kind}(...)"
        if any(k.key == key for k in found):
            raise UserError(f"--search {key}: given twice; one distribution per hyperparameter")
        if kind == "choice":
            if raw == [""]:
                raise UserError(f"{where}: no values")
            values = [parse_set_options([f"{key}={v}"])[key] for v in raw]
            found.append(Distribution(key, kind, tuple(values)))
            continue
        if kind not in _ARITY:
            raise UserError(f"{where}: unknown distribution {kind!r}; use choice, uniform, loguniform, quniform or "
                            "randint")  # fmt: skip
        if len(raw) != _ARITY[kind]:
            raise UserError(f"{where}: takes {_ARITY[kind]} number(s), got {len(raw)}")
        numbers = [_number(v, where) for v in raw]
        if kind == "randint":
            if not float(numbers[0]).is_integer() or numbers[0] < 1:
                raise UserError(f"{where}: n must be a whole number of at least 1 (values 0 to n-1)")
            numbers = [int(numbers[0])]
        elif numbers[0] >= numbers[1]:
            raise UserError(f"{where}: the lower bound {raw[0]} must be below the upper bound {raw[1]}")
        if kind == "loguniform" and numbers[0] <= 0:
            raise UserError(f"{where}: the bounds must be above 0 (it samples exp(uniform(ln lo, ln hi)))")
        if kind == "quniform" and numbers[2] <= 0:
            raise UserError(f"{where}: q must be above 0")
        found.append(Distribution(key, kind, tuple(numbers)))
    return found


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{where}: {text!r} is not a finite number")
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


@dataclass(frozen=True)
class EarlyTermination:
    """An early-termination policy and its settings, as AzureML names them."""

    kind: str
    settings: Mapping[str, object] = field(default_factory=dict)

    def as_yaml(self) -> dict:
        """The early_termination entry."""
        return {"type": self.kind, **self.settings}


def parse_early_termination(text: str) -> EarlyTermination | None:
    """`bandit:slack_factor=0.1,evaluation_interval=1,delay_evaluation=2`, `median_stopping:...`,
    `truncation_selection:truncation_percentage=20,...`; empty: none."""
    if not text:
        return None
    kind, _, rest = text.partition(":")
    kind = kind.strip()
    if kind not in _POLICIES:
        raise UserError(f"--early-termination {text!r}: unknown policy {kind!r}; use {', '.join(_POLICIES)}")
    settings: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        name, sep, raw = part.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or name not in _POLICIES[kind]:
            raise UserError(f"--early-termination {kind}: unknown setting {part!r}; "
                            f"it takes {', '.join(_POLICIES[kind])}")  # fmt: skip
        settings[name] = _setting(kind, name, raw)
    if kind == "bandit" and sum(k in settings for k in ("slack_factor", "slack_amount")) != 1:
        raise UserError("--early-termination bandit: give exactly one of slack_factor (a ratio, e.g. 0.1) or "
                        "slack_amount (in the objective's units), e.g. bandit:slack_factor=0.1")  # fmt: skip
    if kind == "truncation_selection":
        percentage = settings.get("truncation_percentage")
        if percentage is None or not 1 <= int(percentage) <= 99:  # type: ignore[call-overload]
            raise UserError("--early-termination truncation_selection: truncation_percentage must be 1 to 99, "
                            "e.g. truncation_selection:truncation_percentage=20")  # fmt: skip
    return EarlyTermination(kind, settings)


def _setting(kind: str, name: str, raw: str) -> object:
    wanted = _POLICIES[kind][name]
    where = f"--early-termination {kind}: {name}={raw!r}"
    if wanted is bool:
        if raw.lower() not in ("true", "false"):
            raise UserError(f"{where}: expected true or false")
        return raw.lower() == "true"
    try:
        value = wanted(raw)
    except ValueError:
        raise UserError(f"{where}: expected {'a whole number' if wanted is int else 'a number'}") from None
    if value < 0 or (name == "evaluation_interval" and value < 1) or (name.startswith("slack") and value <= 0):
        raise UserError(f"{where}: out of range ({'at least 1' if name == 'evaluation_interval' else 'above 0'})")
    return value


def parse_duration(text: str, flag: str) -> int | None:
    """Seconds from `3600`, `90m`, `6h` or `1d`; empty: no limit."""
    if not text:
        return None
    match = _DURATION.match(text.strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"{flag} {text!r}: expected a duration such as 3600, 90m, 6h or 1d")
    return int(float(match.group(1)) * _SECONDS[match.group(2)])


@dataclass(frozen=True)
class SweepConfig:
    """A sweep over the trial command: search space, sampling, objective, early termination, limits."""

    search: tuple[Distribution, ...]
    objective: str  # a metric as logged, e.g. val/map
    goal: str  # maximize | minimize
    sampling: str = "random"
    early_termination: EarlyTermination | None = None
    max_trials: int = 20
    max_concurrent_trials: int | None = None
    timeout: int | None = None  # seconds, the whole sweep
    trial_timeout: int | None = None  # seconds, each trial

    def check(self) -> None:
        """What AzureML would refuse after submission, or what makes no sense, as one-line errors."""
        if not self.search:
            raise UserError("--sweep needs at least one --search KEY=DISTRIBUTION")
        if self.sampling not in SAMPLINGS:
            raise UserError(f"--sampling {self.sampling}: use {', '.join(SAMPLINGS)}")
        if self.goal not in ("maximize", "minimize"):
            raise UserError(f"--objective {self.objective}:{self.goal}: the goal is maximize or minimize")
        continuous = [d.key for d in self.search if d.kind != "choice"]
        if self.sampling == "grid" and continuous:
            raise UserError(f"--sampling grid: --search {continuous[0]} is a range; grid sampling takes choice(...) "
                            "only (use random or bayesian sampling for ranges)")  # fmt: skip
        if self.sampling == "bayesian":
            other = [d for d in self.search if d.kind not in _BAYESIAN_KINDS]
            if other:
                raise UserError(f"--sampling bayesian: --search {other[0].key}={other[0].kind}(...) is not supported "
                                f"by Bayesian sampling (it takes {', '.join(_BAYESIAN_KINDS)})")  # fmt: skip
            if self.early_termination is not None:
                raise UserError("--sampling bayesian does not support --early-termination; use random sampling "
                                "with a policy, or drop the policy")  # fmt: skip
        if self.max_trials < 1:
            raise UserError(f"--max-trials must be at least 1, got {self.max_trials}")
        if self.max_concurrent_trials is not None and not 1 <= self.max_concurrent_trials <= self.max_trials:
            raise UserError(f"--max-concurrent-trials must be 1 to --max-trials ({self.max_trials}), "
                            f"got {self.max_concurrent_trials}")  # fmt: skip
        if self.timeout and self.trial_timeout and self.trial_timeout > self.timeout:
            raise UserError(f"--trial-timeout ({self.trial_timeout} s) is longer than --timeout ({self.timeout} s)")

    def grid_size(self) -> int:
        """The number of points of a grid over the choices."""
        return math.prod(len(d.args) for d in self.search)

    def describe(self, key: str) -> str:
        """KEY's distribution as the user wrote it, e.g. loguniform(0.0001, 0.1) (the trials' tag)."""
        found = next(d for d in self.search if d.key == key)
        return f"{found.kind}({', '.join(map(str, found.args))})"

    def placeholders(self) -> dict[str, str]:
        """KEY -> the trial command's reference to the sampled value."""
        return {d.key: f"${{{{search_space.{d.key}}}}}" for d in self.search}

    def as_yaml(self) -> dict:
        """The sweep-specific part of the job: sampling, search space, objective, policy, limits."""
        limits = {"max_total_trials": self.max_trials}
        for name, value in (("max_concurrent_trials", self.max_concurrent_trials), ("timeout", self.timeout),
                            ("trial_timeout", self.trial_timeout)):  # fmt: skip
            if value is not None:
                limits[name] = value
        spec = {
            "sampling_algorithm": self.sampling,
            "search_space": {d.key: d.as_yaml() for d in self.search},
            "objective": {"goal": self.goal, "primary_metric": self.objective},
            "limits": limits,
        }
        if self.early_termination is not None:
            spec["early_termination"] = self.early_termination.as_yaml()
        return spec


def parse_objective(text: str, default_metric: str) -> tuple[str, str]:
    """(metric, goal) from `METRIC[:maximize|minimize]`; the metric defaults to the trainer's monitor, the
    goal to the harness's own rule (losses down, everything else up), which the trials keep their
    best model by, so another goal is refused."""
    metric, _, goal = (text or default_metric).partition(":")
    metric, goal = metric.strip(), goal.strip()
    natural = "minimize" if metric.rsplit("/", 1)[-1].endswith("loss") else "maximize"
    if goal not in ("", "maximize", "minimize"):
        raise UserError(f"--objective {text}: the goal after ':' is maximize or minimize")
    if goal and goal != natural:
        best = "lowest" if natural == "minimize" else "highest"
        raise UserError(f"--objective {text}: each trial keeps the model with the {best} {metric} (names ending "
                        f"in loss are minimised, the rest maximised); use {metric}:{natural}")  # fmt: skip
    return metric, natural


def check_objective(metric: str, known: Sequence[str], trainer: str) -> None:
    """The objective must be a metric the trial logs at every evaluation, spelled as logged."""
    if metric not in known:
        close = [name for name in known if name.split("/")[-1] == metric.split("/")[-1]]
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"--objective {metric}: not a metric the {trainer} trainer logs at each evaluation{hint}; "
                        f"it logs {', '.join(known)}")  # fmt: skip


def sweep_spec(command_job: dict, sweep: SweepConfig) -> dict:
    """The sweep job around one command job (from trainkit.submit.spec): its command, image, resources,
    distribution and environment become the trial; inputs, outputs, compute and tags stay on the sweep."""
    job = dict(command_job)
    trial = {"command": job.pop("command"), "environment": job.pop("environment")}
    resources = job.pop("resources")
    trial["resources"] = resources  # instance count and shm size (and the serverless VM size) per trial
    for key in ("distribution", "environment_variables"):
        if key in job:
            trial[key] = job.pop(key)
    spec = {
        "$schema": SWEEP_SCHEMA_URL,
        "type": "sweep",
        "display_name": job.pop("display_name"),
        "experiment_name": job.pop("experiment_name"),
        **({"compute": job.pop("compute")} if "compute" in job else {}),
        **sweep.as_yaml(),
        "trial": trial,
        "inputs": job.pop("inputs"),
        "outputs": job.pop("outputs"),
        "tags": job.pop("tags"),
    }
    if "queue_settings" in job:
        spec["queue_settings"] = job.pop("queue_settings")
    return spec
