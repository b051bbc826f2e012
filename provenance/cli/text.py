"""Printing text the CLI did not write itself (files, bundles, manifests, records, database rows, callers).

Such text must never steer the terminal or the report around it. Two things can:

- control characters: ESC starts ANSI sequences that recolour, move the cursor or erase lines (a bundle
  could paint "verdict: authentic" over a real ``untrusted``); CR and newline start a line the reader
  takes for one of ours; C1 controls (U+0080..U+009F) are 8-bit escapes on some terminals; bidi
  overrides reorder what is shown.
- rich markup: ``[/]`` in a ``console.print`` string raises ``MarkupError`` (a traceback instead of a
  report), ``[bold green]...`` styles text as if the CLI had.

:func:`clean` makes control characters visible as ``\\xNN`` / ``\\uNNNN`` (nothing is hidden and nothing
is acted on); :func:`plain` also escapes rich markup, for values put into a markup string or a table
cell. :func:`json_text` is the JSON counterpart for ``--json`` output.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rich.markup import escape

# C0 (with TAB, LF and CR), DEL, C1, and the Unicode format characters that reorder or hide text:
# bidi embeddings/overrides/isolates, zero-width marks, line/paragraph separators, BOM.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_CONTROL_EXCEPT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
# Inside JSON text these can only occur within strings; \uNNNN is the same string to a JSON reader.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(value: Any, *, multiline: bool = False) -> str:
    """``str(value)`` with every control character shown as ``\\xNN`` (or ``\\uNNNN``) instead of acted on.

    ``multiline=True`` keeps newlines, for values meant to span lines (a PEM block); CR is escaped
    either way, so no value can return to the start of a line and overwrite it. For ``markup=False``
    output and ``rich.text.Text``; use :func:`plain` inside a markup string.
    """
    text = "-" if value is None else str(value)
    return (_CONTROL_EXCEPT_NEWLINE if multiline else _CONTROL).sub(_visible, text)


def plain(value: Any, *, multiline: bool = False) -> str:
    """:func:`clean`, then rich markup escaped: safe to interpolate into a markup string or a table cell."""
    return escape(clean(value, multiline=multiline))


def json_text(data: Any) -> str:
    """``data`` as indented JSON whose text holds no control or reordering character, even inside strings.

    ``json.dumps`` escapes C0 controls already; DEL, C1 and bidi characters it leaves raw, so they are
    written as ``\\uNNNN`` here (the same string to any JSON reader). Print it with ``markup=False``.
    """
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(data, indent=2, default=str))
