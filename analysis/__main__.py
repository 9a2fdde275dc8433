"""Command line: `python -m analysis export --model NAME --text TEXT --out DIR`,
`python -m analysis verdict --model NAME --out DIR`, `python -m analysis sweep --model NAME --input FILE
--out DIR` and `python -m analysis fit-lens --model NAME --input FILE --out FILE`. Each command says on stderr
what it is doing as it goes; results go to files, their paths to stdout."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from analysis.definitions import (
    BUNDLED_MODEL,
    DEVICES,
    EXPORT_FILES,
    FITTED_KINDS,
    FORMATS,
    GEOMETRIES,
    LENS_FILES,
    LENS_ROW_COLUMNS,
    LENS_STAGE,
    LENS_TARGETS,
    LENS_TOP_K,
    METHODS,
    REFERENCES,
    ROW_COLUMNS,
    SCORE_TOKENS,
    STAGES,
    TUNED_STARTS,
    TUNED_TOKENS,
    VERDICT_COLUMNS,
)
from analysis.settings import DEFAULTS, AnalysisSettings, SweepSettings

# Each command imports the analysis (torch, transformers) when it runs, so that `--help` answers at once.


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _whole(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {value!r}")
    return int(value)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}")
    return int(value)


def _columns_help() -> str:
    lines = ["files written to --out:"]
    for name, columns in EXPORT_FILES.items():
        lines.append(f"  {name}")
        lines.extend(f"    {column:<14} {meaning}" for column, meaning in columns.items())
    lines.append("  provenance.json  model id, revision, dtype, stage, reference, versions, truncation")
    lines.append("with --lens, also:")
    for name, columns in LENS_FILES.items():
        lines.append(f"  {name}")
        lines.extend(f"    {column:<15} {meaning}" for column, meaning in columns.items())
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m analysis", description="Token Trails: trace token encodings layer by layer."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    export = _command(
        commands,
        "export",
        "analyse a text and write tidy CSV tables",
        "Analyse TEXT with MODEL and write tidy CSV tables plus provenance.json to DIR.",
        _columns_help(),
    )
    _model_argument(export)
    export.add_argument("--text", required=True, help="the text to analyse (truncated to the model's length, reported)")
    _stage_and_reference_arguments(export)
    _geometry_arguments(export)
    export.add_argument(
        "--top-k",
        type=_positive,
        default=DEFAULTS.top_k,
        help=f"nearest vocabulary neighbours kept per token and layer ({DEFAULTS.top_k})",
    )
    export.add_argument(
        "--overlap-n",
        type=_positive,
        default=DEFAULTS.overlap_n,
        help=f"neighbourhood size N for the overlap counts ({DEFAULTS.overlap_n})",
    )
    export.add_argument(
        "--lens",
        action="store_true",
        help="also write what each layer would predict at --stage through the model's own head (lens.csv, "
        "lens_top.csv); the classic logit lens reads --stage layer_output",
    )
    export.add_argument(
        "--lens-target",
        choices=list(LENS_TARGETS),
        help="the token the lens scores (default: next for decoders, own for encoders): "
        + "; ".join(f"{k}: {v}" for k, v in LENS_TARGETS.items()),
    )
    export.add_argument(
        "--lens-masked",
        action="store_true",
        help="encoders: hide each token behind the mask token in turn (one copy of the text per token)",
    )
    export.add_argument(
        "--lens-top-k", type=_positive, default=LENS_TOP_K, help=f"predictions kept per layer and token ({LENS_TOP_K})"
    )
    _lens_fitted_argument(export)
    _max_tokens_argument(export)
    export.add_argument("--out", required=True, type=Path, help="folder to write into (created if missing)")

    verdict_columns = "\n".join(f"  {k:<11} {v}" for k, v in VERDICT_COLUMNS.items())
    verdict = _command(
        commands,
        "verdict",
        "is the spike real? spike shares per method over the shipped corpus",
        "Over the shipped corpus, the share of function and content words that spike at each layer under the "
        "original demo's computation and under each geometry, with 95% Wilson intervals: verdict.csv, "
        "verdict.png, verdict.txt (a summary sentence) and provenance.json in DIR.",
        "verdict.csv columns:\n" + verdict_columns,
    )
    _model_argument(verdict)
    _stage_and_reference_arguments(verdict)
    _rogue_k_argument(verdict)
    verdict.add_argument("--out", required=True, type=Path, help="folder to write into (created if missing)")

    sweep = _command(
        commands,
        "sweep",
        "the analysis over a whole corpus: a resumable batch job writing a Parquet dataset",
        "Analyse every text of FILE with MODEL, batched, and write one Parquet file per shard, "
        "summary.csv (spike shares per method, layer and word class, 95% Wilson intervals), summary.png/.svg, with "
        "--lens commitment.csv (the share of each word class committed by each layer, 95% Wilson intervals) "
        "and provenance.json to DIR. Stopped (Ctrl-C, a killed process), the same command continues from the "
        "first missing shard; a finished sweep is left as it is; another sweep's DIR is refused.",
        "input: "
        + "; ".join(f"{ext} {meaning}" for ext, meaning in FORMATS.items())
        + "\nrow columns:\n"
        + "\n".join(f"  {k:<12} {v}" for k, v in {**ROW_COLUMNS, **LENS_ROW_COLUMNS}.items()),
    )
    _model_argument(sweep)
    sweep.add_argument(
        "--input", metavar="FILE", required=True, type=Path, help="the texts: .txt, .jsonl, .csv or .parquet"
    )
    sweep.add_argument(
        "--out", metavar="DIR", required=True, type=Path, help="the dataset's folder (created if missing)"
    )
    _stage_and_reference_arguments(sweep)
    sweep.add_argument(
        "--method",
        "--geometry",
        dest="methods",
        action="extend",
        nargs="+",
        choices=list(METHODS),
        help="methods to score under (several: --method cosine no_rogue; default cosine; --geometry is the same "
        "option): " + "; ".join(f"{k}: {v}" for k, v in METHODS.items()),
    )
    _rogue_k_argument(sweep)
    sweep.add_argument(
        "--lens",
        action="store_true",
        help="add the lens columns (lens_rank, lens_prob, entropy, kl_final, lens_commit_layer) at --stage, through "
        "the model's own head",
    )
    _lens_fitted_argument(sweep)
    _max_tokens_argument(sweep)
    sweep.add_argument("--batch-tokens", type=_positive, default=4096, help="padded tokens per forward pass (4096)")
    sweep.add_argument("--shard-size", type=_positive, default=1000, help="texts per Parquet file (1000)")
    sweep.add_argument("--limit", type=_positive, help="analyse only the first N non-empty texts")
    sweep.add_argument("--device", choices=list(DEVICES), default="auto", help="auto: CUDA or MPS if present, else CPU")
    sweep.add_argument("--engine", choices=["local", "ray"], default="local", help="local (default) or ray")
    sweep.add_argument("--ray-address", help="a running Ray cluster (default: start a local Ray)")
    sweep.add_argument("--actors", type=_positive, default=2, help="Ray actors, each holding the model (2)")

    fit = _command(
        commands,
        "fit-lens",
        "fit a lens to the model: the linear shortcut or the tuned lens, scored on held-out texts",
        "Fit one affine map per layer from MODEL's vectors at --stage to its last layer's output, on the texts of "
        "FILE, and write the maps (FILE.safetensors) and their record (FILE.json: model, stage, kind, texts' hash, "
        "split, tokens, ridge, budget, held-out scores per layer, versions). One text in five is held out and scored "
        "only; one in five chooses the ridge. Read it with export --lens --lens-fitted FILE.",
        "kinds:\n" + "\n".join(f"  {kind:<7} {meaning}" for kind, meaning in FITTED_KINDS.items()),
    )
    _model_argument(fit)
    fit.add_argument(
        "--input", metavar="FILE", required=True, type=Path, help="the texts: .txt, .jsonl, .csv or .parquet"
    )
    fit.add_argument(
        "--out", metavar="FILE", required=True, type=Path, help="the fitted lens (FILE.safetensors and FILE.json)"
    )
    fit.add_argument("--kind", choices=list(FITTED_KINDS), default="linear", help="linear (default) or tuned")
    fit.add_argument(
        "--stage",
        choices=list(STAGES),
        default=LENS_STAGE,
        help=f"where in each block the maps read the vector ({LENS_STAGE}, the classic logit lens's)",
    )
    fit.add_argument(
        "--tuned-tokens",
        type=_positive,
        default=TUNED_TOKENS,
        help=f"tuned: token reads the training makes ({TUNED_TOKENS:,})",
    )
    fit.add_argument(
        "--tuned-start",
        choices=list(TUNED_STARTS),
        default="linear",
        help="tuned: where training starts: " + "; ".join(f"{k}: {v}" for k, v in TUNED_STARTS.items()),
    )
    fit.add_argument(
        "--score-tokens",
        type=_whole,
        default=SCORE_TOKENS,
        help=f"held-out tokens the KL, top-1 and rank scores read ({SCORE_TOKENS:,}; 0: none; r² reads all)",
    )
    _max_tokens_argument(fit)
    fit.add_argument("--device", choices=list(DEVICES), default="auto", help="auto: CUDA or MPS if present, else CPU")
    return parser


def _command(
    commands: argparse._SubParsersAction, name: str, summary: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    """A subcommand with its one-line `summary`, its `description` and an `epilog` laid out as written."""
    return commands.add_parser(
        name, help=summary, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def _model_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--model", required=True, help=f"hub id (roberta-base), local folder, or {BUNDLED_MODEL} (offline)"
    )


def _stage_and_reference_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--stage",
        choices=list(STAGES),
        default=DEFAULTS.stage,
        help="where in each block to read the vector: " + "; ".join(f"{k}: {v}" for k, v in STAGES.items()),
    )
    command.add_argument(
        "--reference",
        choices=list(REFERENCES),
        default=None,
        help="what 'original embedding' means (default: position where the model has an absolute position table, "
        "else embedding): " + "; ".join(f"{k}: {v}" for k, v in REFERENCES.items()),
    )


def _geometry_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--geometry",
        choices=list(GEOMETRIES),
        default=DEFAULTS.geometry,
        help="how vectors and references are compared: " + "; ".join(f"{k}: {v}" for k, v in GEOMETRIES.items()),
    )
    _rogue_k_argument(command)


def _rogue_k_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--rogue-k", type=_whole, default=DEFAULTS.rogue_k, help=f"dimensions removed by no_rogue ({DEFAULTS.rogue_k})"
    )


def _lens_fitted_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--lens-fitted",
        metavar="FILE",
        type=Path,
        help="read each layer through this fitted lens's maps first (python -m analysis fit-lens; fitted on this "
        "model at --stage)",
    )


def _max_tokens_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--max-tokens",
        type=_positive,
        help="the longest text read whole, special tokens included; longer texts are cut there and marked "
        "truncated (default: the model's position limit or what one text's pass holds within the memory budget, "
        "the lower; see README)",
    )


def _say(message: str) -> None:
    """A line on stderr saying what the command is doing now."""
    print(message, file=sys.stderr, flush=True)


def _counter(desc: str, unit: str) -> tuple[Callable[[float, float], None], Callable[[], None]]:
    """`on_progress(done, total)` that draws a progress bar (`analysis.progress`), made at the first call, so work
    that turns out to be done already draws none; and `close()`."""
    import time

    from analysis.progress import progress_bar

    bars: list[Any] = []
    started = time.monotonic()

    def on_progress(done: float, total: float) -> None:
        if not bars:
            bars.append(progress_bar(total, desc, unit, started=started))
        bars[0].update(int(done) - bars[0].n)  # whole units: "15 of 110 sentences", never 15.1077…

    def close() -> None:
        if bars:
            bars[0].close()

    return on_progress, close


def _load(name: str):
    from analysis.model.loading import load_model

    _say(f"loading {name}…")
    return load_model(name)


def _export(args: argparse.Namespace) -> list[Path]:
    from dataclasses import asdict

    from analysis.capture.trace import trace
    from analysis.checks import check_text
    from analysis.model.loading import outline_model
    from analysis.output.export import write_export
    from analysis.report.lens import lens
    from analysis.report.result import analyze

    if (args.lens_masked or args.lens_target or args.lens_fitted) and not args.lens:
        raise ValueError(
            "--lens-masked, --lens-target and --lens-fitted choose how the lens reads: add --lens to export it."
        )
    check_text(args.text)
    fitted = _fitted(args.lens_fitted)
    settings = _check_export(outline_model(args.model) or _load(args.model), args, fitted)  # a hub model loads
    lm = _load(args.model)
    _say(
        f"tracing the text through {lm.num_layers} layers of {lm.name} and scoring every token against "
        f"all {lm.vocab_size:,} vocabulary items…"
    )
    run = trace(lm, args.text, {args.stage, "layer_output"} if args.lens else {args.stage}, args.max_tokens)
    result = analyze(lm, run, **asdict(settings))
    lens_result = None
    if args.lens:
        masked = " with each token masked in turn" if args.lens_masked else ""
        _say(f"reading every layer through {lm.name}'s own head{masked}…")
        lens_result = lens(
            lm,
            run,
            stage=args.stage,
            target=args.lens_target,
            top_k=args.lens_top_k,
            masked=args.lens_masked,
            fitted=fitted,
        )
    if result.truncated:
        _say(
            f"note: the text was truncated to {len(result.tokens)} tokens (of {result.n_tokens_in_text} in the text), "
            f"cut at character {result.truncated_at_char}."
        )
    _say(f"writing {len(EXPORT_FILES) + 1 + (len(LENS_FILES) if args.lens else 0)} files to {args.out}…")
    return write_export(result, args.out, lens_result)


def _fitted(path: Path | None):
    """The fitted lens at `path` (None: none), read and checked against its record before any model loads."""
    if path is None:
        return None
    from analysis.fitted.lens import load_fitted

    return load_fitted(path)


def _check_export(lm, args: argparse.Namespace, fitted) -> AnalysisSettings:
    """The export's settings resolved against `lm` (its outline, before the model loads), and what else it cannot
    do refused: the lens, its count of predictions, a fitted lens of another model or stage, and the length."""
    from analysis.model.capabilities import check_lens, check_max_tokens, check_vocabulary_count

    settings = AnalysisSettings(args.stage, args.reference, args.geometry, args.rogue_k, args.top_k, args.overlap_n)
    resolved = settings.resolve(lm)
    if args.lens:
        check_lens(lm, args.lens_masked)
        check_vocabulary_count(lm, "top_k", args.lens_top_k)
        if fitted is not None:
            fitted.check_for(lm, args.stage)
    if args.max_tokens is not None:
        check_max_tokens(lm, args.max_tokens)
    return resolved


def _verdict(args: argparse.Namespace) -> list[Path]:
    from analysis.corpus.verdict import spike_verdict, verdict_methods, verdict_summary
    from analysis.model.capabilities import demo_unavailable
    from analysis.output.export import write_verdict
    from analysis.scoring.geometry import background, corpus_statistics
    from analysis.version import provenance as provenance_record

    lm = _load(args.model)
    settings = AnalysisSettings(stage=args.stage, reference=args.reference, rogue_k=args.rogue_k).resolve(lm)
    on_progress, close = _counter("corpus statistics", "sentence")
    corpus_statistics(lm, settings.stage, on_progress)
    close()
    on_progress, close = _counter("verdict", "sentence")
    verdict = spike_verdict(lm, settings, on_progress=on_progress)
    close()
    provenance = provenance_record(
        lm,
        stage=settings.stage,
        reference=settings.reference,
        rogue_k=settings.rogue_k,
        methods=verdict_methods(demo_unavailable(lm) is None),
        corpus=background(lm, settings.stage, settings.chosen_reference).corpus,
    )
    _say(f"writing verdict.csv, verdict.png, verdict.txt and provenance.json to {args.out}…")
    return write_verdict(verdict, verdict_summary(verdict), provenance, args.out)


def _sweep(args: argparse.Namespace) -> list[Path]:
    from dataclasses import replace

    from analysis.devices import resolve_device
    from analysis.model.loading import outline_model, resolve_model
    from analysis.output.sweep import check_sweep_folder, finished_sweep, open_sweep, recorded_reference

    device = resolve_device(args.device)
    if args.engine == "ray":
        from analysis.output import ray_engine  # Ray is optional: imported only when asked for

        ray_engine.require_ray()
    if not Path(args.input).expanduser().is_file():
        raise ValueError(f"No input file at {str(args.input)!r}: give --input a .txt, .jsonl, .csv or .parquet file.")
    model = resolve_model(args.model).name
    finished = finished_sweep(args.out)  # a finished one is checked and left as it is, without loading the model
    outline = None if finished else outline_model(args.model) or _load(args.model)  # a hub model not yet here loads
    settings = SweepSettings(
        stage=args.stage,
        reference=args.reference or recorded_reference(args.out),
        rogue_k=args.rogue_k,
        methods=tuple(dict.fromkeys(args.methods or ["cosine"])),
        lens=args.lens,
        max_tokens=args.max_tokens,
    )
    fitted = _fitted(args.lens_fitted)  # read and checked against its record before the folder is claimed
    if fitted is not None:
        settings = replace(
            settings, lens_fitted=str(args.lens_fitted.expanduser().resolve()),
            lens_fitted_sha256=fitted.record["weights_sha256"],
        )  # fmt: skip
    identity = {"model": model, "settings": settings, "shard_size": args.shard_size, "limit": args.limit}
    if outline is not None:  # refused before the folder is claimed
        identity["settings"] = settings.resolve(outline)
        if fitted is not None:
            fitted.check_for(outline, settings.stage)
        check_sweep_folder(args.out, args.input, **identity)
    _say(f"reading {args.input} into {args.out}…")
    sweep = open_sweep(args.out, args.input, **identity, input_name=str(args.input))  # the input read, or refused
    with sweep:
        return _run_sweep(args, sweep, device, ray_engine if args.engine == "ray" else None)


def _run_sweep(args: argparse.Namespace, sweep, device, ray_engine) -> list[Path]:
    notes = "; ".join(sweep.notes)
    _say(f"{sweep.sentences:,} texts from {args.input}" + (f" ({notes})" if notes else ""))
    if not sweep.missing() and sweep.finished:
        _say(f"nothing to do: {args.out} already holds this finished sweep ({sweep.sentences:,} texts).")
        return _sweep_outputs(args.out)
    lm = _load(args.model)  # once its outline, its folder and its input have passed
    sweep.settings.resolve(lm)
    lm.move_to(device)
    runner = None
    if ray_engine is not None:
        runner = ray_engine.ray_shard_runner(
            args.model, sweep, batch_tokens=args.batch_tokens, device=args.device, address=args.ray_address,
            actors=args.actors,
        )  # fmt: skip
    _say(f"{lm.name} on {device}: {len(sweep.missing()):,} of {sweep.shards:,} shards to compute")
    on_progress, close = _counter("sweep", "text")
    try:
        report = sweep.run(
            lm, batch_tokens=args.batch_tokens, engine=args.engine, run_shards=runner, on_progress=on_progress
        )
    except KeyboardInterrupt:
        close()
        _say(f"stopped: run the same command again to continue from the first missing shard in {args.out}.")
        raise
    close()
    if report.truncated:
        _say(
            f"note: {len(report.truncated):,} texts were cut at {sweep.settings.max_tokens or lm.max_tokens} tokens "
            "(column truncated; their ids are in provenance.json)."
        )
    if report.unreadable:
        _say(
            f"note: {len(report.unreadable):,} texts have no token the model reads (only spaces, control or "
            "zero-width characters) and were skipped; their ids are in provenance.json (unreadable_sentence_ids)."
        )
    if len(report.unreadable) == report.sentences:
        _say(
            f"note: none of the {report.sentences:,} texts has a token {lm.name} reads: the dataset and the summary "
            "are empty."
        )
    return _sweep_outputs(args.out)


def _sweep_outputs(out: Path) -> list[Path]:
    """The files a finished sweep holds (no chart where no text was readable)."""
    return [
        out / name
        for name in ("summary.csv", "summary.png", "summary.svg", "commitment.csv", "provenance.json")
        if (out / name).exists()
    ]


def _fit_lens(args: argparse.Namespace) -> list[Path]:
    from analysis.corpus.texts import read_texts
    from analysis.devices import resolve_device
    from analysis.fitted.fit import fit_lens
    from analysis.fitted.lens import lens_paths
    from analysis.model.capabilities import check_lens, check_max_tokens, check_stage
    from analysis.model.loading import outline_model

    device = resolve_device(args.device)
    taken = [str(path) for path in lens_paths(args.out) if path.exists()]
    if taken:
        raise ValueError(f"{' and '.join(taken)} already exist: choose another --out, or remove them to fit again.")
    outline = outline_model(args.model) or _load(args.model)  # a hub model not yet here loads
    check_stage(outline, args.stage)
    if args.kind == "tuned":
        check_lens(outline)
    if args.max_tokens is not None:
        check_max_tokens(outline, args.max_tokens)
    texts = read_texts(args.input)
    notes = "; ".join(texts.count.notes())
    _say(f"{len(texts.texts):,} texts from {args.input}" + (f" ({notes})" if notes else ""))
    lm = _load(args.model)
    lm.move_to(device)
    on_progress, close = _counter(f"fitting the {args.kind} lens", "token")
    fitted = fit_lens(
        lm,
        texts.texts,
        stage=args.stage,
        kind=args.kind,
        tuned_tokens=args.tuned_tokens,
        tuned_start=args.tuned_start,
        score_tokens=args.score_tokens,
        max_tokens=args.max_tokens,
        on_progress=on_progress,
    )
    close()
    fitted.record["texts"]["input_sha256"] = texts.count.sha256
    for note in fitted.record["notes"]:
        _say(f"note: {note}")
    _say("held-out scores (r² in hidden space; KL in nats, top-1 agreement, median target rank):")
    _say(fitted.scores.to_string(index=False, float_format=lambda value: f"{value:.4g}"))
    return fitted.save(args.out)


COMMANDS = {"export": _export, "verdict": _verdict, "sweep": _sweep, "fit-lens": _fit_lens}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import transformers

    transformers.utils.logging.disable_progress_bar()
    try:
        written = COMMANDS[args.command](args)
    except (ValueError, OSError) as error:
        print(f"python -m analysis: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
