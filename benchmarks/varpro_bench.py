"""Variable projection against the joint fit on Chinchilla: optimum, conditioning and time, per objective.

    python benchmarks/varpro_bench.py [--repeats 3] [--out FILE.json]

Data as benchmarks/fit_bench.py (Epoch's 240 rows, D = FLOP/(6N)). For the Huber (delta 1e-3) and l2 objectives on
log residuals:
- joint: `fit` with Epoch's 4,500-start grid over (log A, log B, log E, alpha, beta), the best 10 refined;
- varpro: `varpro_fit`, a 41 x 41 grid over (alpha, beta) in [0, 2] with the coefficients by NNLS, then L-BFGS-B on
  the profile f(alpha, beta) = min over (log A, log B, log E) from the best 5 grid points.
Conditioning at the optimum: the condition number of the objective's Hessian (central differences of the analytic
gradient) in the joint fit's coordinates (5 x 5) and of the profile's Hessian over (alpha, beta) (2 x 2, central
differences of the profile's envelope gradient), and of the Gauss-Newton matrices J'J with J scaled to unit columns.
Timed in this interpreter after a warm-up; the median of `repeats`; wall and CPU seconds with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.fit_bench import CSV, cpu_model, shared_dir  # noqa: E402
from costlaw.costmodel.core.files import write_atomic  # noqa: E402
from costlaw.fitting import fit, get_law, varpro_fit  # noqa: E402
from costlaw.fitting.constraints import Space  # noqa: E402
from costlaw.fitting.fit import problem_for  # noqa: E402
from costlaw.fitting.objective import linearise, value_and_grad  # noqa: E402
from costlaw.fitting.varpro import Projector, profile  # noqa: E402


def hessian(grad, x, h=1e-5):
    """Central differences of an analytic gradient, symmetrised."""
    p = len(x)
    H = np.empty((p, p))
    for i in range(p):
        e = np.zeros(p)
        e[i] = h * max(1.0, abs(x[i]))
        H[:, i] = (grad(x + e) - grad(x - e)) / (2 * e[i])
    return 0.5 * (H + H.T)


def cond(M) -> float:
    ev = np.linalg.eigvalsh(M)
    return float(ev[-1] / ev[0]) if ev[0] > 0 else float("inf")


def scaled(M):
    """M with a unit diagonal: the conditioning that units (log A vs alpha) do not explain."""
    s = 1.0 / np.sqrt(np.abs(np.diag(M)))
    return M * np.outer(s, s)


def gn_cond(J) -> float:
    Js = J / np.linalg.norm(J, axis=0)
    return cond(Js.T @ Js)


def conditioning(law, X, y, res, loss):
    prob = problem_for(law, Space(law), X, y, None, loss, 1e-3, "log")
    proj = Projector(law, law.features(X))
    theta = res.theta

    def joint_grad(t):
        return value_and_grad(prob.model, t, prob.target, None, loss, 1e-3, "log")[1]

    def profile_grad(e):
        return profile(prob, proj, e)[1]

    _, J = linearise(prob.model, theta, "log")
    Jc, Je = J[:, proj.amp], J[:, proj.exp]
    # Profile Gauss-Newton: the exponents' columns with the coefficients' span projected out.
    Q, _ = np.linalg.qr(Jc)
    Jp = Je - Q @ (Q.T @ Je)
    Hj, Hp = hessian(joint_grad, theta), hessian(profile_grad, theta[proj.exp])
    return {"joint_hessian": cond(Hj), "joint_hessian_unit_diagonal": cond(scaled(Hj)),
            "profile_hessian": cond(Hp), "profile_hessian_unit_diagonal": cond(scaled(Hp)),
            "joint_gauss_newton": gn_cond(J), "profile_gauss_newton": gn_cond(Jp)}


def timed(fn, repeats):
    out = []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        res = fn()
        out.append((time.perf_counter() - w0, time.process_time() - c0, res))
    out.sort(key=lambda r: r[0])
    return out[(len(out) - 1) // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "varpro_bench.json"))
    args = ap.parse_args(argv)
    raw = pd.read_csv(shared_dir() / CSV)
    df = raw[raw.loss < sorted(raw.loss)[-5]]
    N = df["Model Size"].to_numpy()
    X = np.column_stack([N, df["Training FLOP"].to_numpy() / (6 * N)])
    y = df.loss.to_numpy()
    law = get_law("chinchilla")
    fit(law, X, y, starts=10, refine=2)
    varpro_fit(law, X, y, grid=[[0.3, 0.3]], refine=1)
    load_before = os.getloadavg()
    result = {}
    for loss in ("huber", "l2"):
        jw, jc, joint = timed(lambda loss=loss: fit(law, X, y, loss=loss), args.repeats)
        vw, vc, vp = timed(lambda loss=loss: varpro_fit(law, X, y, loss=loss), args.repeats)
        result[loss] = {
            "joint": {"objective": joint.objective, "params": joint.params, "wall_s": round(jw, 3),
                      "cpu_s": round(jc, 3), "starts": joint.n_starts, "refined": joint.n_refined,
                      "n_at_best": joint.n_at_best, "grad_norm": joint.grad_norm},
            "varpro": {"objective": vp.objective, "params": vp.params, "wall_s": round(vw, 3), "cpu_s": round(vc, 3),
                       "starts": vp.n_starts, "refined": vp.n_refined, "n_at_best": vp.n_at_best,
                       "grad_norm": vp.grad_norm},
            "objective_rel_diff": (vp.objective - joint.objective) / joint.objective,
            "param_rel_diff": {k: (vp.params[k] - joint.params[k]) / joint.params[k] for k in joint.params},
            "condition": conditioning(law, X, y, joint, loss),
        }
    out = {"machine": {"cpu": cpu_model(), "python": platform.python_version(), "numpy": np.__version__,
                       "scipy": scipy.__version__, "loadavg": {"before": [round(v, 2) for v in load_before],
                                                               "after": [round(v, 2) for v in os.getloadavg()]}},
           "data": {"file": str(CSV), "rows_used": int(len(y))}, "repeats": args.repeats, "results": result}
    write_atomic(args.out, json.dumps(out, indent=2) + "\n")
    print(markdown(out))
    return 0


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"Machine: {m['cpu']}; load average before/after {m['loadavg']['before'][0]} / "
             f"{m['loadavg']['after'][0]}.", "",
             "| objective | method | starts (refined, at best) | objective value | alpha | beta | E | A | B | wall s | "
             "CPU s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for loss, res in r["results"].items():
        for name in ("joint", "varpro"):
            v = res[name]
            p = v["params"]
            lines.append(f"| {loss} | {name} | {v['starts']} ({v['refined']}, {v['n_at_best']}) | "
                         f"{v['objective']:.12g} | {p['alpha']:.6f} | {p['beta']:.6f} | {p['E']:.6f} | "
                         f"{p['A']:.3f} | {p['B']:.2f} | {v['wall_s']:.2f} | {v['cpu_s']:.2f} |")
    lines += ["", "| objective | objective rel. diff | max param rel. diff | cond(joint Hessian, 5x5; unit diagonal) | "
              "cond(profile Hessian, 2x2; unit diagonal) | cond(joint J'J) | cond(profile J'J) |",
              "|---|---|---|---|---|---|---|"]
    for loss, res in r["results"].items():
        c = res["condition"]
        lines.append(f"| {loss} | {res['objective_rel_diff']:.1e} | "
                     f"{max(abs(v) for v in res['param_rel_diff'].values()):.1e} | {c['joint_hessian']:.3g}; "
                     f"{c['joint_hessian_unit_diagonal']:.3g} | {c['profile_hessian']:.3g}; "
                     f"{c['profile_hessian_unit_diagonal']:.3g} | {c['joint_gauss_newton']:.3g} | "
                     f"{c['profile_gauss_newton']:.3g} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
