"""Two small costs the test suite pays hundreds of times: building the command line's parser, and the
calibration simulator's per-user sums of one replicate.

    .venv/bin/python bench/parser_and_sums.py [--repeats 30]

prints the mean milliseconds of `cli.build_parser()` (after a first build) and, on the fitted real run of
`tests/fixtures/verdict_null_model.json` (2 arms x 3 seeds), of `calibration.user_sums` beside the
`np.bincount` per simulated run it replaced, checking that both give the same sums. To time another version
of the code, run this file with `PYTHONPATH` set to that version's checkout (its parser is what is timed;
the bincount column is the same in every version).
"""

import argparse
import json
import os
import time

import numpy as np

from recsys_ablate import cli
from recsys_ablate.evaluation import calibration

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "verdict_null_model.json")


def mean_ms(function, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    cli.build_parser()
    print(f"build_parser: {mean_ms(cli.build_parser, args.repeats):.1f} ms")
    with open(FIXTURE) as f:
        model = calibration.NullModel.from_dict(json.load(f)["model"])
    hits, user, counts = model.simulate_hits(np.random.default_rng(1), 3)

    def per_run_bincount():
        return np.stack([[np.bincount(user, weights=h, minlength=len(counts)) for h in arm] for arm in hits])

    print(f"one replicate's sums ({hits.shape[0]} arms x {hits.shape[1]} seeds, {hits.shape[2]:,} examples):")
    if hasattr(calibration, "user_sums"):
        assert np.array_equal(calibration.user_sums(hits, counts), per_run_bincount())
        sums_ms = mean_ms(lambda: calibration.user_sums(hits, counts), 50)
        print(f"  user_sums (np.add.reduceat): {sums_ms:.2f} ms")
    print(f"  np.bincount per run: {mean_ms(per_run_bincount, 50):.2f} ms")


if __name__ == "__main__":
    main()
