"""backprop's MLPClassifier/MLPRegressor against scikit-learn's, both with sklearn's defaults.

    python benchmarks/bench_sklearn.py [--repeat 3] [--backend cpu] [--datasets digits,wine]

For each data set (X standardized; regression targets standardized, R² on the original scale):
the test score (accuracy or R²) and the time per epoch (fit time / n_iter_) of both, the fits
alternated (sklearn, backprop, sklearn, ...) in one run, medians over --repeat; then the same
with solver="lbfgs" (time per iteration). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn.neural_network import MLPRegressor as SkRegressor
from sklearn.preprocessing import StandardScaler

import backprop as bp

DATASETS = {
    "digits": lambda: (*datasets.load_digits(return_X_y=True), "classification"),
    "breast_cancer": lambda: (*datasets.load_breast_cancer(return_X_y=True), "classification"),
    "wine": lambda: (*datasets.load_wine(return_X_y=True), "classification"),
    "diabetes": lambda: (*datasets.load_diabetes(return_X_y=True), "regression"),
    "friedman1": lambda: (*datasets.make_friedman1(n_samples=20_000, random_state=0), "regression"),
}


def run_one(make, X_train, y_train, X_test, y_test, y_scaler):
    model = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        model.fit(X_train, y_train)
        seconds = time.perf_counter() - start
    if y_scaler is None:
        score = model.score(X_test, y_test)
    else:
        from sklearn.metrics import r2_score
        pred = y_scaler.inverse_transform(model.predict(X_test).reshape(-1, 1)).ravel()
        score = r2_score(y_test, pred)
    return score, seconds / max(model.n_iter_, 1), model.n_iter_


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--solvers", default="adam,lbfgs")
    args = parser.parse_args()
    print(f"backend {args.backend!r}, medians of {args.repeat} alternated fits, random_state 0..")
    print()
    print("| data set | solver | n_train | sklearn score | backprop score | Δ score | "
          "sklearn ms/epoch | backprop ms/epoch | speed-up | epochs (sk / bp) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.datasets.split(","):
        X, y, task = DATASETS[name]()
        strat = y if task == "classification" else None
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25,
                                                            random_state=0, stratify=strat)
        x_scaler = StandardScaler().fit(X_train)
        X_train, X_test = x_scaler.transform(X_train), x_scaler.transform(X_test)
        y_scaler = None
        if task == "regression":
            y_scaler = StandardScaler().fit(y_train.reshape(-1, 1))
            y_fit = y_scaler.transform(y_train.reshape(-1, 1)).ravel()
        else:
            y_fit = y_train
        for solver in args.solvers.split(","):
            Sk = SkClassifier if task == "classification" else SkRegressor
            Bp = bp.MLPClassifier if task == "classification" else bp.MLPRegressor
            rows = {"sk": [], "bp": []}
            for r in range(args.repeat):
                rows["sk"].append(run_one(lambda: Sk(solver=solver, random_state=r), X_train,
                                          y_fit, X_test, y_test, y_scaler))
                rows["bp"].append(run_one(lambda: Bp(solver=solver, random_state=r,
                                                     backend=args.backend),
                                          X_train, y_fit, X_test, y_test, y_scaler))
            sk = np.median(np.array(rows["sk"]), axis=0)
            ours = np.median(np.array(rows["bp"]), axis=0)
            print(f"| {name} | {solver} | {len(X_train)} | {sk[0]:.4f} | {ours[0]:.4f} | "
                  f"{ours[0] - sk[0]:+.4f} | {1e3 * sk[1]:.2f} | {1e3 * ours[1]:.2f} | "
                  f"{sk[1] / ours[1]:.2f}x | {sk[2]:.0f} / {ours[2]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
