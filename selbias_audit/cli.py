"""The ``selbias`` command line: a thin Typer app over the library.

Exit codes: 0 every gate passed, 1 a gate failed (the receipt is still written and
signed), 2 invalid input or usage, 3 the run could not finish, 4 verification failed.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from selbias_audit import __version__
from selbias_audit.errors import EXIT_INVALID_INPUT, EXIT_RUN_FAILED, SelbiasError, SpecError

if TYPE_CHECKING:
    from selbias_audit.receipt.model import Receipt

app = typer.Typer(
    name="selbias",
    help="Audit the selection stage of a recursive synthetic-data pipeline for tail-mode "
    "erosion, and issue a signed receipt.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
stderr = Console(stderr=True, highlight=False)
logger = logging.getLogger("selbias_audit")

Verbose = Annotated[
    int, typer.Option("--verbose", "-v", count=True, help="more detail; -vv re-raises errors")
]


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def say(text: str) -> None:
    """Print plain text on stderr; brackets in labels such as ``[client 0]`` stay literal."""
    stderr.print(escape(text), soft_wrap=True)


def _setup_logging(verbose: int) -> None:
    level = os.environ.get("SELBIAS_LOGLEVEL", "WARNING").upper()
    if level not in _LEVELS:
        say(f"warning: SELBIAS_LOGLEVEL={level!r} is not one of {', '.join(_LEVELS)}; "
            "using WARNING")
        level = "WARNING"
    if verbose:
        level = "DEBUG"
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    # weasyprint and fontTools warn about every SVG style they skip; only -vv shows them.
    quiet_level = logging.DEBUG if verbose >= 2 else logging.ERROR
    for name in ("weasyprint", "fontTools"):
        logging.getLogger(name).setLevel(quiet_level)


def _fail(error: SelbiasError, verbose: int) -> NoReturn:
    if verbose >= 2:
        raise error
    stderr.print(f"[bold red]error:[/] {escape(error.diagnostics())}", soft_wrap=True)
    hint_has_traceback_tip = error.hint is not None and "-vv" in error.hint
    if verbose == 0 and error.exit_code == EXIT_RUN_FAILED and not hint_has_traceback_tip:
        say("rerun with -v for more detail, -vv for the traceback")
    raise typer.Exit(error.exit_code)


def _internal(error: Exception, verbose: int) -> NoReturn:
    if verbose >= 2:
        raise error
    stderr.print(
        f"[bold red]error:[/] the run could not finish: "
        f"{escape(type(error).__name__)}: {escape(str(error))}",
        soft_wrap=True,
    )
    say("rerun with -vv for the traceback")
    raise typer.Exit(EXIT_RUN_FAILED)


@app.command()
def audit(
    run: Annotated[Path, typer.Argument(help="run description (YAML)", show_default=False)],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="output folder; overrides output.dir")
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key", help="Ed25519 private key (PEM) to sign with; default: the per-user key "
            "in $SELBIAS_KEY or ~/.config/selbias-audit/signing-key.pem, created on first use",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display")] = False,
    verbose: Verbose = 0,
) -> None:
    """Audit a selector against its baselines on the same candidates; write a signed receipt."""
    from selbias_audit.engine import run_audit
    from selbias_audit.progress import AuditProgress

    _setup_logging(verbose)
    start = time.perf_counter()
    display = AuditProgress(stderr, enabled=not quiet)
    try:
        with display:
            result = run_audit(
                run, out_dir=out, key_path=key, progress=display.advance, on_plan=display.plan
            )
    except SelbiasError as error:
        _fail(error, verbose)
    except Exception as error:  # noqa: BLE001 - any other failure is exit 3, never exit 1
        _internal(error, verbose)
    if result.key_created:
        say(f"created a new signing key at {result.key_path} (owner-only permissions)")
    for check in result.receipt.verdict.checks:
        status = "[green]PASS[/]" if check.passed else "[bold red]FAIL[/]"
        stderr.print(f"{status} {escape(check.name)}: {escape(check.detail)}", soft_wrap=True)
    say(result.receipt.verdict.summary)
    _report_unconverged(result.receipt)
    for path in result.files:
        say(f"wrote {path.resolve()}")
    say(f"finished in {time.perf_counter() - start:.1f} s")
    raise typer.Exit(result.exit_code)


def _report_unconverged(receipt: Receipt) -> None:
    """Print one line per selector whose OT solves missed the marginal tolerance."""
    for run in receipt.runs:
        missed = [solve for solve in run.solves if not solve.converged]
        if not missed:
            continue
        worst = max(solve.marginal_error for solve in missed)
        say(
            f"note: {len(missed)} of {len(run.solves)} OT solves of {run.label} ended above "
            f"the marginal tolerance (largest error {worst:.3g}); see Solver health in the PDF"
        )


@app.command()
def verify(
    envelope: Annotated[
        Path, typer.Argument(help="signed envelope (*.intoto.dsse.json) or the output folder")
    ],
    key: Annotated[
        Path | None, typer.Option("--key", help="pin the expected Ed25519 public key (PEM)")
    ] = None,
    inputs_root: Annotated[
        Path | None,
        typer.Option("--inputs-root", help="folder to resolve the run description and inputs"),
    ] = None,
    verbose: Verbose = 0,
) -> None:
    """Check the signature, the predicate type and every subject digest of a receipt."""
    from selbias_audit.receipt.verify import verify_outputs

    _setup_logging(verbose)
    if not envelope.exists():
        # A path that names nothing is a usage error (exit 2). An output folder that
        # lacks its envelope fails verification (exit 4) below.
        _fail(
            SpecError(
                f"{envelope}: no such file or folder",
                hint="pass the output folder of selbias audit or its receipt.intoto.dsse.json",
            ),
            verbose,
        )
    if key is not None and not key.is_file():
        _fail(SpecError(f"--key {key}: public key file not found"), verbose)
    if inputs_root is not None and not inputs_root.is_dir():
        _fail(SpecError(f"--inputs-root {inputs_root}: folder not found"), verbose)
    if envelope.is_dir():
        envelope = envelope / "receipt.intoto.dsse.json"
    try:
        results = verify_outputs(envelope, public_key_path=key, inputs_root=inputs_root)
    except SelbiasError as error:
        # The failed check is the error itself; print the ones that passed before it.
        for line in getattr(error, "checks", []):
            if line.ok:
                say(f"OK: {line.name}: {line.detail}")
        if "not found" in error.message and inputs_root is None:
            error.hint = error.hint or (
                "if the output folder was moved or downloaded, pass --inputs-root with the "
                "folder that holds the run description and its inputs"
            )
        _fail(error, verbose)
    except Exception as error:  # noqa: BLE001
        _internal(error, verbose)
    for line in results:
        say(f"OK: {line.name}: {line.detail}")


@app.command()
def keygen(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="private key path; the public key goes beside it as .pub.pem"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing key")] = False,
) -> None:
    """Create an Ed25519 signing key pair (private key with owner-only permissions)."""
    from selbias_audit.receipt.keys import (
        default_key_path,
        generate_keypair,
        key_id,
        public_key_path_for,
    )

    private_path = out if out is not None else default_key_path()
    public_path = public_key_path_for(private_path)
    try:
        private_key = generate_keypair(private_path, public_path, overwrite=force)
    except SelbiasError as error:
        if "exists" in error.message:
            error.hint = error.hint or "pass --force to replace it"
        _fail(error, 0)
    say(f"wrote private key {private_path} (mode 600)")
    say(f"wrote public key {public_path}")
    say(f"key id {key_id(private_key.public_key())}")


@app.command()
def render(
    receipt: Annotated[Path, typer.Argument(help="receipt JSON")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="output folder; default: beside the receipt")
    ] = None,
    verbose: Verbose = 0,
) -> None:
    """Rebuild the PDF and HTML of a receipt from its JSON alone."""
    from selbias_audit.render.rebuild import rebuild

    try:
        paths = rebuild(receipt, out if out is not None else receipt.parent)
    except SelbiasError as error:
        _fail(error, verbose)
    except Exception as error:  # noqa: BLE001
        _internal(error, verbose)
    say("rendered from the JSON alone; run selbias verify to check its signature")
    for path in paths:
        say(f"wrote {path}")


@app.command()
def theory(
    run: Annotated[Path, typer.Argument(help="theory run description (YAML)")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output folder")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display")] = False,
    verbose: Verbose = 0,
) -> None:
    """Run the Gaussian model of selection-induced collapse (four settings, several seeds)."""
    start = time.perf_counter()
    try:
        from selbias_audit.theory.cli import run_theory_command

        paths = run_theory_command(run, out, stderr, quiet=quiet)
    except SelbiasError as error:
        _fail(error, verbose)
    except Exception as error:  # noqa: BLE001
        _internal(error, verbose)
    for path in paths:
        say(f"wrote {path}")
    say(f"finished in {time.perf_counter() - start:.1f} s")


@app.command()
def schema(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the JSON Schemas")] = Path(
        "schemas"
    ),
) -> None:
    """Write the JSON Schemas of the run description, the receipt and the replay manifest."""
    from selbias_audit.schemas import write_schemas

    for path in write_schemas(out):
        say(f"wrote {path}")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"selbias-audit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="print version"),
    ] = False,
) -> None:
    """Audit the selection stage of a recursive synthetic-data pipeline."""


def main() -> None:
    """Entry point of the ``selbias`` console script."""
    try:
        app()
    except SystemExit as exc:
        # Click reports usage errors with code 2, which is also our invalid-input code.
        raise SystemExit(exc.code if exc.code is not None else 0) from None


if __name__ == "__main__":
    main()

__all__ = ["EXIT_INVALID_INPUT", "app", "main"]
