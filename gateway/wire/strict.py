"""Theory of operation: one meaning per JSON text, checked around msgspec.

msgspec decodes fast and validates types, but two things about a JSON text it
cannot be asked: how deep it nests *before* it recurses into it (a 2 KB frame of
``[`` x 1000 raised ``RecursionError`` out of the decoder), and whether an object
names a key twice (it keeps the last, so a signed payload with two
``amount_fen`` had two readings: a person reads the first, the server took the
last).  This module answers both, on the text, with regular expressions that run
in C; it never decides a text's meaning itself.

* ``check_depth(text, max_depth)`` before decoding.  Most frames are shallow and
  pass on two ``str.count`` calls; otherwise the strings are blanked out (a
  bracket inside a string is not structure) and innermost ``[]`` / ``{}`` pairs
  are removed one level per pass: ``max_depth`` passes must empty the text.
  Unbalanced brackets never empty it either and are refused the same way -- a
  decoder would recurse into them just as deep before noticing.
* ``object_keys(text)`` after a successful decode (so the text is valid JSON and
  a left-to-right scan of string tokens is aligned with the decoder's): every
  object's keys, escapes resolved (``"amount\\u005ffen"`` is ``amount_fen``), and
  ``DuplicateKey`` when one object repeats one.  Returns the top-level object's
  keys in order, which is how a signed payload's *present* fields are known.
"""

from __future__ import annotations

import json
import re

__all__ = ["DuplicateKey", "TooDeep", "check_depth", "object_keys"]

# A JSON string token (Friedl's unrolled loop, possessive: no backtracking),
# alone or as a key (followed by a colon); or one structural bracket.
_STRING_BODY = r'"([^"\\]*+(?:\\.[^"\\]*+)*+)"'
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.S)
_TOKEN = re.compile(_STRING_BODY + r"\s*+(:)?|([{}\[\]])", re.S)
_INNERMOST = re.compile(r"\[\]|\{\}")
_NOT_BRACKETS = re.compile(r"[^\[\]{}]++")


class TooDeep(ValueError):
    """Nesting past the limit (or brackets that never balance)."""


class DuplicateKey(ValueError):
    """One object names the same key twice: the text has two readings."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} appears twice in one object")
        self.key = key


def check_depth(text: str, max_depth: int) -> None:
    """Raise ``TooDeep`` unless every bracket in ``text`` nests at most
    ``max_depth`` deep (strings excluded).  Cost: two counts for a shallow text;
    at most ``max_depth`` C-speed passes otherwise."""
    if text.count("[") + text.count("{") <= max_depth:
        return
    rest = _NOT_BRACKETS.sub("", _STRING.sub("", text))
    for _ in range(max_depth):
        if not rest:
            return
        shorter = _INNERMOST.sub("", rest)
        if len(shorter) == len(rest):
            break  # unbalanced: no pass will empty it
        rest = shorter
    if rest:
        raise TooDeep(f"nesting deeper than {max_depth} levels (or unbalanced brackets)")


def object_keys(text: str) -> list[str]:
    """The keys of the top-level object of a *valid* JSON text, in order
    (``[]`` when it is not an object); ``DuplicateKey`` if any object in it
    repeats a key."""
    stack: list[set[str] | None] = []
    top: list[str] = []
    for key, colon, bracket in _TOKEN.findall(text):
        if bracket:
            if bracket == "{":
                stack.append(set())
            elif bracket == "[":
                stack.append(None)
            else:
                stack.pop()
            continue
        if not colon:
            continue  # a string value
        if "\\" in key:
            key = json.loads(f'"{key}"')  # resolve escapes: one key, one spelling
        seen = stack[-1]
        assert seen is not None  # a key is only ever inside an object
        if key in seen:
            raise DuplicateKey(key)
        seen.add(key)
        if len(stack) == 1:
            top.append(key)
    return top
