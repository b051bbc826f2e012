"""The command-line interface: one module per command group; ``app`` wires them into ``main``.

The console script (``provenance``) and ``python -m provenance.cli`` run ``main``.
"""

from provenance.cli.app import main

__all__ = ["main"]
