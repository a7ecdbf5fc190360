"""File patterns: glob syntax and placeholders compile to anchored regexes with the documented semantics."""

from __future__ import annotations

import pytest

from brainfm.data.datasets import compile_pattern
from brainfm.errors import ConfigError


def test_compile_pattern_semantics():
    cp = compile_pattern("**/{subject}/{subject}_t1.nii.gz")
    assert cp.regex.fullmatch("BraTS2021_00000/BraTS2021_00000_t1.nii.gz")["subject"] == "BraTS2021_00000"
    assert cp.regex.fullmatch("a/b/S1/S1_t1.nii.gz")["subject"] == "S1"
    assert cp.regex.fullmatch("S1/S2_t1.nii.gz") is None  # back-reference: file must be in its own folder
    assert cp.regex.fullmatch("S1/S1_t1ce.nii.gz") is None
    star = compile_pattern("x/*/{subject}.nii")
    assert star.regex.fullmatch("x/a/s.nii") and not star.regex.fullmatch("x/a/b/s.nii")
    cls = compile_pattern("[ab]?/{subject}_{run}.img")
    assert cls.regex.fullmatch("a1/s_2.img").groupdict() == {"subject": "s", "run": "2"}
    assert cls.qualifiers == ("run",) and not cls.regex.fullmatch("c1/s_2.img")
    over = compile_pattern("{subject}-{session}.nii", {"session": r"\d{3}"})
    assert over.regex.fullmatch("BraTS-MEN-00001-000.nii").groupdict() == {"subject": "BraTS-MEN-00001",
                                                                           "session": "000"}
    with pytest.raises(ConfigError, match="needs a {subject}"):
        compile_pattern("{session}.nii")
    with pytest.raises(ConfigError, match="does not start a placeholder"):
        compile_pattern("{subject}/{1x}.nii")
