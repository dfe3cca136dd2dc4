"""recsys-ablate: feature-ablation harness for TFRS two-tower retrieval models.

TensorFlow Recommenders 0.7.7 needs Keras 2, which TensorFlow 2.20 only
serves as `tf.keras` when `TF_USE_LEGACY_KERAS=1` is set before TensorFlow is
first imported. Every entry point imports this package first, so setting it
here (and nowhere else) is enough.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter (CPU instruction notes, and on machines
# without a GPU driver a "failed call to cuInit: CUDA error" line that reads
# like a failure) hides the harness's own progress and error lines. Python
# exceptions are unaffected; set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
