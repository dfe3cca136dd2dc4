"""`python -m recsys_ablate`: the ablation command line."""

import sys

try:
    import recsys_ablate  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
    from recsys_ablate.cli import main
except KeyboardInterrupt:  # Ctrl-C before the command line's own handling starts: one line, not a traceback
    print("interrupted before the command started: nothing was done", file=sys.stderr)
    raise SystemExit(130) from None

if __name__ == "__main__":
    raise SystemExit(main())
