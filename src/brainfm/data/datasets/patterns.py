"""File patterns of a dataset entry: glob syntax plus named placeholders, compiled to anchored regexes.

A pattern such as ``{site}/sub-{subject}/ses-{session}/anat/*_T1w.nii.gz`` says where a modality's
images are *and* which parts of the path are the subject, session, site or a free qualifier
(``{run}``, ``{acq}``...). Compiling it to a regular expression with named groups lets the scan
parse those parts from the path itself instead of guessing them from file names later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from brainfm.errors import ConfigError

__all__ = ["RESERVED_PLACEHOLDERS", "CompiledPattern", "compile_pattern"]

# placeholders with a fixed meaning; any other name is a qualifier that becomes part of the session id
RESERVED_PLACEHOLDERS: tuple[str, ...] = ("subject", "session", "site")
_DEFAULT_PLACEHOLDER = "[^/]+"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class CompiledPattern:
    """A file pattern as an anchored regex; ``names`` are its placeholders in order of appearance."""

    text: str
    regex: re.Pattern[str]
    names: tuple[str, ...]

    @property
    def qualifiers(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n not in RESERVED_PLACEHOLDERS)


def compile_pattern(pattern: str, placeholders: Mapping[str, str] | None = None) -> CompiledPattern:
    """Translate a glob-with-placeholders pattern into an anchored regular expression.

    ``*`` and ``?`` stay inside one path component, ``**/`` spans directories, ``[...]`` is a
    character class, ``{name}`` captures ``placeholders.get(name, '[^/]+')``; a name used twice
    must match the same text (a back-reference), so ``{subject}/{subject}_t1.nii.gz`` only
    accepts files inside their own subject's folder.
    """
    overrides = placeholders or {}
    out: list[str] = []
    names: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "{":
            m = _PLACEHOLDER.match(pattern, i)
            if not m:
                raise ConfigError(f"pattern {pattern!r}: '{{' at position {i} does not start a placeholder "
                                  "like {subject}")
            name = m.group(1)
            if name in names:
                out.append(f"(?P={name})")
            else:
                names.append(name)
                out.append(f"(?P<{name}>{overrides.get(name, _DEFAULT_PLACEHOLDER)})")
            i = m.end()
        elif pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 2)
            if j < 0:
                raise ConfigError(f"pattern {pattern!r}: unclosed '['")
            body = pattern[i + 1:j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        elif c == "}":
            raise ConfigError(f"pattern {pattern!r}: unmatched '}}' at position {i}")
        else:
            out.append(re.escape(c))
            i += 1
    if "subject" not in names:
        raise ConfigError(f"pattern {pattern!r}: needs a {{subject}} placeholder")
    try:
        regex = re.compile("".join(out))
    except re.error as exc:
        raise ConfigError(f"pattern {pattern!r}: cannot compile ({exc})") from exc
    return CompiledPattern(pattern, regex, tuple(names))
