"""Budget-constrained steady-state evolution (REFERENCE.md 5.1), deterministic, resumable, parallel.

The loop of Zen-NAS with these changes:
- The run is seeded (numpy PCG64) and every candidate's score is a deterministic function of the
  architecture and the seed (zennas.wiring), so a run is reproducible.
- Children are made in batches of `batch` (default 16): each child's parent is drawn uniformly from
  the population as it stood at the start of the batch (while the population has at most 10 members,
  the seed architecture with one mutation, as in Zen-NAS; otherwise two mutations). The batch's
  children are scored together, by one process or by N workers, and inserted in order; so the
  result does not depend on the number of workers.
- A child whose canonical hash was seen before (in this run) is not scored again: up to
  `retries` fresh mutations are drawn for a new one; the iteration counts either way.
- Cheap constraints (layers, params, MACs, table latency) are checked before scoring; a failing
  child is recorded and dropped, as in Zen-NAS. The seed architecture must meet every budget (a
  clear error otherwise) and is scored and kept, so every run has an in-budget answer.
- After inserting, the lowest-scoring members are removed while the population exceeds its size
  (ties: the newer member goes first).
- Optional elite re-scoring: at the end the top `rescore` members are scored with `rescore_repeats`
  independent draws and the best mean wins (single Zen draws are noisy).

Every iteration appends a line to history.jsonl; every `checkpoint_every` iterations (and at the
end) the state is written atomically to checkpoint.json with the byte length of the history it
covers. `resume` checks the checkpoint and that history in full, then truncates the history to that
length and continues from the checkpoint, so a run killed at any moment and resumed ends exactly as
an uninterrupted run; a checkpoint or history that does not fit is refused before anything changes.

The run receives its collaborators in a SearchProblem (zennas.search.interfaces): the space it samples
and mutates, the cost model that checks the budgets, the screen, and the map that scores candidates.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zennas.arch import ArchSpec
from zennas.errors import ConfigError, ZennasError
from zennas.io import (
    RunKind,
    atomic_write_bytes,
    atomic_write_json,
    claim_output_folder,
    json_field,
    parse_json_text,
    read_json_file,
)
from zennas.search.interfaces import Scored, ScoreMap, SearchProblem

STATE_FORMAT = "zennas-search-state"
STATE_VERSION = 1
SEED_PARENT_BELOW = 10  # Zen-NAS: while the population has <= 10 members, mutate the seed architecture
COUNTS = ("scored", "screened", "duplicate", "degenerate", "over_layers", "over_params", "over_macs", "over_latency",
          "over_table")  # fmt: skip
RESCORE_SHARE = 0.25  # under a time limit, the final re-scoring takes at most this share of it
# Settings a resumed run may change: how long it runs and how often it saves, not what it computes.
RESUME_FREE = ("iterations", "time_limit_s", "checkpoint_every")
# What a search writes into its folder (report.py writes the last six); overwrite deletes them first.
SEARCH_RUN = RunKind(
    "search", "a search", "checkpoint.json",
    ("checkpoint.json", "history.jsonl", "best.txt", "result.json", "population.json", "pareto.csv",
     "search_trajectory.png", "pareto_front.png"),
    recognise=lambda out: json_field(out / "checkpoint.json", "format") == STATE_FORMAT,  # before zennas-run.json
)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """How the evolution runs (the Problem says what it optimises)."""

    iterations: int | None = 1000  # children generated (screened or scored); None: until time_limit_s
    population: int = 64
    batch: int = 16  # children scored by the objective per batch
    retries: int = 8
    checkpoint_every: int = 64
    rescore: int = 0
    rescore_repeats: int = 4
    init: str | None = None  # seed architecture text in the space's dialect; None: the space's first seed
    strategy: str = "evolution"  # or "random": every child a fresh space.sample (the baseline)
    time_limit_s: float | None = None  # stop at the first batch boundary past this much search time
    funnel: bool = True  # screen children by the objective's closed form where one exists (SearchProblem.screen)
    # With the funnel: batch x screen_ratio children screened, `batch` of them scored. 64 by measurement
    # (benchmarks/RESULTS.md, bench_search race): 3 minutes of Zen-NAS's CIFAR setting judged 104.1 without the
    # funnel and 107.8 / 115.0 / 116.6 / 118.1 / 123.5 / 122.5 at ratios 4 / 8 / 16 / 32 / 64 / 128.
    screen_ratio: int = 64

    def validate(self) -> None:
        if self.strategy not in ("evolution", "random"):
            raise ConfigError(f"unknown strategy {self.strategy!r} for evolution; choose evolution or random")
        if self.iterations is None and self.time_limit_s is None:
            raise ConfigError("a search needs a bound: a number of iterations, a time limit, or both")
        limit = self.time_limit_s
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float)
                                  or not 0 < limit < math.inf):  # fmt: skip
            raise ConfigError(f"the time limit must be a positive number of seconds, got {limit!r}")
        counts = ["population", "batch", "checkpoint_every", "rescore_repeats", "screen_ratio"]
        for name in ["iterations", *counts] if self.iterations is not None else counts:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("retries", "rescore"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def more_than(self, state: State) -> bool:
        """Whether these settings ask for more than `state` did: more iterations, or more time."""
        if state.stopped is not None:  # ended by its time limit
            return self.time_limit_s is None or self.time_limit_s > state.stopped["limit_s"]
        return self.iterations is None or self.iterations > state.iteration


@dataclass
class Member:
    """A scored, in-budget architecture."""

    arch: str  # canonical text in the space's dialect
    hash: str
    score: float
    iteration: int
    metrics: dict[str, Any]
    values: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class State:
    """Everything needed to continue a run."""

    iteration: int
    rng: dict[str, Any]
    population: list[Member]
    seen: set[str]
    history_bytes: int
    counts: dict[str, int]
    wall_time_s: float
    seed_member: Member
    finished: bool = False
    rescored: list[dict[str, Any]] | None = None
    stopped: dict[str, Any] | None = None  # why the run ended before its iterations: {"reason", "limit_s", ...}

    def to_dict(self, problem: SearchProblem, settings: Settings) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "problem": problem.to_dict(),
            "settings": settings.to_dict(),
            "iteration": self.iteration,
            "rng": self.rng,
            "population": [m.to_dict() for m in self.population],
            "seen": sorted(self.seen),
            "history_bytes": self.history_bytes,
            "counts": self.counts,
            "wall_time_s": self.wall_time_s,
            "seed_member": self.seed_member.to_dict(),
            "finished": self.finished,
            "rescored": self.rescored,
            "stopped": self.stopped,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], settings: Settings, where: str) -> State:
        """The state in a checkpoint read from disk, every field's presence, type and range checked first
        (ConfigError naming `where` and the field otherwise): resuming never fails half-way on a bad file."""

        def get(key: str, ok: Callable[[Any], bool], what: str) -> Any:
            if key not in data:
                raise _bad_state(where, f"{key} is missing")
            if not ok(data[key]):
                raise _bad_state(where, f"{key} is not {what}")
            return data[key]

        iteration = get("iteration", _is_count, "an iteration count")
        population = get("population", lambda v: isinstance(v, list) and 1 <= len(v) <= settings.population,
                         f"a list of 1 to {settings.population} members")  # fmt: skip
        if isinstance(data.get("counts"), dict):
            data["counts"].setdefault("screened", 0)  # written before the funnel existed
        counts = get("counts", lambda v: isinstance(v, dict) and sorted(v) == sorted(COUNTS)
                     and all(_is_count(n) for n in v.values()), f"a count for each of {', '.join(COUNTS)}")  # fmt: skip
        if sum(counts.values()) != iteration + 1:  # every iteration counts once, plus the scored seed
            raise _bad_state(where, f"its counts add up to {sum(counts.values())}, not iteration + 1 = {iteration + 1}")
        seen = get("seen", lambda v: isinstance(v, list) and all(isinstance(h, str) for h in v), "a list of hashes")
        finished = get("finished", lambda v: isinstance(v, bool), "true or false") if "finished" in data else False
        rescored = get("rescored", _is_rescored, "null or a list of re-scored members") if "rescored" in data else None
        stopped = get("stopped", _is_stopped, "null or a stop record") if "stopped" in data else None
        state = cls(
            iteration=iteration,
            rng=get("rng", _is_pcg64_state, "a numpy PCG64 generator state"),
            population=[_member(m, where, f"population[{i}]") for i, m in enumerate(population)],
            seen=set(seen),
            history_bytes=get("history_bytes", _is_count, "a byte count"),
            counts=dict(counts),
            wall_time_s=get("wall_time_s", lambda v: _is_number(v) and v >= 0, "a duration in seconds"),
            seed_member=_member(data.get("seed_member"), where, "seed_member"),
            finished=finished,
            rescored=rescored,
            stopped=stopped,
        )
        if state.rescored and state.rescored[0]["hash"] not in {m.hash for m in state.population}:
            raise _bad_state(where, "the re-scored winner is not in the population")
        return state


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_pcg64_state(value: Any) -> bool:
    """True when numpy accepts `value` as a PCG64 state (what `np.random.default_rng` runs on)."""
    if not isinstance(value, dict):
        return False
    try:
        np.random.PCG64().state = value
    except (TypeError, ValueError, KeyError, IndexError, OverflowError):
        return False
    return True


def _is_stopped(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and isinstance(value.get("reason"), str)
                             and _is_number(value.get("limit_s")) and value["limit_s"] > 0)  # fmt: skip


def _is_rescored(value: Any) -> bool:
    if value is None:
        return True
    numbers = ("single_draw", "mean", "std")
    return isinstance(value, list) and all(
        isinstance(r, dict) and isinstance(r.get("arch"), str) and isinstance(r.get("hash"), str)
        and all(_is_number(r.get(k)) for k in numbers)
        and isinstance(r.get("values"), list) and all(_is_number(v) for v in r["values"])
        for r in value
    )  # fmt: skip


def _short(value: Any, width: int = 40) -> str:
    """A setting's value for a one-line message: its repr, cut to `width` characters (None: the default)."""
    text = "None (the default)" if value is None else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _bad_state(where: str, what: str) -> ConfigError:
    return ConfigError(
        f"{where} is not a usable search checkpoint ({what}); restore the file the run wrote, or start the run "
        "afresh (overwrite it) instead of resuming it"
    )


def _member(data: Any, where: str, name: str) -> Member:
    """A population member from a checkpoint, its fields checked."""
    fields = {"arch", "hash", "score", "iteration", "metrics", "values"}
    if not isinstance(data, dict) or not {"arch", "hash", "score", "iteration", "metrics"} <= data.keys() <= fields:
        raise _bad_state(where, f"{name} is not a member (an object with {', '.join(sorted(fields))})")
    metrics, values = data["metrics"], data.get("values", {})
    ok = (
        isinstance(data["arch"], str) and isinstance(data["hash"], str) and _is_number(data["score"])
        and _is_count(data["iteration"]) and isinstance(metrics, dict)
        and all(_is_number(metrics.get(k)) for k in ("macs", "params", "layers"))
        and isinstance(values, dict) and all(v is None or _is_number(v) for v in values.values())
    )  # fmt: skip
    if not ok:
        raise _bad_state(where, f"{name} has a field of the wrong type")
    return Member(**data)


def history_record(line: str | bytes, where: str, *, measured: bool = False) -> dict[str, Any]:
    """One line of a search's history.jsonl, its shape checked (ConfigError naming `where` otherwise).

    Every record has an iteration `it` and a `status`; a scored one (or a MILP "solution") a finite
    `score` and its `arch`, and with `measured` (an evolution's history) its macs, params and layers.
    """
    record = parse_json_text(line, where, ConfigError)
    ok = isinstance(record, dict) and _is_count(record.get("it")) and isinstance(record.get("status"), str)
    if ok and record["status"] in ("scored", "solution"):
        ok = _is_number(record.get("score")) and isinstance(record.get("arch"), str)
        ok = ok and (not measured or all(_is_number(record.get(k)) for k in ("macs", "params", "layers")))
    if not ok:
        raise ConfigError(f"{where} is not a zennas search history record; this history was not written by zennas")
    return record


Progress = Callable[["State"], None]  # called after every batch with the run's state


def _mutate(problem: SearchProblem, parent: ArchSpec, draws: int, rng: np.random.Generator) -> ArchSpec:
    child = parent
    for _ in range(draws):
        child = problem.search_space.mutate(child, rng)
    return child


def seed_architecture(problem: SearchProblem, init: str | None) -> ArchSpec:
    """The seed: `init` parsed in the space's dialect, or the space's first seed (a sample if it has none)."""
    space = problem.search_space
    if init is not None:
        from zennas.models import resolve_arch

        spec, _ = resolve_arch(init, space.dialect)
        reason = space.why_not(spec)
        if reason is not None:
            name = problem.to_dict()["space"]
            raise ConfigError(f"the seed architecture (init) is not a member of space {name!r}: {reason}")
        return spec
    seeds = space.initial()
    if seeds:
        return seeds[0]
    return space.sample(np.random.default_rng(problem.seed))


def _check_seed(problem: SearchProblem, spec: ArchSpec) -> dict[str, Any]:
    cost = problem.cost
    metrics, violated = cost.measure(spec)
    if violated:
        b = cost.budgets
        limits = {
            "layers": (metrics["layers"], b.max_layers, "the layer cap"),
            "params": (metrics.get("budget_params", metrics["params"]), b.params, "the params budget"),
            "macs": (metrics.get("budget_macs", metrics["macs"]), b.macs, "the FLOPs budget"),
            "latency": (metrics.get("latency_ms_per_image"), b.latency_ms_per_image, "the latency budget"),
        }
        if violated[0] == "table":
            raise ConfigError(f"the seed architecture cannot be costed: {metrics['note']}")
        value, limit, what = limits[violated[0]]
        raise ConfigError(
            f"the seed architecture is over the {violated[0]} budget ({value:.6g} > {limit:.6g}): raise {what} "
            "or start from a smaller seed architecture (Zen-NAS advice: start at about a quarter of the budget)"
        )
    return metrics


class Evolution:
    """One search run writing into `out` (see the module docstring)."""

    def __init__(
        self, problem: SearchProblem, settings: Settings, out: str | os.PathLike, *,
        make_scorer_map: Callable[[], ScoreMap] | None = None,
    ) -> None:  # fmt: skip
        """`make_scorer_map` builds the scorer map (processes, Ray) when scoring first starts, after the
        checkpoint checks; None: `problem.score_map()`, which scores in this process."""
        settings.validate()
        self.problem = problem
        self.settings = settings
        self.out = Path(out)
        self.make_scorer_map = make_scorer_map
        self.map: ScoreMap | None = None  # the scorer map, once built
        self.history_path = self.out / "history.jsonl"
        self._specs: dict[str, ArchSpec] = {}  # parsed population members (parents), by canonical text
        # Scoring seconds, count and MACs in this process: the time-limit reserve and the last batch's cut.
        self._scored_s, self._scored_n, self._scored_macs = 0.0, 0, 0
        self.state_path = self.out / "checkpoint.json"

    # -- state -----------------------------------------------------------------------------------
    def _fresh_state(self) -> State:
        spec = seed_architecture(self.problem, self.settings.init)
        metrics = _check_seed(self.problem, spec)
        scored = self._score([spec.canonical])[0]
        if scored.score is None:
            raise ConfigError(f"the seed architecture cannot be scored ({scored.note}); start from another one")
        seed = Member(spec.canonical, spec.hash, scored.score, 0, metrics, scored.values)
        self._scored_s, self._scored_n, self._scored_macs = scored.seconds, 1, metrics["macs"]
        rng = np.random.default_rng(self.problem.seed)
        counts = {name: int(name == "scored") for name in COUNTS}  # the seed is the first scored network
        return State(0, rng.bit_generator.state, [seed], {spec.hash}, 0, counts, 0.0, seed)

    def _load_state(self) -> State:
        """The checkpoint to continue, checked in full together with the history it covers; modifies nothing."""
        where = str(self.state_path)
        data = read_json_file(self.state_path, f"search checkpoint {where!r}", ConfigError)
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT or data.get("version") != STATE_VERSION:
            raise ConfigError(f"{where!r} is not a zennas search checkpoint of version {STATE_VERSION}")
        if not isinstance(data.get("problem"), dict) or not isinstance(data.get("settings"), dict):
            raise _bad_state(repr(where), "problem or settings is missing")
        problem = self.problem.to_dict()
        then, now, table = data["problem"].get("table_sha256"), problem["table_sha256"], problem["table"]
        if then is not None and then != now and data["problem"].get("table") == table:
            raise ConfigError(
                f"cannot resume: latency table {table} has changed since the run in {self.out} started "
                f"(sha256 {str(then)[:16]}... then, {str(now)[:16]}... now); restore the table it used or start "
                "the search in another folder"
            )
        settings = {k: v for k, v in self.settings.to_dict().items() if k not in RESUME_FREE}
        stored = {k: v for k, v in data["settings"].items() if k not in RESUME_FREE}
        if data["problem"] != problem or stored != settings:
            changed = sorted(
                k for k in set(data["problem"]) | set(problem) if data["problem"].get(k) != problem.get(k)
            ) + sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))  # fmt: skip
            before, after = {**data["problem"], **stored}, {**problem, **settings}
            values = "; ".join(f"{k}: {_short(before.get(k))} then, {_short(after.get(k))} now" for k in changed)
            raise ConfigError(
                f"cannot resume: the run in {self.out} was started with other settings ({', '.join(changed)}); "
                f"{values}; resume it with the same settings or start the search in another folder"
            )
        state = State.from_dict(data, self.settings, repr(where))
        if self.settings.iterations is not None and self.settings.iterations < state.iteration:
            raise ConfigError(
                f"cannot resume: the run in {self.out} has made {state.iteration} iterations already; ask for at "
                "least that many"
            )
        for name, member in [("seed_member", state.seed_member), *((f"population[{i}]", m) for i, m in
                                                                     enumerate(state.population))]:  # fmt: skip
            try:
                spec = self._parsed(member.arch)
            except ZennasError as exc:
                raise _bad_state(repr(where), f"{name}'s architecture does not parse: {exc}") from None
            if (spec.canonical, spec.hash) != (member.arch, member.hash):
                raise _bad_state(repr(where), f"{name}'s architecture is not canonical or does not match its hash")
        self._check_history(state)
        return state

    def _check_history(self, state: State) -> None:
        """history.jsonl must hold, in its first `state.history_bytes` bytes, exactly the records of
        iterations 1..`state.iteration` (lines after them are a batch the checkpoint does not cover)."""
        where = repr(str(self.history_path))
        redo = "restore it, or start the run afresh (overwrite it) instead of resuming it"
        try:
            size = self.history_path.stat().st_size
            f = open(self.history_path, "rb")  # noqa: SIM115 (closed below; open errors are reported)
        except OSError as exc:
            reason = exc.strerror or exc
            raise ConfigError(f"cannot resume: cannot read the search history {where} ({reason}); {redo}") from None
        if size < state.history_bytes:
            raise ConfigError(
                f"cannot resume: the search history {where} holds {size} bytes but the checkpoint covers "
                f"{state.history_bytes}: it was cut short; {redo}"
            )
        with f:
            left, it = state.history_bytes, 0
            while left > 0:
                line = f.readline(left)
                if not line.endswith(b"\n"):
                    raise ConfigError(f"cannot resume: the checkpoint does not end at a line of {where}; {redo}")
                left -= len(line)
                it += 1
                record = history_record(line, f"{where} line {it}", measured=True)
                if record["it"] != it:
                    raise ConfigError(f"cannot resume: {where} line {it} is iteration {record['it']}; {redo}")
        if it != state.iteration:
            raise ConfigError(
                f"cannot resume: {where} holds {it} iterations where the checkpoint covers {state.iteration}; {redo}"
            )

    def _save(self, state: State) -> None:
        atomic_write_json(self.state_path, state.to_dict(self.problem, self.settings), indent=None)

    # -- scoring ---------------------------------------------------------------------------------
    def _scorer_map(self) -> Any:
        if self.map is None:
            self.map = self.make_scorer_map() if self.make_scorer_map is not None else self.problem.score_map()
        return self.map

    def _score(self, canonicals: list[str]) -> list[Scored]:
        return self._scorer_map()(canonicals) if canonicals else []

    # -- the loop --------------------------------------------------------------------------------
    def run(self, *, resume: bool = False, overwrite: bool = False, progress: Progress | None = None) -> State:
        """Run (or continue, with `resume`) the search and return its final state.

        `out` is claimed first (zennas.io.claim_output_folder): a folder holding anything but a search is
        refused unless `overwrite`, which deletes the files a search writes and starts afresh there."""
        claim_output_folder(self.out, SEARCH_RUN, resume=resume, overwrite=overwrite)
        if resume:
            state = self._load_state()  # checkpoint and history checked in full; nothing changed yet
            if self.history_path.stat().st_size > state.history_bytes:
                with open(self.history_path, "r+b") as f:  # drop lines written after the checkpoint
                    f.truncate(state.history_bytes)
        else:
            state = self._fresh_state()
            atomic_write_bytes(self.history_path, b"")
            self._save(state)
        s = self.settings
        if state.finished and s.more_than(state):  # resumed with more iterations or more time: go on
            state.finished, state.rescored, state.stopped = False, None, None
        started = time.monotonic() - state.wall_time_s
        rng = np.random.default_rng()
        rng.bit_generator.state = state.rng
        last_saved = state.iteration
        with open(self.history_path, "ab") as history:
            while not state.finished and state.stopped is None:
                if s.iterations is not None and state.iteration >= s.iterations:
                    break
                if self._out_of_time(time.monotonic() - started):
                    state.stopped = {"reason": "time limit", "limit_s": s.time_limit_s, "at_iteration": state.iteration,
                                     "at_s": round(time.monotonic() - started, 3)}  # fmt: skip
                    break
                lines, to_score, pending = self._make_batch(state, rng, self._affordable(time.monotonic() - started))
                for scored, (it, spec, metrics) in zip(self._score(to_score), pending, strict=True):
                    lines.append(self._insert(state, it, spec, metrics, scored))
                lines.sort(key=lambda rec: rec["it"])
                self._prune(state)
                for rec in lines:
                    history.write((json.dumps(rec, allow_nan=False) + "\n").encode())
                history.flush()
                os.fsync(history.fileno())
                state.history_bytes = history.tell()
                state.rng = rng.bit_generator.state
                state.wall_time_s = time.monotonic() - started
                if state.iteration - last_saved >= s.checkpoint_every:
                    self._save(state)
                    last_saved = state.iteration
                if progress is not None:
                    progress(state)
        if not state.finished:
            if s.rescore:
                state.rescored = self._rescore(state)
            state.finished = True
            state.wall_time_s = time.monotonic() - started
            self._save(state)
        return state

    def _out_of_time(self, elapsed_s: float) -> bool:
        """Whether the time limit is reached, keeping back the time the final re-scoring will take."""
        limit = self.settings.time_limit_s
        if limit is None:
            return False
        return elapsed_s + self._rescore_seconds(self._rescore_count()) >= limit

    def _rescore_seconds(self, members: int) -> float:
        """Expected time to re-score `members` candidates (they are spread over the workers)."""
        if not self._scored_n:
            return 0.0
        workers = getattr(self.map, "workers", None) or 1
        rounds = -(-members // workers)  # ceil: each worker re-scores its share in turn
        return rounds * self.settings.rescore_repeats * self._scored_s / self._scored_n

    def _rescore_count(self) -> int:
        """How many of the best members the final re-scoring takes: `rescore`, or under a time limit as many
        as RESCORE_SHARE of the limit affords (at least one), so re-scoring never eats the search."""
        s = self.settings
        if s.time_limit_s is None or not s.rescore:
            return s.rescore
        members = s.rescore
        while members > 1 and self._rescore_seconds(members) > RESCORE_SHARE * s.time_limit_s:
            members -= 1
        return members

    def _affordable(self, elapsed_s: float) -> float | None:
        """With the funnel and a time limit: the worker-seconds of scoring left before the limit, after the
        final re-scoring's share (None: no limit, or no funnel to choose what to leave out).

        A batch then scores its children best first by the closed form only while their predicted scoring
        time (MACs x the seconds per MAC measured so far) fits, so a run whose scores take seconds ends near
        its limit rather than a whole batch past it."""
        s = self.settings
        if s.time_limit_s is None or self.screen is None or not self._scored_macs:
            return None
        workers = getattr(self.map, "workers", None) or 1
        left = s.time_limit_s - elapsed_s - self._rescore_seconds(self._rescore_count())
        return max(0.0, left) * workers

    @property
    def screen(self) -> Callable[[ArchSpec], float] | None:
        """The closed form that screens children (the funnel), or None when it is off or none exists."""
        return self.problem.screen if self.settings.funnel and self.settings.strategy == "evolution" else None

    def _make_batch(
        self, state: State, rng: np.random.Generator, affordable: float | None = None
    ) -> tuple[list[dict], list[str], list[tuple]]:
        """Children of the population as it stands, cheap checks done, scoring pending.

        Without the funnel: `batch` children. With it, `batch` x `screen_ratio` children are screened by
        the closed form and the `batch` best of them (fewer when their predicted scoring time exceeds the
        `affordable` worker-seconds; always at least one) go on to be scored; the others are
        recorded as screened (benchmarks/RESULTS.md: a hill climb by the closed form from each parent
        instead of independent children did worse).
        """
        s, screen = self.settings, self.screen
        lines: list[dict[str, Any]] = []
        pending: list[tuple[int, ArchSpec, dict[str, Any]]] = []
        parents = list(state.population)
        seed_spec = self._parsed(state.seed_member.arch)
        batch_seen: set[str] = set()
        left = s.iterations - state.iteration if s.iterations is not None else None

        def parent_and_draws() -> tuple[ArchSpec | None, int]:
            if s.strategy == "random":
                return None, 0
            if len(parents) <= SEED_PARENT_BELOW:
                return seed_spec, 1
            return self._parsed(parents[int(rng.integers(len(parents)))].arch), 2

        def screened(entry: tuple[int, ArchSpec, dict[str, Any]]) -> None:
            it, child, metrics = entry
            state.counts["screened"] += 1
            state.seen.add(child.hash)
            lines.append({"it": it, "status": "screened", "hash": child.hash, "arch": child.canonical, **metrics})

        children = s.batch * (s.screen_ratio if screen is not None else 1)
        for _ in range(children if left is None else min(children, left)):
            entry = self._new_child(state, *parent_and_draws(), rng, batch_seen, lines)
            if entry is not None:
                pending.append(entry)
        ranked = sorted(pending, key=lambda p: (-p[2]["screen"], p[0])) if screen is not None else pending
        keep = s.batch
        if affordable is not None:
            rate = self._scored_s / self._scored_macs  # seconds per MAC of the scores so far
            predicted = np.cumsum([metrics["macs"] * rate for _, _, metrics in ranked[: s.batch]])
            keep = max(1, int(np.searchsorted(predicted, affordable, side="right")))
        if screen is not None and len(pending) > keep:
            pending = sorted(ranked[:keep], key=lambda p: p[0])
            for entry in ranked[keep:]:
                screened(entry)
        return lines, [child.canonical for _, child, _ in pending], pending

    def _new_child(
        self, state: State, parent: ArchSpec | None, draws: int, rng: np.random.Generator, batch_seen: set[str],
        lines: list[dict[str, Any]],
    ) -> tuple[int, ArchSpec, dict[str, Any]] | None:  # fmt: skip
        """One iteration: a fresh child of `parent`, measured (and screened with the funnel); None, with its
        history line written, when it is a duplicate or breaks a budget."""
        s, cost, screen = self.settings, self.problem.cost, self.screen
        state.iteration += 1
        it = state.iteration
        child = self._child(parent, draws, rng)
        tries = 0
        while (child.hash in state.seen or child.hash in batch_seen) and tries < s.retries:
            child = self._child(parent, draws, rng)
            tries += 1
        if child.hash in state.seen or child.hash in batch_seen:
            state.counts["duplicate"] += 1
            lines.append({"it": it, "status": "duplicate", "hash": child.hash})
            return None
        batch_seen.add(child.hash)
        t0 = time.perf_counter()
        metrics, violated = cost.measure(child)
        if violated:
            state.counts[f"over_{violated[0]}"] += 1
            lines.append({"it": it, "status": f"over_{violated[0]}", "hash": child.hash, "arch": child.canonical,
                          **metrics, "t_check_s": round(time.perf_counter() - t0, 6)})  # fmt: skip
            state.seen.add(child.hash)
            return None
        if screen is not None:
            metrics["screen"] = screen(child)
        metrics["t_check_s"] = round(time.perf_counter() - t0, 6)
        return it, child, metrics

    def _parsed(self, arch: str) -> ArchSpec:
        spec = self._specs.get(arch)
        if spec is None:
            spec = self._specs[arch] = self.problem.parse(arch)
        return spec

    def _child(self, parent: ArchSpec | None, draws: int, rng: np.random.Generator) -> ArchSpec:
        if parent is None:
            return self.problem.search_space.sample(rng)
        return _mutate(self.problem, parent, draws, rng)

    def _insert(self, state: State, it: int, spec: ArchSpec, metrics: dict[str, Any], scored: Scored) -> dict:
        state.seen.add(spec.hash)
        t_check = metrics.pop("t_check_s")
        record = {"it": it, "hash": spec.hash, "arch": spec.canonical, **metrics, "t_check_s": t_check,
                  "t_score_s": round(scored.seconds, 6)}  # fmt: skip
        if scored.score is None:
            state.counts["degenerate"] += 1
            return {**record, "status": "degenerate", "note": scored.note}
        state.counts["scored"] += 1
        self._scored_s += scored.seconds
        self._scored_n += 1
        self._scored_macs += metrics["macs"]
        state.population.append(Member(spec.canonical, spec.hash, scored.score, it, metrics, scored.values))
        self._specs[spec.canonical] = spec
        return {**record, "status": "scored", "score": scored.score, "values": scored.values}

    def _prune(self, state: State) -> None:
        """Drop the lowest scores (newest first among ties) until the population fits."""
        excess = len(state.population) - self.settings.population
        if excess > 0:
            order = sorted(
                range(len(state.population)), key=lambda i: (state.population[i].score, -state.population[i].iteration)
            )
            drop = set(order[:excess])
            for i in drop:
                if state.population[i].arch != state.seed_member.arch:
                    self._specs.pop(state.population[i].arch, None)
            state.population = [m for i, m in enumerate(state.population) if i not in drop]

    def _rescore(self, state: State) -> list[dict[str, Any]]:
        """Mean objective over `rescore_repeats` draws for the top `rescore` members, best mean first."""
        scorer_map = self._scorer_map()
        top = sorted(state.population, key=lambda m: (-m.score, m.iteration))[: self._rescore_count()]
        out = []
        for m, values in zip(
            top, scorer_map.repeats([m.arch for m in top], self.settings.rescore_repeats), strict=True
        ):
            if values:
                std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                mean = float(np.mean(values))
                out.append({"arch": m.arch, "hash": m.hash, "single_draw": m.score, "mean": mean, "std": std,
                            "values": values})  # fmt: skip
        out.sort(key=lambda r: -r["mean"])
        return out


def best_member(state: State) -> Member:
    """The answer: the best mean after re-scoring when it ran, else the best single-draw score."""
    if state.rescored:
        winner = state.rescored[0]["hash"]
        return next(m for m in state.population if m.hash == winner)
    return max(state.population, key=lambda m: (m.score, -m.iteration))
