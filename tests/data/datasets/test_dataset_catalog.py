"""Where entries are found: built-in entries from any directory, user entries first, in a fixed order."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

import brainfm
from brainfm.data.datasets import list_datasets, load_dataset_entry, missing_message, search_path
from brainfm.data.datasets.catalog import BUILTIN_ENTRIES, ENV_VAR
from brainfm.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
PACKAGE = Path(brainfm.__file__).resolve().parent


def _user_copy(directory: Path, name: str, title: str) -> Path:
    """A user's edited copy of a built-in entry (only the title differs)."""
    data = yaml.safe_load((BUILTIN_ENTRIES / f"{name}.yaml").read_text())
    data["title"] = title
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _brainfm_dataset(cwd: Path, root: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``python -m brainfm real-dataset`` for oasis1 in ``cwd``; return the process and check report."""
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["PYTHONPATH"] = str(PACKAGE.parent)  # the package under test, wherever it is installed
    out = cwd / "results"
    spec = json.dumps({"name": "oasis1", "source": "local", "path": str(root)})
    proc = subprocess.run([sys.executable, "-m", "brainfm", "real-dataset", "--dataset", spec,
                           "--manifest", str(out / "manifest.parquet"), "--check", str(out / "check.json")],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads((out / "check.json").read_text())


def test_cli_outside_the_repository_finds_builtin_entries_and_user_overrides(tmp_path, oasis_tree):
    root, sessions = oasis_tree
    elsewhere = tmp_path / "another_project"
    elsewhere.mkdir()
    assert REPO not in elsewhere.resolve().parents
    builtin_title = yaml.safe_load((BUILTIN_ENTRIES / "oasis1.yaml").read_text())["title"]
    _, report = _brainfm_dataset(elsewhere, root)
    assert report["dataset"] == "oasis1" and report["title"] == builtin_title
    assert report["n_subjects"] == 4 and report["n_images"] == len(sessions)
    manifest = pd.read_parquet(elsewhere / "results" / "manifest.parquet")
    assert list(zip(manifest.subject, manifest.session)) == [(s, m) for s, m, _ in sessions]
    # an entry of the same name in the working directory's config/datasets/ wins over the built-in one
    _user_copy(elsewhere / "config" / "datasets", "oasis1", "OASIS-1, our local copy")
    _, report = _brainfm_dataset(elsewhere, root)
    assert report["title"] == "OASIS-1, our local copy"


def test_search_order_explicit_then_environment_then_working_directory_then_builtin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert search_path() == (BUILTIN_ENTRIES,)  # no config/datasets/ here
    assert load_dataset_entry("oasis1").source == BUILTIN_ENTRIES / "oasis1.yaml"
    _user_copy(tmp_path / "config" / "datasets", "oasis1", "from the working directory")
    env_a, env_b = tmp_path / "env_a", tmp_path / "env_b"
    _user_copy(env_b, "oasis1", "from the environment")
    env_a.mkdir()
    explicit = tmp_path / "explicit"
    _user_copy(explicit, "oasis1", "passed explicitly")

    assert load_dataset_entry("oasis1").title == "from the working directory"
    monkeypatch.setenv(ENV_VAR, f"{env_a}{os.pathsep}{env_b}")
    assert load_dataset_entry("oasis1").title == "from the environment"
    dirs = search_path([explicit])
    assert dirs == (explicit, env_a, env_b, Path("config/datasets"), BUILTIN_ENTRIES)
    assert load_dataset_entry("oasis1", dirs).title == "passed explicitly"
    # the other built-in entries are still found through the same path
    assert load_dataset_entry("ixi", dirs).source == BUILTIN_ENTRIES / "ixi.yaml"
    assert set(list_datasets(dirs)) == {p.stem for p in BUILTIN_ENTRIES.glob("*.yaml")}
    # a YAML path bypasses the search
    assert load_dataset_entry(explicit / "oasis1.yaml").title == "passed explicitly"


def test_a_named_user_directory_must_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "typo"))
    with pytest.raises(ConfigError, match=f"typo: dataset entry \\${ENV_VAR} entry is not a directory"):
        load_dataset_entry("oasis1")
    monkeypatch.delenv(ENV_VAR)
    with pytest.raises(ConfigError, match="nowhere: dataset entry search directory is not a directory"):
        search_path([tmp_path / "nowhere"])


def test_unknown_name_outside_the_repository_lists_the_builtin_entries(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(ConfigError, match="no dataset registry entry named 'nope'.*known: abide, .*oasis1"):
        load_dataset_entry("nope")


def test_missing_data_message_says_how_to_override_a_builtin_entry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    builtin = missing_message(load_dataset_entry("adni"), tmp_path / "adni", "the dataset root does not exist")
    assert f"registry entry: {BUILTIN_ENTRIES / 'adni.yaml'}" in builtin
    assert "save an edited copy of that entry as config/datasets/adni.yaml; it overrides the built-in one" in builtin
    user = load_dataset_entry("adni", search_path([_user_copy(tmp_path / "mine", "adni", "ADNI").parent]))
    assert "overrides the built-in" not in missing_message(user, tmp_path / "adni", "the dataset root does not exist")


def test_a_wheel_ships_the_builtin_entries(tmp_path):
    """Built from a copy of the sources, the wheel holds every entry, so an installed brainfm finds them."""
    pytest.importorskip("setuptools")
    project = tmp_path / "project"
    shutil.copytree(PACKAGE, project / "src" / "brainfm", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, project / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(tmp_path / "dist"), str(project)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("brainfm-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    entries = sorted(p.name for p in BUILTIN_ENTRIES.glob("*.yaml"))
    assert entries
    assert {f"brainfm/data/datasets/entries/{e}" for e in entries} <= shipped
    assert "brainfm/schemas/dataset.schema.yaml" in shipped and "brainfm/config/schema.yaml" in shipped
