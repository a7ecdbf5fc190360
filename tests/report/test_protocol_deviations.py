"""protocol_deviations: the paper config reproduces every checked setting, the demo lists its scaled values."""

import copy
from pathlib import Path

import pytest
import yaml

from brainfm.cli import main
from brainfm.config import load_config
from brainfm.report.protocol import DEVIATES, MATCH, PAPER, check_protocol, format_deviations

REPO = Path(__file__).resolve().parents[2]


def _values(name):
    return load_config(REPO / "config" / name).values


@pytest.fixture(scope="module")
def paper():
    return _values("paper.yaml")


def test_paper_config_has_no_deviation_among_the_settings_it_checks(paper):
    rows = check_protocol(paper)
    assert len(rows) == len(PAPER) >= 45
    assert {r["status"] for r in rows} == {MATCH}, [r for r in rows if r["status"] != MATCH]
    assert "None: every checked setting is the paper's." in format_deviations(paper, "config/paper.yaml")


def test_the_paper_learning_rate_is_a_base_rate_with_a_4x_effective_peak(paper):
    rows = {r["key"]: r for r in check_protocol(paper)}
    assert rows["pretrain.<dino>.lr (base)"]["run"] == pytest.approx(1e-4)
    assert rows["pretrain.<dino> effective peak lr"]["run"] == pytest.approx(4e-4)


def test_demo_config_lists_its_scaled_down_values():
    demo = _values("config.yaml")
    dev = {r["key"]: r for r in check_protocol(demo) if r["status"] == DEVIATES}
    assert dev["preprocess.cube"]["run"] == 48 and dev["preprocess.cube"]["paper"] == 256
    assert dev["preprocess.downstream_shape"]["run"] == [12, 48, 48]
    assert dev["preprocess.pretrain_slices.n"]["run"] == 24
    assert dev["preprocess.pretrain_slices.sigma"]["run"] == pytest.approx(9.4)
    assert dev["pretrain.<dino>.iters"]["run"] == 200
    lr = demo["pretrain"]["braindino"]["params"]["lr"]
    assert dev["pretrain.<dino> effective peak lr"]["run"] == pytest.approx(lr) and lr != 1e-4  # lr_scaling none
    assert "preprocess.clip_percentiles" not in dev and "stats.n_boot" not in dev
    doc = format_deviations(demo, "config/config.yaml")
    assert "| `preprocess.cube` | 256 (§4.1.2) | 48 |" in doc


def test_one_changed_value_is_one_deviation_and_the_step_writes_it(tmp_path, paper):
    raw = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    changed = copy.deepcopy(raw)
    changed["head"]["lr"] = 1e-3
    changed["stats"]["n_boot"] = 500
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    out = tmp_path / "protocol_deviations.md"
    assert main(["protocol-deviations", "--config", str(path), "--source", "changed.yaml", "--out", str(out)]) == 0
    text = out.read_text()
    assert "2 deviation(s)" in text and "| `head.lr` | 0.0001 (§4.3) | 0.001 |" in text
    assert "| `stats.n_boot` | 2000 (§4.7) | 500 |" in text
