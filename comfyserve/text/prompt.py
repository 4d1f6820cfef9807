"""ComfyUI's prompt weighting syntax, as plain string processing (no torch, no transformers).

- `(text)` multiplies the weight of `text` by 1.1; groups nest, so `((text))` is 1.21.
- `(text:1.3)` sets the weight to 1.3 instead: a number after the *last* colon inside a group
  replaces the 1.1 factor of that group (outer groups still multiply the weights inside
  groups that carry no number of their own).
- `\\(` and `\\)` are literal parentheses, never grouping.

`weighted_segments("a (b:1.2) c")` → `[("a ", 1.0), ("b", 1.2), (" c", 1.0)]`. Unbalanced
parentheses are handled as ComfyUI does: an unclosed `(` keeps its group open to the end of the
text (the group then has no closing `)` and is plain text), a stray `)` is kept as text.
"""

from __future__ import annotations

# Escaped parentheses are swapped for control-character pairs while the groups are parsed
# (ComfyUI uses the same two markers, so text passing through custom code looks the same).
_ESCAPED_CLOSE = "\0\1"
_ESCAPED_OPEN = "\0\2"

# The factor an unweighted group applies.
GROUP_FACTOR = 1.1


def escape_important(text: str) -> str:
    """Hide `\\(` and `\\)` from the group parser."""
    return text.replace("\\)", _ESCAPED_CLOSE).replace("\\(", _ESCAPED_OPEN)


def unescape_important(text: str) -> str:
    """Turn the hidden escapes back into literal parentheses."""
    return text.replace(_ESCAPED_CLOSE, ")").replace(_ESCAPED_OPEN, "(")


def split_top_level(text: str) -> list[str]:
    """Cut `text` into top-level pieces: each `( ... )` group (with its parentheses) and the
    plain runs between them, in order."""
    pieces: list[str] = []
    current = ""
    depth = 0
    for char in text:
        if char == "(":
            if depth == 0:
                if current:
                    pieces.append(current)
                current = "("
            else:
                current += char
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                pieces.append(current + ")")
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def _parse_weight(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def token_weights(text: str, weight: float) -> list[tuple[str, float]]:
    """`(segment, weight)` pairs for `text` (already escaped) under an outer `weight`."""
    out: list[tuple[str, float]] = []
    for piece in split_top_level(text):
        if len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
            inner = piece[1:-1]
            inner_weight = weight * GROUP_FACTOR
            colon = inner.rfind(":")
            if colon > 0:
                explicit = _parse_weight(inner[colon + 1:])
                if explicit is not None:
                    inner_weight = explicit
                    inner = inner[:colon]
            out += token_weights(inner, inner_weight)
        else:
            out.append((piece, weight))
    return out


def weighted_segments(text: str, disable_weights: bool = False) -> list[tuple[str, float]]:
    """The prompt as `(segment, weight)` pairs, escapes resolved in each segment."""
    escaped = escape_important(text)
    pairs = [(escaped, 1.0)] if disable_weights else token_weights(escaped, 1.0)
    return [(unescape_important(segment), weight) for segment, weight in pairs]
