"""Command line: `python -m analysis export --model NAME --text TEXT --out DIR`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import transformers

from analysis.capture import STAGES
from analysis.checks import check_text
from analysis.export import EXPORT_FILES, write_export
from analysis.loading import BUNDLED_MODEL, load_model
from analysis.references import REFERENCES
from analysis.trace import analyze


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line instead of usage + error."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


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
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m analysis", description="Token Trails: trace token encodings layer by layer."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    export = commands.add_parser(
        "export",
        help="analyse a text and write tidy CSV tables",
        description="Analyse TEXT with MODEL and write tidy CSV tables plus provenance.json to DIR.",
        epilog=_columns_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument(
        "--model", required=True, help=f"hub id (roberta-base), local folder, or {BUNDLED_MODEL} (offline)"
    )
    export.add_argument("--text", required=True, help="the text to analyse (truncated to the model's length, reported)")
    export.add_argument(
        "--stage",
        choices=list(STAGES),
        default="attn_residual",
        help="where in each block to read the vector: " + "; ".join(f"{k}: {v}" for k, v in STAGES.items()),
    )
    export.add_argument(
        "--reference",
        choices=list(REFERENCES),
        default="position",
        help="what 'original embedding' means: " + "; ".join(f"{k}: {v}" for k, v in REFERENCES.items()),
    )
    export.add_argument(
        "--top-k", type=_positive, default=15, help="nearest vocabulary neighbours kept per token and layer (15)"
    )
    export.add_argument(
        "--overlap-n", type=_positive, default=100, help="neighbourhood size N for the overlap counts (100)"
    )
    export.add_argument("--out", required=True, type=Path, help="folder to write into (created if missing)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    try:
        check_text(args.text)
        encoder = load_model(args.model)
        result = analyze(
            encoder, args.text, stage=args.stage, reference=args.reference, top_k=args.top_k, overlap_n=args.overlap_n
        )
        written = write_export(result, args.out)
    except (ValueError, OSError) as error:
        print(f"python -m analysis: error: {error}", file=sys.stderr)
        return 1
    if result.truncated:
        print(
            f"note: the text was truncated to {len(result.tokens)} tokens (of {result.n_tokens_in_text} in the text), "
            f"cut at character {result.truncated_at_char}.",
            file=sys.stderr,
        )
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
