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
"""

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score


def fit_timed(make, x, y, reps):
    times = []
    model = None
    for _ in range(reps):
        model = make()
        t0 = time.perf_counter()
        model.fit(x, y)
        times.append(time.perf_counter() - t0)
    return model, times


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/bench-train")
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 7
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

    rows = []
    for name, make in [("sklearn", matched), ("sklearn tol=1e-4", default_tol)]:
        model, times = fit_timed(make, x_train, y_train, reps)
        auc = roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])
        rows.append((name, times, auc, model))

    # The Rust side's AUC, recomputed here from its exported scores: same metric.
    linfa_auc_here = roc_auc_score(y_test, linfa_scores)
    if abs(linfa_auc_here - linfa["test_auc"]) > 1e-9:
        print(f"warning: linfa AUC {linfa['test_auc']} recomputes as {linfa_auc_here}")

    lt = linfa["fit_seconds"]
    print(
        f"\ntraining matrix {n} x {x_train.shape[1]}, test {x_test.shape[0]} rows, "
        f"{int(y_train.sum())} training positives; median of {len(lt)} fits each"
    )
    print(f"{'fit':<18} {'median s':>9} {'min s':>8} {'test AUC':>9} {'iters':>6}")
    print(f"{'linfa':<18} {statistics.median(lt):>9.4f} {min(lt):>8.4f} {linfa['test_auc']:>9.4f} {'':>6}")
    for name, times, auc, model in rows:
        print(
            f"{name:<18} {statistics.median(times):>9.4f} {min(times):>8.4f} {auc:>9.4f} "
            f"{int(model.n_iter_[0]):>6}"
        )
    print(f"{'generator optimum':<18} {'':>9} {'':>8} {linfa['optimum_test_auc']:>9.4f}")

    _, times, auc, model = rows[0]
    ratio = statistics.median(lt) / statistics.median(times)
    diff = linfa["test_auc"] - auc
    wdiff = max(
        np.max(np.abs(np.asarray(linfa["weights"]) - model.coef_[0])),
        abs(linfa["intercept"] - model.intercept_[0]),
    )
    print(f"\nlinfa / sklearn fit time = {ratio:.2f} (goal < 1)")
    print(f"AUC difference = {diff:+.5f} (goal <= 0.005 in absolute value)")
    print(f"largest parameter difference linfa vs sklearn = {wdiff:.2e}")


if __name__ == "__main__":
    main()
