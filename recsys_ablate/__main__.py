"""`python -m recsys_ablate`: the ablation command line."""

import recsys_ablate  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from recsys_ablate.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
