"""Checks the verdicts' error rates on simulated ablations fitted to a real one.

A simulated comparison draws, for every validation example of every seed of
two arms, a hit (true item in the top K) from a latent Gaussian threshold
model whose parts are the sources of noise a real run has:

    latent = user offset + example + arm-specific example + arm's seed + noise,
    hit = latent > threshold - (planted shift, arm only),

- user offset: each simulated user is a real user drawn with replacement,
  with their real number of validation examples and an offset that gives
  their real hit rate (shrunk towards the mean): per-user correlation,
  heterogeneity and the link between activity and hit rate as in the run;
- example: shared by both arms and every seed (how hard the example is);
- arm-specific example: shared by one arm's seeds (a model family's taste);
- arm's seed: one draw per arm and seed (a whole run better or worse);
- noise: everything else a new seed changes, per example.

The parts are fitted to a real two-arm run with 2+ seeds (`fit_null_model`)
by the method of moments: the hit rate fixes the threshold; the tetrachoric
correlation of one example's hits across seeds of one arm, and across arms at
one seed, give the persistent parts; the seed-to-seed spread of an arm's hit
rate, less what per-example noise explains, gives the seed part; the user
offsets take what the across-arm correlation has beyond the example part.
Without a shift there is no true effect; a shift plants one whose size is
known exactly (`NullModel.true_difference`).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import scipy.optimize
import scipy.stats

from recsys_ablate.evaluation import design
from recsys_ablate.evaluation.verdicts import CLAIMS, EQUIVALENT, compare, decide, judge, worded


@dataclasses.dataclass(frozen=True)
class NullModel:
    """Fitted latent model of two arms' per-example hits (total latent variance 1).

    Attributes:
      threshold: Latent threshold of a hit.
      example, arm_example, seed, noise: Variances of the parts below the user.
      offsets: Each real user's latent offset.
      counts: Each real user's validation examples.
    """

    threshold: float
    example: float
    arm_example: float
    seed: float
    noise: float
    offsets: tuple[float, ...]
    counts: tuple[int, ...]

    @property
    def below_user(self) -> float:
        """Standard deviation of the latent given the user."""
        return float(np.sqrt(self.example + self.arm_example + self.seed + self.noise))

    def true_difference(self, shift: float) -> float:
        """Expected top-K difference (example-weighted over the users) of a `shift` on the arm."""
        offsets, counts = np.asarray(self.offsets), np.asarray(self.counts)
        gain = (scipy.stats.norm.sf((self.threshold - shift - offsets) / self.below_user)
                - scipy.stats.norm.sf((self.threshold - offsets) / self.below_user))
        return float(np.sum(counts * gain) / np.sum(counts))

    def shift_for(self, difference: float) -> float:
        """The threshold shift that plants a true top-K difference of `difference`."""
        return float(scipy.optimize.brentq(lambda shift: self.true_difference(shift) - difference, -3, 3))

    def simulate_hits(self, rng: np.random.Generator, num_seeds: int, shift: float = 0.0,
                      thresholds: tuple[float, ...] | None = None, arms: int = 2):
        """Per-example hits of one simulated comparison (users drawn with replacement).

        Args:
          rng: The generator.
          num_seeds: Seeds per arm.
          shift: The arm's threshold is lowered by it.
          thresholds: Several metrics at once (e.g. top-K at several K): the same latent draws against
            each threshold (default: the model's one).
          arms: How many arms (a design's runs): the first gets `shift`, each has its own arm part.

        Returns:
          ([arms, num_seeds, n examples] bool hits of the arm and of the baseline (and further arms), or
          [len(thresholds), arms, num_seeds, n examples] with `thresholds`; [n examples] user index, [n
          users] counts).
        """
        users = rng.integers(0, len(self.counts), len(self.counts))
        counts = np.asarray(self.counts)[users]
        inverse = np.repeat(np.arange(len(counts)), counts)
        n = len(inverse)
        # The draws land in buffers made once and the parts are added in place, without allocating each of
        # them (BENCHMARKS.md, session 20).
        draw, normals = np.empty(n, np.float32), _Normals(rng, n)

        def normal(variance, size=None):
            out = draw if size is None else np.empty(size, np.float32)
            normals.fill(out)
            out *= np.sqrt(variance, dtype=np.float32)
            return out

        shared = np.asarray(self.offsets, np.float32)[users][inverse]
        shared += normal(self.example)
        persistent = np.empty(n, np.float32)
        latent = np.empty((arms, num_seeds, n), np.float32)
        for arm in range(arms):
            np.add(shared, normal(self.arm_example), out=persistent)
            for s in range(num_seeds):
                np.add(persistent, normal(self.noise), out=latent[arm, s])
                latent[arm, s] += normal(self.seed, 1)
        shifts = np.array([shift] + [0.0] * (arms - 1), np.float32)[:, None, None]
        hits = np.stack([latent > t - shifts for t in (thresholds or (self.threshold,))])
        return (hits if thresholds else hits[0]), inverse, counts

    def simulate(self, rng: np.random.Generator, num_seeds: int, shift: float = 0.0,
                 thresholds: tuple[float, ...] | None = None):
        """One simulated comparison: arm (threshold lowered by `shift`) against baseline.

        Returns:
          ([num_seeds, n users] per-user hit differences, [n users] example counts); with `thresholds`,
          a list of them, one per threshold (correlated metrics of the same comparison).
        """
        hits, _, counts = self.simulate_hits(rng, num_seeds, shift, thresholds)
        out = []
        for per_user in user_sums(hits if thresholds else hits[None], counts):
            out.append((per_user[0] - per_user[1], counts.astype(np.float64)))
        return out if thresholds else out[0]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "NullModel":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def user_sums(hits: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each user's hits: [..., n examples] bool hits laid out user after user, `counts[u]` examples of user
    u (as `NullModel.simulate_hits` makes them), summed into [..., n users] float64.

    One `np.add.reduceat` over every run at once, where a `np.bincount` per run first turned the run's hits
    into float weights (the difference: BENCHMARKS.md, session 23). The sums are whole numbers, equal to
    bincount's.
    """
    counts = np.asarray(counts)
    present = counts > 0  # reduceat would give a user without examples the next user's first hit
    sums = np.zeros(hits.shape[:-1] + (len(counts),))
    sums[..., present] = np.add.reduceat(hits, np.cumsum(counts)[present] - counts[present], axis=-1,
                                         dtype=np.int64)
    return sums


class _Normals:
    """Standard normal float32 draws by the Box-Muller transform of uniform ones, into buffers made once.

    The simulator spends most of its time drawing normals, and the transform (a logarithm, a square root, a
    sine and a cosine per pair, vectorised) is faster than NumPy's ziggurat (`Generator.standard_normal`)
    on the development machine (BENCHMARKS.md, session 21). The uniforms are float32 on a 2**-24 grid, so
    |draw| <= sqrt(-2 ln 2**-24) = 5.8: a normal goes beyond that with probability 7e-9.

    Args:
      rng: The generator (its uniforms).
      size: The most draws one `fill` makes.
    """

    def __init__(self, rng: np.random.Generator, size: int):
        half = (size + 1) // 2
        self.rng = rng
        self.uniform = np.empty(2 * half, np.float32)
        self.radius, self.trig = np.empty(half, np.float32), np.empty(half, np.float32)

    def fill(self, out: np.ndarray) -> None:
        """Fills the float32 array `out` with independent standard normal draws."""
        n = out.size
        half = (n + 1) // 2
        uniform, radius, trig = self.uniform[:2 * half], self.radius[:half], self.trig[:half]
        self.rng.random(out=uniform, dtype=np.float32)
        np.subtract(1, uniform[:half], out=radius)  # in (0, 1]: the logarithm is finite
        np.log(radius, out=radius)
        radius *= -2
        np.sqrt(radius, out=radius)
        angle = uniform[half:]
        angle *= np.float32(2 * np.pi)
        flat = out.reshape(-1)
        np.cos(angle, out=trig)
        np.multiply(radius, trig, out=flat[:half])
        np.sin(angle, out=trig)
        np.multiply(radius[:n - half], trig[:n - half], out=flat[half:])


def _both_hit_correlation(both: float, threshold: float) -> float:
    """Latent correlation at which two standard normals both exceed `threshold` with probability `both`."""
    def gap(rho):
        cov = [[1.0, rho], [rho, 1.0]]
        return scipy.stats.multivariate_normal([0.0, 0.0], cov).cdf([-threshold, -threshold]) - both
    return float(scipy.optimize.brentq(gap, -0.95, 0.995, xtol=1e-6))


def _user_offsets(per_run_hits, counts, threshold, seed) -> tuple[np.ndarray, float]:
    """Per-user latent offsets: each user's hit rate (shrunk towards the mean), spread as the data says.

    The offsets' variance comes from how often two examples of one user are
    both hit in one run (users weighted by their examples, like the hit
    rate), less the seed part both examples share; each user's place among
    the users is a draw from the beta-binomial posterior of their rate, and
    the offsets are scaled to that variance.

    Args:
      per_run_hits: [runs, n users] hits per user in each run (arm x seed).
      counts: [n users] validation examples per user.
      threshold: Latent threshold of a hit.
      seed: Variance of the seed part.
    """
    pairs = counts >= 2
    both = np.mean(per_run_hits[:, pairs] * (per_run_hits[:, pairs] - 1), axis=0)
    both = np.average(both / (counts[pairs] * (counts[pairs] - 1.0)), weights=counts[pairs])
    variance = max(0.0, _both_hit_correlation(both, threshold) - seed)
    hits = per_run_hits.mean(axis=0)
    mean = np.sum(hits) / np.sum(counts)
    spread = max(np.var(hits / counts) - np.mean(mean * (1 - mean) / counts), 1e-6)
    prior = max(mean * (1 - mean) / spread - 1, 1e-3)
    # A draw from each user's beta-binomial posterior, not its mean: the means
    # of users with few examples crowd at the average, draws spread as users do.
    rates = np.random.default_rng(0).beta(hits + prior * mean, counts - hits + prior * (1 - mean))
    position = scipy.stats.norm.ppf(np.clip(rates, 1e-6, 1 - 1e-6))
    position -= np.average(position, weights=counts)
    scale = np.sqrt(variance / max(np.average(position**2, weights=counts), 1e-12))
    return threshold + np.sqrt(1 - variance) * scipy.stats.norm.ppf(mean) + scale * position, variance


def fit_null_model(hits_arm: np.ndarray, hits_base: np.ndarray, inverse: np.ndarray) -> NullModel:
    """Fits the latent model to a real two-arm run (see the module docstring).

    Args:
      hits_arm, hits_base: [S, n examples] bool, each seed's per-example hits of each arm (S >= 2).
      inverse: [n examples] user index of each example.

    Returns:
      The `NullModel` (no true effect).
    """
    hits = np.stack([hits_arm, hits_base]).astype(np.float64)  # [arm, seed, example]
    num_seeds, n = hits.shape[1], hits.shape[2]
    threshold = float(scipy.stats.norm.isf(hits.mean()))
    pairs = [(a, b) for a in range(num_seeds) for b in range(a + 1, num_seeds)]
    rho_seeds = _both_hit_correlation(np.mean([np.mean(h[a] * h[b]) for h in hits for a, b in pairs]),
                                      threshold)
    rho_arms = _both_hit_correlation(np.mean([np.mean(hits[0, s] * hits[1, s]) for s in range(num_seeds)]),
                                     threshold)
    # An arm's hit rate varies between seeds by its seed part (through the
    # density at the threshold) and by per-example noise (within variance / n).
    rate_variance = np.mean(hits.mean(axis=2).var(axis=1, ddof=1))
    within = np.mean(hits.var(axis=1, ddof=1)) / n
    seed = max(0.0, rate_variance - within) / scipy.stats.norm.pdf(threshold) ** 2
    counts = np.bincount(inverse)
    per_run = np.stack([np.bincount(inverse, weights=run, minlength=len(counts))
                        for run in hits.reshape(-1, n)])
    offsets, user = _user_offsets(per_run, counts, threshold, seed)
    user = min(user, rho_arms)
    return NullModel(threshold, example=float(max(0.0, rho_arms - user)),
                     arm_example=float(max(0.0, rho_seeds - rho_arms)), seed=float(seed),
                     noise=float(max(0.0, 1.0 - rho_seeds - seed)),
                     offsets=tuple(float(o) for o in offsets), counts=tuple(int(c) for c in counts))


def calibrate(model: NullModel, num_seeds: int, replicates: int, alpha: float = 0.05, shift: float = 0.0,
              seed: int = 0, margin: float | None = None, power: float = 0.8) -> dict:
    """Error rates, coverage and power of `verdicts.compare` and `decide` over simulated comparisons.

    Args:
      model: The fitted model.
      num_seeds: Seeds per arm.
      replicates: Simulated comparisons.
      alpha: Test level (intervals are 1 - alpha).
      shift: Planted effect on the arm's latent threshold (0: no effect).
      seed: Seed of the simulation.
      margin: Equivalence margin (None: no equivalence test).
      power: Power of the reported detectable difference.

    Returns:
      {"rejection": share with p < alpha, "coverage": share of intervals
       holding the true difference, "equivalent": share decided "equivalent",
       "detectable": median reported detectable difference, "true_difference": it, "replicates": n}.
    """
    rng = np.random.default_rng(seed)
    truth = model.true_difference(shift)
    rejected = covered = equivalent = 0
    detectable = []
    for _ in range(replicates):
        differences, weights = model.simulate(rng, num_seeds, shift)
        result = compare("top", differences, weights, range(num_seeds), alpha, power, margin=margin,
                         projections=False)
        rejected += result.p_value < alpha
        covered += result.low <= truth <= result.high
        equivalent += decide([result], alpha)[0].verdict == EQUIVALENT
        detectable.append(result.detectable)
    return {"rejection": rejected / replicates, "coverage": covered / replicates,
            "equivalent": equivalent / replicates, "detectable": float(np.median(detectable)),
            "true_difference": truth, "replicates": replicates}


def claim_rates(model: NullModel, replicates: int, num_seeds: int = 3, arms: int = 2,
                offsets=(1.3, 0.8, 0.5, 0.25, 0.0), seed: int = 8, alpha: float = 0.05) -> dict:
    """How often a placebo run says anything claims an effect, under today's rule and the rule before.

    Each replicate is `arms - 1` placebo arms against one baseline (no true effect anywhere), each on
    several correlated metrics (one latent draw against thresholds `model.threshold + offset`, as top-1 to
    top-100 are; the last is the verdict metric).

    Returns:
      {"verdict_metric_only": share of runs with any claim when only the verdict metric gets words
       (`verdicts.judge`), "holm_per_metric": the same when every metric got words, Holm within each
       metric's family (the rule before), "replicates": n}.
    """
    rng = np.random.default_rng(seed)
    thresholds = tuple(model.threshold + offset for offset in offsets)
    names = [f"metric_{i}" for i in range(len(offsets))]
    claimed = per_metric = 0
    for _ in range(replicates):
        hits, _, counts = model.simulate_hits(rng, num_seeds, thresholds=thresholds, arms=arms)
        sums = user_sums(hits, counts)  # [metric, arm, seed, user]
        families = {name: [compare(name, sums[m, arm] - sums[m, -1], counts.astype(np.float64),
                                   range(num_seeds), alpha, projections=False) for arm in range(arms - 1)]
                    for m, name in enumerate(names)}
        judged = judge(families, names[-1], alpha, dict.fromkeys(names, True))
        claimed += any(c.verdict in CLAIMS for family in judged.values() for c in family)
        per_metric += any(c.verdict in CLAIMS for family in families.values() for c in decide(family, alpha))
    return {"verdict_metric_only": claimed / replicates, "holm_per_metric": per_metric / replicates,
            "replicates": replicates}


def design_claim_rate(model: NullModel, replicates: int, factors: int = 2, num_seeds: int = 3, seed: int = 60,
                      alpha: float = 0.05) -> float:
    """How often a placebo 2^factors design (no true effect) claims any main effect or interaction."""
    rng = np.random.default_rng(seed)
    names = tuple(f"f{i}" for i in range(factors))
    runs = tuple(tuple(n for n, on in zip(names, bits) if on)
                 for bits in itertools.product((False, True), repeat=factors))
    claimed = 0
    for _ in range(replicates):
        hits, _, counts = model.simulate_hits(rng, num_seeds, arms=len(runs))
        weights, per_user = counts.astype(np.float64), user_sums(hits, counts)
        sums = {(i, s): (per_user[i, s], weights) for i in range(len(runs)) for s in range(num_seeds)}
        found = design.effects(runs, names, lambda i, s, sums=sums: sums[i, s], range(num_seeds), "top",
                               alpha, 0.8)
        decided = decide([e.comparison for e in found], alpha, None)
        claimed += any(worded(c, True, len(e.factors) > 1).verdict in CLAIMS for e, c in zip(found, decided))
    return claimed / replicates


def calibrate_sequential(model: NullModel, rounds, replicates: int, comparisons: int = 1, shift: float = 0.0,
                         margin: float | None = None, seed: int = 70) -> dict:
    """Error rates, coverage and seeds spent by adaptive seeds (`sequential`) on simulated ablations.

    Each replicate is `comparisons` arms against one shared baseline, the first arm with a planted `shift`
    (the others with none), every arm simulated up to the last round's seeds; each round judges the open
    comparisons on their first seeds at the round's alpha, Holm across all of them (`sequential.replay`'s
    rule, without the saved models), and stops the decided ones.

    Args:
      model: The fitted model.
      rounds: The `sequential.Look`s.
      replicates: Simulated ablations.
      comparisons: Arms judged against the shared baseline.
      shift: Planted effect on the first arm (0: none anywhere).
      margin: Equivalence margin (None: none).
      seed: Seed of the simulation.

    Returns:
      {"false_claim": share of ablations with a better/worse claim about an arm without an effect, or (at
       shift 0 or beyond the margin) an "equivalent" where the truth is outside the margin, "first_decided":
       share where the first arm's verdict is better/worse/equivalent, "coverage": share of every stopped
       comparison's interval holding its true difference, "models": mean models trained, "fixed_models":
       (comparisons + 1) x the last round's seeds, "true_difference": the first arm's, "replicates": n}.
    """
    rng = np.random.default_rng(seed)
    truth = model.true_difference(shift)
    truths = [truth] + [0.0] * (comparisons - 1)
    most = rounds[-1].seeds
    false = first = covered = stopped_all = models = 0
    for _ in range(replicates):
        hits, _, counts = model.simulate_hits(rng, most, shift, arms=comparisons + 1)
        sums = user_sums(hits, counts)
        weights = counts.astype(np.float64)
        stops: dict[int, object] = {}
        for look in rounds:
            open_arms = [a for a in range(comparisons) if a not in stops]
            current = {a: stops[a] if a in stops else
                       compare("top", sums[a, :look.seeds] - sums[-1, :look.seeds], weights,
                               range(look.seeds), look.alpha, margin=margin, projections=False)
                       for a in range(comparisons)}
            judged = decide([current[a] for a in range(comparisons)], look.alpha, True)
            for a in open_arms:
                if judged[a].verdict in CLAIMS or look is rounds[-1]:
                    stops[a] = judged[a]
            if len(stops) == comparisons:
                break
        seeds = [len(stops[a].seeds) for a in range(comparisons)]
        models += sum(seeds) + max(seeds)
        claims = [stops[a].verdict for a in range(comparisons)]
        false += any((v in ("better", "worse") and truths[a] == 0.0)
                     or (v in ("better", "worse") and np.sign(truths[a]) != (1 if v == "better" else -1))
                     or (v == EQUIVALENT and margin is not None and abs(truths[a]) >= margin)
                     for a, v in enumerate(claims))
        first += claims[0] in CLAIMS
        covered += sum(stops[a].low <= truths[a] <= stops[a].high for a in range(comparisons))
        stopped_all += comparisons
    return {"false_claim": false / replicates, "first_decided": first / replicates,
            "coverage": covered / stopped_all, "models": models / replicates,
            "fixed_models": (comparisons + 1) * most, "true_difference": truth, "replicates": replicates}
