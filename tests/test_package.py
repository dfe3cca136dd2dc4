import pytest
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_import_sets_legacy_keras_and_tfrs_trains_a_step_in_a_fresh_process():
    code = """
import os
os.environ.pop("TF_USE_LEGACY_KERAS", None)
import recsys_ablate
assert os.environ["TF_USE_LEGACY_KERAS"] == "1"
import numpy as np, tensorflow as tf, tensorflow_recommenders as tfrs
assert tf.__version__.startswith("2.20"), tf.__version__
assert tf.keras.__name__.startswith("tf_keras"), tf.keras.__name__

class M(tfrs.Model):
    def __init__(self):
        super().__init__()
        self.q = tf.keras.layers.Embedding(10, 4)
        self.c = tf.keras.layers.Embedding(10, 4)
        self.task = tfrs.tasks.Retrieval()
    def compute_loss(self, f, training=False):
        return self.task(self.q(f["u"]), self.c(f["m"]))

m = M()
m.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
ds = tf.data.Dataset.from_tensor_slices({"u": np.arange(8), "m": np.arange(8) % 5}).batch(8)
h = m.fit(ds, epochs=2, verbose=0)
assert len(h.history["loss"]) == 2 and h.history["loss"][1] < h.history["loss"][0]
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_help_works():
    out = subprocess.run([sys.executable, "-m", "recsys_ablate", "--help"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0 and "recommend" in out.stdout and "import-imdb" in out.stdout
    out = subprocess.run([sys.executable, "-m", "recsys_ablate", "run", "--help"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0
    assert "--additional_feature_sets" in out.stdout and "--generate_recommendations_for_user" in out.stdout
