"""Every script in examples/ runs, in a small configuration."""

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_transfer_digits_example(capsys):
    results = load("transfer_digits").main(["--seeds", "1", "--epochs", "60"])
    assert set(results) == {"scratch", "frozen", "LP-FT"}
    assert "odd vs even" in capsys.readouterr().out


def test_transfer_cnn_digits_example(capsys):
    results = load("transfer_cnn_digits").main(["--seeds", "1", "--epochs", "30"])
    assert set(results) == {"scratch", "frozen", "LP-FT"}
    assert "from 8x8 images" in capsys.readouterr().out


def test_extract_pipeline_example(capsys):
    scores = load("extract_pipeline").main(["--epochs", "10"])
    assert scores["pretrained features + LR"] > scores["raw pixels + LR"]


def test_grid_search_freezing_example(capsys):
    grid = load("grid_search_freezing").main(["--epochs", "10"])
    assert len(grid.cv_results_["params"]) == 3 * 2 * 2 + 1
    assert "held-out accuracy" in capsys.readouterr().out


def test_deep_domain_adaptation_example(capsys):
    results = load("deep_domain_adaptation").main(["--seeds", "1", "--epochs", "8"])
    assert set(results) == {"source only", "CORAL", "MCC",
                            "chosen by CircularValidation"}
    assert results["MCC"][0] > results["source only"][0]
    assert "target pixel shift" in capsys.readouterr().out


def test_lr_find_digits_example(capsys, tmp_path):
    results = load("lr_find_digits").main(["--epochs", "3",
                                           "--plot", str(tmp_path / "lr.png")])
    assert len(results) == 2 and (tmp_path / "lr.png").stat().st_size > 10_000
    for found, default, tuned in results.values():
        assert 1e-3 < found.suggested_lr < 1
        assert tuned > default  # 3 epochs at 1e-3 are far from enough
    assert "suggested" in capsys.readouterr().out
