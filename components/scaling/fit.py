"""Scaling-law fits from sweep runs: which model size and token count a compute budget should buy.

    runs = [Run(flops=1e18, params=2e7, tokens=8.3e9, loss=3.41), ...]   # C = 6·N·D per run
    report = fit(runs, target_flops=1e20)
    report.isoflop.n_exponent, report.parametric.n_exponent, report.target

Two estimates, as in Hoffmann et al. 2022 ("Chinchilla"):
- Approach 2, isoFLOP: for each budget C, a parabola of loss against log N; its minimum is the
  compute-optimal N*(C), with D*(C) = C / 6N*. Power laws N* ∝ C^a and D* ∝ C^b are fitted
  through those minima (least squares in log-log).
- Approach 3, parametric: L(N, D) = E + A/N^α + B/D^β, fitted on all runs by minimizing the Huber
  loss (δ = 1e-3) of log-loss residuals with L-BFGS from a grid of starts. The optimum for a
  budget is N* = G·(C/6)^(β/(α+β)), D* = (C/6)^(α/(α+β))/G with G = (αA/(βB))^(1/(α+β)).
Intervals are bootstrap percentiles (5th–95th) over runs resampled with replacement (within
each budget for approach 2).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

HUBER_DELTA = 1e-3
TOP_STARTS = 4


@dataclass(frozen=True)
class Run:
    """One sweep point: its compute, model size, tokens trained on and held-out loss."""

    flops: float  # the budget the run belongs to (≈ 6·params·tokens)
    params: float
    tokens: float
    loss: float


@dataclass
class Exponents:
    """Compute-optimal N*(C) ∝ C^n_exponent and D*(C) ∝ C^d_exponent, with 90% intervals."""

    n_exponent: float
    d_exponent: float
    n_interval: tuple[float, float]
    d_interval: tuple[float, float]


@dataclass
class IsoFlopFit(Exponents):
    minima: list[dict]  # per budget: flops, params (N*), tokens (D*), loss at the minimum
    n_coefficient: float  # N*(C) = n_coefficient · C^n_exponent

    def optimal(self, flops: float) -> tuple[float, float]:
        n = self.n_coefficient * flops**self.n_exponent
        return n, flops / (6 * n)


@dataclass
class ParametricFit(Exponents):
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, params: float, tokens: float) -> float:
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta

    def optimal(self, flops: float) -> tuple[float, float]:
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1 / (a + b))
        return g * (flops / 6) ** (b / (a + b)), (flops / 6) ** (a / (a + b)) / g


@dataclass
class FitReport:
    runs: int
    isoflop: IsoFlopFit | None  # None when fewer than 2 budgets have a minimum inside the grid
    parametric: ParametricFit
    target: dict | None  # flops, params and tokens from each approach, predicted loss

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------- approach 2
def _budgets(runs: list[Run]) -> dict[float, list[Run]]:
    groups: dict[float, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.flops, []).append(r)
    return dict(sorted(groups.items()))


def isoflop_minimum(flops: float, group: list[Run]) -> dict:
    """The minimum of the parabola of loss against log N over one budget's runs: flops, params
    (N*), tokens (D* = C/6N*) and the loss there. ValueError when the runs cannot place it."""
    x = np.log([r.params for r in group])
    y = np.array([r.loss for r in group])
    if len(set(x)) < 3:
        raise ValueError(f"budget {flops:.3g}: an isoFLOP fit needs at least 3 model sizes")
    a, b, c = np.polyfit(x, y, 2)
    if a <= 0:
        raise ValueError(
            f"budget {flops:.3g}: loss has no minimum over the sizes tried (the curve bends "
            "the wrong way); widen the size grid around the best run"
        )
    log_n = -b / (2 * a)
    if not x.min() <= log_n <= x.max():
        raise ValueError(
            f"budget {flops:.3g}: the loss minimum (N ≈ {math.exp(log_n):.3g}) lies outside "
            f"the sizes tried ({math.exp(x.min()):.3g}–{math.exp(x.max()):.3g}); widen the "
            "size grid toward it"
        )
    n = math.exp(log_n)
    return {"flops": flops, "params": n, "tokens": flops / (6 * n), "loss": c - b * b / (4 * a)}


def _isoflop_minima(groups: dict[float, list[Run]]) -> list[dict]:
    return [isoflop_minimum(flops, group) for flops, group in groups.items()]


def _power_law(minima: list[dict]) -> tuple[float, float, float]:
    """(n exponent, n coefficient, d exponent) through the minima, in log-log."""
    logc = np.log([m["flops"] for m in minima])
    n_slope, n_icept = np.polyfit(logc, np.log([m["params"] for m in minima]), 1)
    d_slope, _ = np.polyfit(logc, np.log([m["tokens"] for m in minima]), 1)
    return float(n_slope), float(math.exp(n_icept)), float(d_slope)


def fit_isoflop(runs: list[Run], bootstrap: int = 200, seed: int = 0) -> IsoFlopFit:
    groups = _budgets(runs)
    if len(groups) < 2:
        raise ValueError("an isoFLOP fit needs runs at 2 or more compute budgets")
    minima = _isoflop_minima(groups)
    n_exp, n_coef, d_exp = _power_law(minima)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):
        resampled = {c: [g[i] for i in rng.integers(0, len(g), len(g))] for c, g in groups.items()}
        try:
            n_b, _, d_b = _power_law(_isoflop_minima(resampled))
        except ValueError:  # a resample with too few distinct sizes or no minimum
            continue
        samples.append((n_b, d_b))
    return IsoFlopFit(
        **_exponents(n_exp, d_exp, samples),
        minima=minima,
        n_coefficient=n_coef,
    )


# --------------------------------------------------------------------------------- approach 3
def _huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _parametric(runs: list[Run], starts: list[tuple]) -> tuple[float, ...]:
    from scipy.optimize import minimize

    log_n = np.log([r.params for r in runs])
    log_d = np.log([r.tokens for r in runs])
    log_l = np.log([r.loss for r in runs])

    def objective(theta: np.ndarray) -> float:
        a, b, e, alpha, beta = theta
        terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
        return float(_huber(np.logaddexp.reduce(terms, axis=0) - log_l).sum())

    # Optimize from the few starts that already fit best (a full L-BFGS from every grid
    # point costs ~0.1 s each and they end in the same basin).
    starts = sorted(starts, key=lambda t: objective(np.array(t, dtype=float)))[:TOP_STARTS]
    best = None
    for start in starts:
        result = minimize(objective, np.array(start, dtype=float), method="L-BFGS-B")
        if best is None or result.fun < best.fun:
            best = result
    a, b, e, alpha, beta = best.x
    return math.exp(e), math.exp(a), math.exp(b), float(alpha), float(beta)


# Starting points in the spirit of Hoffmann et al.'s grid: log A, log B ∈ {0, 5, …, 25},
# log E ∈ {-1, -0.5, …, 1}, α, β ∈ {0, 0.5, …, 2} (0 replaced by 0.1: an exponent of 0 is flat).
_GRID = list(
    itertools.product(
        range(0, 30, 5), range(0, 30, 5), [-1, -0.5, 0, 0.5, 1], [0.1, 0.5, 1, 1.5, 2],
        [0.1, 0.5, 1, 1.5, 2],
    )
)  # fmt: skip


def fit_parametric(runs: list[Run], bootstrap: int = 50, seed: int = 0) -> ParametricFit:
    if len(runs) < 5:
        raise ValueError("a parametric fit needs at least 5 runs (it has 5 unknowns)")
    E, A, B, alpha, beta = _parametric(runs, _GRID)
    rng = np.random.default_rng(seed)
    samples = []
    start = [(math.log(A), math.log(B), math.log(E), alpha, beta)]
    for _ in range(bootstrap):
        resampled = [runs[i] for i in rng.integers(0, len(runs), len(runs))]
        _, _, _, a_b, b_b = _parametric(resampled, start)  # warm start from the full fit
        samples.append((b_b / (a_b + b_b), a_b / (a_b + b_b)))
    n_exp, d_exp = beta / (alpha + beta), alpha / (alpha + beta)
    return ParametricFit(
        **_exponents(n_exp, d_exp, samples),
        E=E,
        A=A,
        B=B,
        alpha=alpha,
        beta=beta,
    )


def _exponents(n_exp: float, d_exp: float, samples: list[tuple[float, float]]) -> dict:
    """The `Exponents` fields: point estimates and bootstrap intervals from (n, d) samples."""
    return {
        "n_exponent": n_exp,
        "d_exponent": d_exp,
        "n_interval": _interval([s[0] for s in samples], n_exp),
        "d_interval": _interval([s[1] for s in samples], d_exp),
    }


def _interval(values: list[float], point: float) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return (point, point)
    return (float(np.percentile(finite, 5)), float(np.percentile(finite, 95)))


def fit(runs: list[Run], target_flops: float | None = None, bootstrap: int = 200) -> FitReport:
    """Both fits, and each one's recommendation for `target_flops` (with the predicted loss)."""
    iso = fit_isoflop(runs, bootstrap=bootstrap)
    par = fit_parametric(runs, bootstrap=max(10, bootstrap // 4))
    target = None
    if target_flops:
        n2, d2 = iso.optimal(target_flops)
        n3, d3 = par.optimal(target_flops)
        target = {
            "flops": target_flops,
            "isoflop": {"params": n2, "tokens": d2},
            "parametric": {"params": n3, "tokens": d3, "loss": par.loss(n3, d3)},
        }
    return FitReport(runs=len(runs), isoflop=iso, parametric=par, target=target)


def recommend(report: dict, flops: float) -> dict:
    """N*, D* and the predicted loss for `flops` from a saved fit (`FitReport.to_dict()`, the
    `fit` key of a sweep report): the parametric fit's answer, with the isoFLOP one beside it."""
    fields = {k: report["parametric"][k] for k in ("E", "A", "B", "alpha", "beta")}
    par = ParametricFit(n_exponent=0, d_exponent=0, n_interval=(0, 0), d_interval=(0, 0), **fields)
    n, d = par.optimal(flops)
    found: dict = {"params": n, "tokens": d, "loss": par.loss(n, d), "isoflop": None}
    iso = report.get("isoflop")
    if iso:
        n_iso = iso["n_coefficient"] * flops ** iso["n_exponent"]
        found["isoflop"] = {"params": n_iso, "tokens": flops / (6 * n_iso)}
    return found
