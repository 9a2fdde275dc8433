"""Long work on the server's job board: each job runs once on its own thread, its result stays for every
session, failures keep their message, and the board keeps a bounded number of finished jobs."""

import threading
import time

import pytest

from dashboard.jobs import Job, JobBoard, duration


def wait(job: Job, timeout: float = 30) -> Job:
    deadline = time.monotonic() + timeout
    while job.running:
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.01)
    return job


def test_a_job_runs_once_and_its_result_stays_for_every_caller():
    board = JobBoard()
    release, calls = threading.Event(), []

    def work(job: Job) -> str:
        calls.append(threading.current_thread().name)
        job.start_phase("Counting")
        job.progress(1, 4)
        release.wait(10)
        return "done"

    first = board.start("key", "Verdict", "sentence", work)
    again = board.start("key", "Verdict", "sentence", work)  # a second session asks while it runs
    assert again is first and first.running
    while first.total == 0:
        time.sleep(0.01)
    assert first.fraction == 0.25 and first.status().startswith("Counting: sentence 1 of 4")
    release.set()
    assert wait(first).result == "done" and first.error is None
    assert board.start("key", "Verdict", "sentence", work) is first  # finished: the same result, not rerun
    assert len(calls) == 1 and calls[0] != threading.current_thread().name  # on a worker thread
    rerun = board.start("key", "Verdict", "sentence", work, again=True)
    assert rerun is not first and wait(rerun).result == "done" and len(calls) == 2


@pytest.mark.parametrize(
    ("error", "message"), [(ValueError("rogue_k must be a whole number"), "rogue_k must be a whole number"),
                           (RuntimeError("out of memory"), "RuntimeError: out of memory")],
)  # fmt: skip
def test_a_failed_job_keeps_its_message(error, message):
    def work(job: Job) -> None:
        raise error

    board = JobBoard()
    job = wait(board.start("key", "Corpus check", "text", work))
    assert job.error == message and job.result is None
    retried = wait(board.retry(job))
    assert retried is not job and board.get("key") is retried and retried.error == message


def test_the_board_keeps_a_bounded_number_of_finished_jobs_but_never_drops_a_running_one():
    board = JobBoard(keep=2)
    release = threading.Event()
    running = board.start("slow", "slow", "x", lambda job: release.wait(10))
    for key in range(4):
        wait(board.start(key, "quick", "x", lambda job, key=key: key))
    assert board.get("slow") is running
    assert [key for key in range(4) if board.get(key) is not None] == [2, 3]
    release.set()
    wait(running)


def test_durations_read_as_people_say_them():
    assert [duration(s) for s in (0.2, 8.4, 59, 61, 3500, 3599, 4800)] == [
        "1 s", "8 s", "59 s", "1 min", "58 min", "1 h", "1 h 20 min"
    ]  # fmt: skip
    assert [duration(*pair) for pair in ((9.6, 14.2), (50, 130), (61, 64), (3000, 5000))] == [
        "10 to 14 s", "50 s to 2 min", "1 min", "50 min to 1 h 23 min"
    ]  # fmt: skip


def test_the_time_left_comes_from_the_jobs_own_pace_after_its_first_batch(minilm):
    """The real counting engine, slowed on purpose: on the job's clock each text costs 2 s and the first report
    30 s more (a warm-up). Until its second report the job says it is measuring the pace; from then on its
    range holds the time the rest really takes; and the warm-up never reads as minutes to go."""
    from analysis.corpus.counts import corpus_counts
    from analysis.data import corpus_sentences
    from analysis.settings import SweepSettings

    now = [100.0]
    job = Job("slow", "Corpus check", "text", lambda job: None, clock=lambda: now[0])
    job.start_phase("Corpus check")
    assert job.status() == "Corpus check: starting…"
    reports = []

    def report(done: float, total: float) -> None:
        now[0] += 2.0 * (done - job.done) + (30.0 if not reports else 0.0)
        job.progress(done, total)
        reports.append((now[0], done, total, job.status(), job.seconds_left()))

    settings = SweepSettings(reference="position")
    corpus_counts(minilm, corpus_sentences()[:24], settings, batch_tokens=64, on_progress=report)
    assert len(reports) >= 5 and reports[-1][1] == reports[-1][2] == 24
    assert reports[0][4] is None and "measuring the pace" in reports[0][3]  # the warm-up is no pace
    for _, done, total, line, (low, high) in reports[1:]:
        assert low - 1e-9 <= 2.0 * (total - done) <= high + 1e-9, line  # the rest takes 2 s a text
    assert not any("min left" in line for *_, line, _ in reports)
    assert Job("k", "x", "text", lambda job: None, total=4).status() == "x: text 0 of 4, measuring the pace…"


def test_an_estimate_before_the_work_follows_the_machines_pace_now(minilm, monkeypatch):
    """The estimate times a probe of the scoring's own product each time it is asked: a machine slowed on purpose
    (each product 1 s slower: more than another worker's stall can slow the quick probe) gives a longer estimate at
    once, not the speed measured when the model loaded."""
    import analysis.corpus.cost as cost
    from analysis.corpus.cost import corpus_seconds
    from analysis.data import corpus_sentences

    texts = corpus_sentences()[:5]
    quick_low, quick_high = corpus_seconds(minilm, texts, ("cosine",))
    assert 0 < quick_low < quick_high
    product = cost.torch.matmul

    def slowed(*args, **kwargs):
        time.sleep(1.0)
        return product(*args, **kwargs)

    monkeypatch.setattr(cost.torch, "matmul", slowed)
    slow_low, slow_high = corpus_seconds(minilm, texts, ("cosine",))
    assert slow_low > quick_high and slow_low < slow_high


def test_stopping_the_board_ends_running_work_at_its_next_progress_report():
    """At shutdown (the board's atexit hook) running work is asked to stop and waited for, so the process never
    exits with a worker thread inside the model's native code."""
    board, reports = JobBoard(), []

    def work(job: Job) -> str:
        for step in range(10_000):
            job.progress(step, 10_000)
            reports.append(step)
            time.sleep(0.001)
        return "finished"

    job = board.start("key", "Verdict", "sentence", work)
    while not reports:
        time.sleep(0.01)
    board.stop(timeout=10)
    assert not job.running and job.result is None and "server shut down" in job.error
    assert len(reports) < 10_000
