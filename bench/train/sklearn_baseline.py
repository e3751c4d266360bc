"""The Python baseline of the training benchmark (bench/train/run.sh).

Loads the matrices the Rust side exported (out/bench-train/*.npy: the training and
test rows of `pipeline train`'s split, encoded by the model crate), fits scikit-learn's
LogisticRegression on the training rows as equivalently to `pipeline train`'s linfa fit
as the two libraries allow, times only `fit`, scores the same test rows, and prints
both sides beside each other.

Equivalence of settings (linfa-logistic 0.8 vs scikit-learn 1.9, solver lbfgs):

* Objective. linfa minimises   sum_i logloss_i + alpha/2 * |w|^2   (intercept not
  penalised). scikit-learn minimises   C * sum_i logloss_i + 1/2 * |w|^2   (intercept
  not penalised with lbfgs; internally divided by n, which moves no minimum). Same
  minimiser when C = 1 / alpha; `pipeline train` uses alpha = 1, so C = 1.
* Class weights: none on either side (class_weight=None). `pipeline train` handles
  the ~9% imbalance with the decision threshold, which does not change the fit or AUC.
* Solver: L-BFGS on both sides (linfa: argmin's L-BFGS, 10 memory pairs, More-Thuente
  line search; scikit-learn: scipy's L-BFGS-B, 10 memory pairs). Same iteration cap
  (max_iter = linfa's max_iterations).
* Tolerance. linfa stops when the L2 norm of the gradient of the summed objective is
  below its tolerance. scipy stops when the largest gradient component of
  scikit-learn's objective, which is the summed one divided by n_train, is below tol.
  The matched setting is therefore tol = linfa_tolerance / n_train (a max-norm bound
  no looser than linfa's L2 bound). The "sklearn default" row uses tol = 1e-4, what a
  scikit-learn user gets without asking; it is shown for information.
* Both sides fit an intercept and take the same float64 matrix.
* Threads. linfa's fit runs on one thread. scikit-learn's loss uses OpenMP and
  numpy/scipy use OpenBLAS, with as many threads as cores by default; on a small shared
  machine those threads can thrash, so every scikit-learn setting is also timed limited
  to one thread (threadpoolctl), and the goal is judged against the faster of the two.
"""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits


def fit_timed(configs, x, y, reps, linfa_cmd):
    """Times each scikit-learn config's fit `reps` times and, when `linfa_cmd` is given,
    one linfa fit per round in between (`train_bench --fit-only --reps 1`, which prints
    its fit seconds), so that a change of load on the machine hits every side alike."""
    times = {name: [] for name, _, _ in configs}
    times["linfa"] = []
    models = {}
    for _ in range(reps):
        if linfa_cmd:
            run = subprocess.run(linfa_cmd, check=True, capture_output=True, text=True)
            times["linfa"].extend(json.loads(run.stdout))
        for name, make, threads in configs:
            model = make()
            with threadpool_limits(limits=threads):
                t0 = time.perf_counter()
                model.fit(x, y)
                times[name].append(time.perf_counter() - t0)
            models[name] = model
    return times, models


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/bench-train")
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    # The train_bench binary: linfa's fit is timed again between these fits.
    linfa_bin = sys.argv[3] if len(sys.argv) > 3 else None
    linfa = json.loads((out / "linfa.json").read_text())
    x_train = np.load(out / "x_train.npy")
    y_train = np.load(out / "y_train.npy")
    x_test = np.load(out / "x_test.npy")
    y_test = np.load(out / "y_test.npy")
    linfa_scores = np.load(out / "linfa_test_scores.npy")[:, 0]
    n = x_train.shape[0]

    c = 1.0 / linfa["alpha"]
    max_iter = int(linfa["max_iterations"])
    matched_tol = linfa["gradient_tolerance"] / n

    def matched():
        return LogisticRegression(
            C=c, class_weight=None, solver="lbfgs", tol=matched_tol, max_iter=max_iter
        )

    def default_tol():
        return LogisticRegression(C=c, class_weight=None, solver="lbfgs", max_iter=max_iter)

    configs = [
        ("sklearn", matched, None),
        ("sklearn 1 thread", matched, 1),
        ("sklearn tol=1e-4", default_tol, None),
        ("sklearn tol=1e-4 1 thr", default_tol, 1),
    ]
    linfa_cmd = linfa_bin and [linfa_bin, "--out", str(out), "--fit-only", "--reps", "1"]
    times, models = fit_timed(configs, x_train, y_train, reps, linfa_cmd)
    rows = []
    for name, _, _ in configs:
        model = models[name]
        auc = roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])
        rows.append((name, times[name], auc, model))

    # The Rust side's AUC, recomputed here from its exported scores: same metric.
    linfa_auc_here = roc_auc_score(y_test, linfa_scores)
    if abs(linfa_auc_here - linfa["test_auc"]) > 1e-9:
        print(f"warning: linfa AUC {linfa['test_auc']} recomputes as {linfa_auc_here}")

    # linfa's fit times: interleaved with scikit-learn's when measured here, else
    # those train_bench measured before this script ran.
    lt = times["linfa"] or linfa["fit_seconds"]
    load = os.getloadavg()[0]
    print(
        f"\ntraining matrix {n} x {x_train.shape[1]}, test {x_test.shape[0]} rows, "
        f"{int(y_train.sum())} training positives; median of {len(lt)} fits each; "
        f"{os.cpu_count()} cores, load average {load:.2f}"
    )
    print(f"{'fit':<23} {'median s':>9} {'min s':>8} {'test AUC':>9} {'iters':>6}")
    print(f"{'linfa (1 thread)':<23} {statistics.median(lt):>9.4f} {min(lt):>8.4f} {linfa['test_auc']:>9.4f}")
    for name, t, auc, model in rows:
        print(
            f"{name:<23} {statistics.median(t):>9.4f} {min(t):>8.4f} {auc:>9.4f} "
            f"{int(model.n_iter_[0]):>6}"
        )
    print(f"{'generator optimum':<23} {'':>9} {'':>8} {linfa['optimum_test_auc']:>9.4f}")

    # The goal is judged against the matched-tolerance fit at its faster thread setting.
    best = min(rows[:2], key=lambda r: statistics.median(r[1]))
    name, t, auc, model = best
    ratio = statistics.median(lt) / statistics.median(t)
    diff = linfa["test_auc"] - auc
    wdiff = max(
        np.max(np.abs(np.asarray(linfa["weights"]) - model.coef_[0])),
        abs(linfa["intercept"] - model.intercept_[0]),
    )
    for other, ot, _, _ in rows:
        print(f"linfa / {other:<22} fit time = {statistics.median(lt) / statistics.median(ot):.2f}")
    print(f"\nlinfa / sklearn fit time = {ratio:.2f} (goal < 1; against '{name}')")
    print(f"AUC difference = {diff:+.5f} (goal <= 0.005 in absolute value)")
    print(f"largest parameter difference linfa vs sklearn = {wdiff:.2e}")


if __name__ == "__main__":
    main()
