"""Making untrusted or secret text safe to print: the one place logs and the CLI go through.

Blob names come from uploaders: a name with control characters or ANSI escapes, printed raw,
can forge log lines or repaint an operator's terminal. URLs in settings may carry credentials
(`https://user:pass@host/hook?sig=…`): a log line needs the host, never the rest.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def printable(text: str) -> str:
    """`text` with control characters (and backslashes) escaped, as repr() does, no quotes."""
    if text.isprintable() and "\\" not in text:
        return text
    return repr(text)[1:-1]


def clipped(text: str, width: int, keep: str = "end") -> str:
    """`printable(text)` in at most `width` characters, with "…" where it was cut: a name cut
    without a mark reads as a different, whole name. `keep="end"` keeps the end (a file's name
    is at the end of its path), `"start"` the beginning."""
    shown = printable(text)
    if len(shown) <= width:
        return shown
    if keep == "end":
        return "…" + shown[len(shown) - width + 1 :]
    return shown[: width - 1] + "…"


def redact_url(url: str | None) -> str:
    """scheme://host[:port]/path of a URL: no user info, no query (tokens), no fragment."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    hidden = "?…" if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{hidden}"
