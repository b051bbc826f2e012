"""The ``provenance`` command line: the command groups wired into one Typer app, and ``main``.

Each group lives in its own module (``serve``, ``certify``, ``generate``, ``nft``, ``verify``, ``keys``,
``chain``, ``apikeys``, ``trust``, ``fingerprints``); what they print goes through :mod:`provenance.cli.render`.
"""

from __future__ import annotations

import os
import sys

import typer
from typer.exceptions import TyperException

from provenance.cli.apikeys import apikey_app
from provenance.cli.certify import certify
from provenance.cli.chain import chain_app
from provenance.cli.datasets import datasets_app
from provenance.cli.fingerprints import fingerprints_app
from provenance.cli.generate import generate, reproduce
from provenance.cli.keys import keys_app
from provenance.cli.models import models_app
from provenance.cli.nft import mint
from provenance.cli.render import err, print_error
from provenance.cli.serve import serve, worker
from provenance.cli.text import clean
from provenance.cli.train import train_app
from provenance.cli.trust import trust_app
from provenance.cli.verify import verify
from provenance.errors import ConfigurationError, InputError, ProvenanceError

app = typer.Typer(help="Certify AI-generated images and verify them back.", no_args_is_help=True, add_completion=False)
"""The root command; ``provenance --help`` lists the commands in the order they are added here."""
app.add_typer(keys_app, name="keys")
app.add_typer(chain_app, name="chain")
app.add_typer(apikey_app, name="apikey")
app.add_typer(trust_app, name="trust")
app.add_typer(fingerprints_app, name="fingerprints")
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")
app.add_typer(train_app, name="train")
for _command in (serve, certify, generate, reproduce, mint, worker, verify):
    app.command()(_command)


@app.command("bot")
def bot() -> None:
    """Run the Telegram bot (docs/guide/telegram-bot.md), a client of the service's HTTP API; PROVENANCE_TELEGRAM_*."""
    # Imported here: the bot's library loads only for this command, and the bot imports nothing of the service.
    from provenance_bot.app import main as run_bot
    from provenance_bot.settings import BotConfigError

    try:
        run_bot()
    except BotConfigError as exc:
        raise ConfigurationError(str(exc)) from None


def main() -> None:
    """Run the CLI: errors are one line on stderr, never a traceback.

    Exit codes: 0 success (for ``verify``: the verdict is authentic), 1 a failure that is not the
    caller's input (a dependency down, a chain refusal, a verdict other than authentic), 2 bad input or
    configuration. ``PROVENANCE_DEBUG=1`` re-raises unexpected errors with their traceback.
    """
    try:
        # Not standalone: exceptions reach the handlers below instead of click's and typer's tracebacks.
        result = app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("error: interrupted", markup=False)
        sys.exit(130)
    except TyperException as exc:  # usage errors (unknown option, missing argument): typer's own click
        exc.show()  # type: ignore[attr-defined]
        sys.exit(2)
    except (InputError, ConfigurationError) as exc:
        print_error(exc.detail)
        sys.exit(2)
    except ProvenanceError as exc:
        print_error(exc.detail)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("error: interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("PROVENANCE_DEBUG"):
            raise
        err.print(
            f"error: unexpected {type(exc).__name__}: {clean(exc)} (PROVENANCE_DEBUG=1 shows the traceback)",
            markup=False,
            highlight=False,
        )
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)  # click returns the code of a typer.Exit here


if __name__ == "__main__":
    main()
