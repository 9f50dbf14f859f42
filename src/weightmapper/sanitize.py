"""Names from files → text safe to show: one sanitizer behind every renderer.

Tensor names, module paths, file names and messages come from checkpoints and reports we do
not control. Before any renderer shows one, control characters (ANSI escape sequences, a
carriage return that overwrites the line, a bell), and Unicode bidirectional overrides that
reorder what is shown, become visible escapes (``\\x1b``, ``\\u202e``). The terminal views
wrap the result in rich ``Text`` (never parsed as markup, see ``visualize.safe_text``);
Markdown gets :func:`md_code` / :func:`md_text`, which a crafted name can neither close nor
turn into HTML; the HTML page escapes with ``html.escape`` as it always did.
"""

from __future__ import annotations

import re
from typing import Any

# C0 and C1 controls and DEL; bidi embeddings, overrides and isolates; line/paragraph
# separators; zero-width joiners stay (they occur in real names written in some scripts).
_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_UNSAFE_KEEP_LINES = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>-])")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group(0))
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(value: Any, *, keep_newlines: bool = False) -> str:
    """Any value → its ``str`` with every control and bidi character shown as an escape.

    ``keep_newlines`` keeps ``\\n`` and ``\\t`` (for multi-line text we laid out ourselves).
    """
    pattern = _UNSAFE_KEEP_LINES if keep_newlines else _UNSAFE
    return pattern.sub(_escape, str(value))


def md_text(value: Any) -> str:
    """Any value → Markdown text that renders as exactly those characters, on one line.

    Markdown punctuation is backslash-escaped, ``<``/``>``/``&`` become entities (no raw
    HTML can form), and controls become visible escapes. Safe inside a table cell.
    """
    text = visible(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(value: Any) -> str:
    """Any value → a Markdown code span showing it verbatim, which its content cannot close.

    The fence is one backtick longer than the longest run of backticks inside (CommonMark),
    padded with spaces when the content starts or ends with a backtick; ``|`` is escaped so
    the span can sit in a table cell (GitHub tables split on ``|`` even inside code).
    """
    text = visible(value).replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"
