"""`evaluate_at`: a law's objective, R² and predictions at given parameters, without fitting: how well a published
fit describes these data, in this objective (e.g. Hoffmann et al.'s parameters on Epoch's 240 rows)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import clean_json
from costlaw.fitting.constraints import Space
from costlaw.fitting.data import check_weights, prepare
from costlaw.fitting.fit import check_loss, problem_for, r2_ceiling
from costlaw.fitting.law import Law, get_law
from costlaw.fitting.objective import definition, linearise


@dataclass
class Evaluation:
    """The law at `params`: objective (sum of the loss, as `fit` reports it), its gradient norm in fit space there
    (0 at an optimum of these data), R², and each row's prediction in the caller's row order."""

    law: Law
    params: dict
    theta: np.ndarray
    objective: float
    grad_norm: float
    n_points: int
    r2: float
    r2_ceiling: float | None
    y_pred: np.ndarray
    loss: str
    delta: float
    residuals: str
    weighted: bool

    def predict(self, X) -> np.ndarray:
        return self.law.predict_theta(self.theta, X)

    @property
    def definition(self) -> str:
        return definition(self.loss, self.delta, self.residuals, self.weighted)

    def to_dict(self) -> dict:
        return clean_json({"law": self.law.name, "formula": self.law.formula, "evaluated_at": self.params,
                           "params": self.params, "objective": self.objective,
                           "objective_definition": self.definition, "grad_norm": self.grad_norm,
                           "n_points": self.n_points, "r2": self.r2, "r2_ceiling": self.r2_ceiling,
                           "loss": self.loss, "delta": self.delta if self.loss == "huber" else None,
                           "residuals": self.residuals, "weighted": self.weighted})


def evaluate_at(law, X, y, params: Mapping, loss: str = "huber", delta: float = 1e-3, residuals: str = "log",
                weights=None, x_names=None, y_name: str = "y") -> Evaluation:
    """The objective, R² and predictions of `law` at natural `params` (every parameter named) on X, y."""
    law = get_law(law)
    check_loss(loss, delta, residuals)
    missing = [k for k in law.params if k not in params]
    if missing:
        raise CostlawError(f"--eval-at: give every parameter of {law.name}; missing {', '.join(missing)} "
                           f"(e.g. --eval-at {','.join(f'{k}=...' for k in law.params)})")
    unknown = [k for k in params if k not in law.params]
    if unknown:
        raise CostlawError(f"--eval-at: {unknown[0]!r} is not a parameter of {law.name}; its parameters are "
                           f"{', '.join(law.params)}")
    theta = law.theta_of(params)
    X, y = prepare(law, X, y, x_names, y_name, residuals, n_params=0)
    w = check_weights(weights, len(y))
    space = Space(law)
    prob = problem_for(law, space, X, y, w, loss, delta, residuals)
    obj = prob.value(theta)
    with np.errstate(all="ignore"):
        pred_t, J = linearise(prob.model, theta, residuals)
        r = prob.target - pred_t
        c = np.clip(r, -delta, delta) if loss == "huber" else (r if loss == "l2" else np.sign(r))
        g = -(J.T @ (c if w is None else w * c))
    pred = law.bind(law.features(X)).predict(theta[None, :])[0]
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    return Evaluation(law=law, params={k: float(params[k]) for k in law.params}, theta=theta, objective=obj,
                      grad_norm=float(np.linalg.norm(g)), n_points=len(y), r2=r2, r2_ceiling=r2_ceiling(X, y),
                      y_pred=pred, loss=loss, delta=float(delta), residuals=residuals, weighted=w is not None)
