import os
import re
import shutil
import subprocess

import pytest

from recsys_ablate.ablation import run_ablation
from recsys_ablate.config import ExperimentConfig, ModelConfig, TrainConfig
from recsys_ablate.data.encoded import DataSpec


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    config = ExperimentConfig(
        feature_sets=((), ("movie_genres",), ("timestamp", "user_age")),
        data=DataSpec(dataset="demo", datasets_dir=str(tmp / "datasets"), max_ratings=8000),
        model=ModelConfig(embedding_size=8, layer_sizes=(16,)),
        train=TrainConfig(num_epochs=3, eval_every=1, batch_size=512),
        recommend_user="5", saved_models_dir=str(tmp / "saved_models"), reports_dir=str(tmp / "reports"))
    return run_ablation(config, log=lambda *_: None)


def test_report_is_self_contained_with_table_settings_and_links(ablation):
    page = open(ablation.report, encoding="utf-8").read()
    assert 'src="http' not in page  # nothing fetched when opened offline
    assert len(page) > 1_000_000  # plotly.js itself is embedded
    assert page.count("epoch %{x}") == 3  # one curve per feature set, hover with every K
    assert page.count("top-100: %{customdata[4]") == 3
    for label in ("baseline (ids only)", "movie_genres", "timestamp + user_age"):
        assert f"<td>{label}</td>" in page
    assert re.search(r"<td>[+-]0\.\d{4} \([+-]", page)  # difference to the baseline
    for path in ablation.recommendations:
        assert f'href="{os.path.basename(path)}"' in page and os.path.isfile(path)
    assert "Adagrad, learning rate 0.1" in page and "top-K categorical accuracy over all 600 movies" in page


def test_report_renders_curves_in_headless_chromium(ablation, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian chromium is required for this test (.ci/run installs it)"
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
         "file://" + os.path.abspath(ablation.report)],
        capture_output=True, text=True, timeout=120)
    dom = out.stdout
    # Plotly draws each curve as an SVG path with real coordinates once its JS ran.
    curves = re.findall(r'class="js-line"[^>]*d="M[\d.]+,[\d.]+L', dom)
    assert len(curves) == 3, dom[:500]
    assert "Validation top-100 accuracy by epoch" in dom
