"""Long work (the verdict, the corpus check, corpus statistics) on worker threads, shared by every session.

A page starts a job by key; the job runs once on its own thread, whatever the sessions do meanwhile (reruns,
page switches, closed tabs), and its result stays for every session that asks for the same key. Pages draw a
job's progress themselves (`dashboard.widgets.follow_job`): nothing Streamlit draws is ever called from the
work, so a cached result never replays a stale element.
"""

from __future__ import annotations

import atexit
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import streamlit as st

import analysis
from analysis.corpus.cost import corpus_seconds, fit_seconds, token_counts
from analysis.corpus.counts import corpus_spikes, unreadable_texts
from analysis.corpus.verdict import spike_verdict
from analysis.definitions import FittedKind, Method
from analysis.fitted.fit import fit_lens
from analysis.fitted.lens import lens_paths
from analysis.model.derived import FittedFile, statistics_ready
from analysis.model.loading import load_model
from analysis.scoring.geometry import GEOMETRY_SPECS, corpus_statistics
from analysis.settings import AnalysisSettings
from dashboard.cache import BY_MODEL, cached_fitted, fitted_path


@dataclass
class Job:
    """One piece of long work: what it is, how far it got, and how it ended."""

    key: Hashable
    label: str  # what the work is, for its progress line: "Verdict"
    unit: str  # what `done` counts: "sentence"
    work: Callable[[Job], Any] = field(repr=False)  # what computes the result, given the job to report to
    phase: str = ""  # the current step, where the work has several
    done: float = 0.0
    total: float = 0.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)  # seconds, for the pace
    phase_started: float = 0.0
    paces: list[float] = field(default_factory=list)  # seconds per unit between this phase's reports
    reported: tuple[float, float] = (0.0, 0.0)  # (time, done) of the phase's last report that moved on
    result: Any = None
    error: str | None = None
    ended: float | None = None
    stop_requested: bool = False  # set when the server shuts down: the work stops at its next progress report

    def __post_init__(self) -> None:
        self.phase_started = self.clock()
        self.reported = (self.phase_started, self.done)

    @property
    def running(self) -> bool:
        return self.ended is None

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 0.0

    def progress(self, done: float, total: float) -> None:
        """The work's progress callback: `done` of `total` units of the current phase. Raises JobStopped once a
        stop is requested, which ends the work there. A report that moves on records the pace since the last."""
        if self.stop_requested:
            raise JobStopped(self.label)
        now, (before, done_before) = self.clock(), self.reported
        if done > done_before:
            self.paces.append((now - before) / (done - done_before))
            self.reported = (now, done)
        self.done, self.total = done, total

    def start_phase(self, phase: str) -> None:
        """A new step begins (its progress and pace count from 0)."""
        self.phase, self.done, self.total, self.phase_started = phase, 0.0, 0.0, self.clock()
        self.paces, self.reported = [], (self.phase_started, 0.0)

    def seconds_left(self) -> tuple[float, float] | None:
        """How long the rest of the phase takes at the job's own measured pace, low and high: the fastest and
        slowest of its last PACE_WINDOW reports after the first, whose interval carries the warm-up (loading,
        first-call costs) and says nothing of the pace. None until a report after the first."""
        measured = self.paces[1:][-PACE_WINDOW:]
        if not measured:
            return None
        left = max(self.total - self.done, 0.0)
        return left * min(measured), left * max(measured)

    def status(self) -> str:
        """`Verdict: sentence 40 of 110, about 10 to 14 s left` (from the pace measured so far)."""
        step = f"{self.phase}: " if self.phase else f"{self.label}: "
        if not self.total:
            return step + "starting…"
        count = f"{self.unit} {int(self.done):,} of {int(self.total):,}"
        left = self.seconds_left()
        if left is None:
            return step + f"{count}, measuring the pace…"
        return step + f"{count}, about {duration(*left)} left"


PACE_WINDOW = 5
"""Reports whose pace the time left is read from: recent enough to follow a machine that slows down or speeds up."""


class JobStopped(Exception):
    """A job's work was stopped before it finished (the server is shutting down)."""


def duration(low: float, high: float | None = None) -> str:
    """`8 s`, `3 min`, `1 h 20 min`: a duration as a person reads it; with `high`, a range: `10 to 14 s`,
    `50 s to 2 min`, or one duration where both read the same."""
    shown_low = _duration(low)
    if high is None or _duration(high) == shown_low:
        return shown_low
    shown_high = _duration(high)
    number, unit = shown_low.split(" ", 1)
    if shown_high.split(" ")[1:] == [unit]:  # "10 s" and "14 s": "10 to 14 s"
        return f"{number} to {shown_high}"
    return f"{shown_low} to {shown_high}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h" + (f" {minutes % 60} min" if minutes % 60 else "")


class JobBoard:
    """Jobs by key, for the whole server. Thread-safe. The `keep` most recently finished jobs stay (their results
    are small: tables of shares); older ones are dropped."""

    def __init__(self, keep: int = 16):
        self.keep = keep
        self._jobs: OrderedDict[Hashable, Job] = OrderedDict()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        atexit.register(self.stop)

    def get(self, key: Hashable) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def start(self, key: Hashable, label: str, unit: str, work: Callable[[Job], Any], *, again: bool = False) -> Job:
        """Start `work(job)` on a worker thread under `key`, unless a job with that key is running, or has
        finished and not `again`: then that job. `work` reports through `job.progress` and `job.start_phase`;
        its return value is the result, and a ValueError's message (or any other error's) the job's error."""
        with self._lock:
            found = self._jobs.get(key)
            if found is not None and (found.running or not again):
                return found
            job = Job(key, label, unit, work)
            self._jobs[key] = job
            self._jobs.move_to_end(key)
            finished = [k for k, j in self._jobs.items() if not j.running]
            for stale in finished[: max(0, len(finished) - (self.keep - 1))]:  # room for the new one's result
                del self._jobs[stale]
            thread = threading.Thread(target=self._run, args=(job, work), daemon=True, name=f"job {label}")
            self._threads = [*[t for t in self._threads if t.is_alive()], thread]
        thread.start()
        return job

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every running job to stop and wait (up to `timeout` seconds in all) for their threads to end, so
        the process never exits with a worker inside the model's native code."""
        with self._lock:
            for job in self._jobs.values():
                job.stop_requested = True
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def retry(self, job: Job) -> Job:
        """Run a finished job's work again (after it failed, say), under the same key."""
        return self.start(job.key, job.label, job.unit, job.work, again=True)

    @staticmethod
    def _run(job: Job, work: Callable[[Job], Any]) -> None:
        try:
            job.result = work(job)
        except JobStopped:
            job.error = "Stopped before it finished: the server shut down."
        except ValueError as error:
            job.error = str(error)
        except Exception as error:  # a worker thread has no page to show a traceback on: keep the message
            job.error = f"{type(error).__name__}: {error}"
        finally:
            job.ended = time.monotonic()


@st.cache_resource(show_spinner=False)
def job_board() -> JobBoard:
    """The server's one job board (every session shares it)."""
    return JobBoard()


def _model_of(lm: analysis.LoadedModel) -> Callable[[], analysis.LoadedModel]:
    """What loads `lm` in the worker (the page's model, already checked): by name, from the package's model cache,
    on its device, so that a finished job holds no model (a released model is freed)."""
    name, device = lm.name, lm.device

    def load() -> analysis.LoadedModel:
        loaded = load_model(name)
        loaded.move_to(device)
        return loaded

    return load


def _statistics_first(job: Job, lm: analysis.LoadedModel, stage: analysis.Stage, needed: bool = True) -> None:
    """The job's first phase where its work needs this model's corpus statistics of `stage` and they are missing:
    computing them (`corpus_statistics`)."""
    if needed and not statistics_ready(lm, stage):
        job.start_phase(f"Corpus statistics of {stage} in {lm.name}")
        corpus_statistics(lm, stage, job.progress)


def background_job(lm: analysis.LoadedModel, stage: analysis.Stage) -> Job | None:
    """None when this model's corpus statistics of `stage` are ready; else the job computing them (started here
    when none runs: also after the model was released and loaded again, which drops them)."""
    if statistics_ready(lm, stage):
        return None
    key = ("background", lm.name, stage)
    found = job_board().get(key)
    if found is not None and (found.running or found.error):
        return found
    lm_of = _model_of(lm)
    return job_board().start(
        key, f"Corpus statistics of {stage}", "sentence", lambda job: _statistics_first(job, lm_of(), stage), again=True
    )


def _verdict_key(model: str, settings: AnalysisSettings) -> tuple:
    return ("verdict", model, settings.stage, settings.reference, settings.rogue_k)


def find_verdict(lm: analysis.LoadedModel, settings: AnalysisSettings) -> Job | None:
    """The verdict job of these settings (their stage, reference and rogue_k), running or finished, if one was
    started."""
    return job_board().get(_verdict_key(lm.name, settings))


def verdict_job(lm: analysis.LoadedModel, settings: AnalysisSettings) -> Job:
    """The verdict over the shipped corpus (every method, at the settings' stage, reference and rogue_k), started
    when none runs for them; it first computes the corpus statistics its geometries need, where they are missing."""
    lm_of = _model_of(lm)

    def work(job: Job) -> pd.DataFrame:
        loaded = lm_of()
        _statistics_first(job, loaded, settings.stage)
        job.start_phase("Verdict")
        return spike_verdict(loaded, settings, on_progress=job.progress)

    return job_board().start(_verdict_key(lm.name, settings), "Verdict", "sentence", work)


def masked_lens_job(
    lm: analysis.LoadedModel, text: str, stage: analysis.Stage, top_k: int, fitted_file: FittedFile | None = None
) -> Job:
    """The masked lens of `text` (one copy per token, each hidden behind the mask token; through the fitted lens
    `fitted_file` where given), started when none ran for these settings: it runs the model on every copy, so it
    is long work for a long text."""
    lm_of = _model_of(lm)

    def work(job: Job) -> analysis.LensResult:
        job.start_phase(f"Masked lens of {lm.name}")
        fitted = None if fitted_file is None else cached_fitted(fitted_file)
        return analysis.lens(
            lm_of(), text, stage=stage, top_k=top_k, masked=True, fitted=fitted, on_progress=job.progress
        )

    key = ("masked_lens", lm.name, text, stage, top_k, fitted_file)
    return job_board().start(key, "Masked lens", "masked copy", work)


def _fit_key(lm: analysis.LoadedModel, stage: analysis.Stage, kind: str) -> tuple:
    return ("fit_lens", lm.name, lm.revision, stage, kind)


def find_fit(lm: analysis.LoadedModel, stage: analysis.Stage, kind: str) -> Job | None:
    """The job fitting the `kind` lens of `lm` at `stage`, running or finished, if one was started."""
    return job_board().get(_fit_key(lm, stage, kind))


def fit_lens_job(
    lm: analysis.LoadedModel, stage: analysis.Stage, kind: FittedKind, texts: tuple[str, ...], source: str
) -> Job:
    """Fit the `kind` lens of `lm` at `stage` on `texts` (named `source`) and keep it where every session finds it
    (`fitted_path`), replacing the one there; started again on request, so a reader can refit on other texts. Its
    result: the fitted lens's record."""
    lm_of = _model_of(lm)
    path = fitted_path(lm, stage, kind)

    def work(job: Job) -> dict:
        job.start_phase(f"Fitting the {kind} lens of {lm.name} on {source}")
        fitted = fit_lens(lm_of(), list(texts), stage=stage, kind=kind, on_progress=job.progress)
        fitted.record["texts"]["source"] = source
        staging = path.with_name(path.name + ".partial")
        written = fitted.save(staging)
        for file, final in zip(written, lens_paths(path), strict=True):  # the record last: a reader never sees
            file.replace(final)  # a record naming weights not yet in place
        return fitted.record

    return job_board().start(_fit_key(lm, stage, kind), f"Fitting the {kind} lens", "token", work, again=True)


def _corpus_key(model: str, settings: AnalysisSettings, texts: tuple[str, ...]) -> tuple:
    scoring = (settings.stage, settings.reference, settings.geometry, settings.rogue_k)
    return ("corpus", model, scoring, hashlib.sha256("\n".join(texts).encode()).hexdigest())


def find_corpus(lm: analysis.LoadedModel, settings: AnalysisSettings, texts: tuple[str, ...]) -> Job | None:
    """The corpus check job of these settings and texts, running or finished, if one was started."""
    return job_board().get(_corpus_key(lm.name, settings, texts))


def corpus_job(lm: analysis.LoadedModel, settings: AnalysisSettings, texts: tuple[str, ...], source: str) -> Job:
    """The corpus check of `texts` (named `source`) under the settings' geometry, started when none runs. Its
    result: the spike shares, and the indices of the texts skipped for having no token the model reads."""
    lm_of = _model_of(lm)

    def work(job: Job) -> tuple[pd.DataFrame, list[int]]:
        loaded = lm_of()
        _statistics_first(job, loaded, settings.stage, needed=GEOMETRY_SPECS[settings.geometry].needs_background)
        job.start_phase(f"Corpus check of {source}")
        shares = corpus_spikes(loaded, list(texts), settings, on_progress=job.progress)
        return shares, unreadable_texts(loaded, list(texts))

    return job_board().start(_corpus_key(lm.name, settings, texts), "Corpus check", "text", work)


@st.cache_data(ttl=30, show_spinner=False, hash_funcs=BY_MODEL)
def estimated_fit(lm: analysis.LoadedModel, texts: tuple[str, ...], kind: FittedKind) -> tuple[int, float, float]:
    """The tokens of `texts` and how long fitting a `kind` lens on them takes here now, low and high
    (`analysis.corpus.cost.fit_seconds`, redone after 30 s)."""
    low, high = fit_seconds(lm, list(texts), kind)
    return token_counts(lm, list(texts))[0], low, high


@st.cache_data(ttl=30, show_spinner=False, hash_funcs=BY_MODEL)
def estimated_seconds(
    lm: analysis.LoadedModel,
    texts: tuple[str, ...],
    methods: tuple[Method, ...],
    classes: tuple[str, ...] | None,
    with_statistics: bool,
) -> tuple[float, float]:
    """How long the counting engine takes on `texts` here now, low and high (`analysis.corpus.cost`: a timed
    probe, redone after 30 s so the estimate follows the machine's load), with the corpus statistics' forward
    passes where they must be computed first."""
    return corpus_seconds(lm, list(texts), methods, classes=classes, forward_passes=1 + with_statistics)
