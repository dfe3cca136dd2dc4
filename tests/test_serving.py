import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from recsys_ablate.outputs import serving
from tests.helpers import small_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_LOAD = """
import json, sys
{prelude}
import recsys_ablate
import tensorflow as tf
from recsys_ablate.errors import UserInputError
from recsys_ablate.outputs.serving import load_index
query = json.loads(sys.argv[2])
try:
    index = load_index(sys.argv[1])
except UserInputError as err:
    print(json.dumps({{"error": str(err)}}))
    raise SystemExit(0)
scores, titles = index({{"user_id": tf.constant(query["user_id"]),
                        "timestamp": tf.constant(query["timestamp"], tf.int64)}})
print(json.dumps({{"titles": titles.numpy().astype(str).tolist(), "scores": scores.numpy().tolist()}}))
"""


def _load_in_fresh_process(path, query, prelude=""):
    out = subprocess.run([sys.executable, "-c", _LOAD.format(prelude=prelude), path, json.dumps(query)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# Every test here writes SavedModels, most load them in a fresh process: the slow lane.
# One test process (xdist) runs this module, so its module fixture trains once, not once per process.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serving")]


@pytest.fixture(scope="module")
def exported(demo_data, tmp_path_factory):
    _, data = demo_data
    model = small_model(data, ("timestamp", "movie_genres"))
    indexes = serving.build_indexes(model, data, k=10)
    paths = serving.export_indexes(indexes, str(tmp_path_factory.mktemp("export")))
    users = list(data.user_ids[:20].astype(str)) + ["no-such-user"]
    query = {"user_id": users, "timestamp": [int(data.timestamp.max())] * len(users)}
    return data, model, indexes, paths, query


@pytest.mark.parametrize("name", ["brute_force", "scann"])
def test_exported_index_gives_the_same_titles_in_a_fresh_process(exported, name):
    data, model, indexes, paths, query = exported
    scores, titles = indexes[name]({"user_id": tf.constant(query["user_id"]),
                                    "timestamp": tf.constant(query["timestamp"], tf.int64)})
    loaded = _load_in_fresh_process(paths[name], query)
    assert loaded["titles"] == titles.numpy().astype(str).tolist()
    np.testing.assert_allclose(loaded["scores"], scores.numpy(), rtol=1e-5, atol=1e-5)


def test_brute_force_titles_are_the_models_own_top_10(exported):
    data, model, indexes, _, query = exported
    _, titles = indexes["brute_force"]({"user_id": tf.constant(query["user_id"][:1]),
                                        "timestamp": tf.constant(query["timestamp"][:1], tf.int64)})
    row = data.user_row(query["user_id"][0])
    scores = model.candidate_embeddings().numpy() @ model.query_tower(
        {"user": np.array([row], np.int32), "timestamp": np.array(query["timestamp"][:1])}).numpy()[0]
    expected = data.movie_titles[np.argsort(-scores, kind="stable")[:10]]
    assert titles.numpy()[0].astype(str).tolist() == list(expected)


def test_missing_scann_ops_give_a_clear_error(exported):
    _, _, _, paths, query = exported
    loaded = _load_in_fresh_process(paths["scann"], query, prelude='sys.modules["scann"] = None')
    assert "is a ScaNN index, but ScaNN's TensorFlow ops are missing" in loaded["error"]
    assert "install scann==1.4.2" in loaded["error"]
    # The brute-force index needs no ScaNN at all.
    assert "titles" in _load_in_fresh_process(paths["brute_force"], query,
                                              prelude='sys.modules["scann"] = None')


def test_export_command_writes_both_indexes(tmp_path):
    command = [sys.executable, "-m", "recsys_ablate", "export", str(tmp_path / "exports"),
               "--dataset", "demo", "--max_ratings", "5000", "--num_epochs", "1", "--no_baseline",
               "--additional_feature_sets", "movie_genres", "--datasets_dir", str(tmp_path / "d"),
               "--saved_models_dir", str(tmp_path / "s"), "--reports_dir", str(tmp_path / "r")]
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    out = run.stdout
    assert run.returncode == 0, run.stderr
    assert "non-serializable" not in run.stderr  # Keras's per-layer config warning is silenced
    for kind in ("brute_force", "scann"):
        path = tmp_path / "exports" / "movie_genres" / kind
        assert f"exported {kind}: {path}" in out and (path / "saved_model.pb").is_file()
