"""Train the reference models at image build time on the iris data set shipped in scikit-learn.

Writes ``good.pkl`` (the release's model: logistic regression for v1, a random forest for v2,
both accurate) and ``degraded.pkl`` (a deliberately worse model trained on one weak feature),
plus ``metrics.json`` with each model's accuracy on the fixed holdout split.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

SEED = 7


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    x, y = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=SEED, stratify=y)
    if args.version == "v2":
        good = RandomForestClassifier(n_estimators=50, random_state=SEED)
    else:
        good = LogisticRegression(max_iter=500)
    good.fit(x_train, y_train)
    # Sepal width alone separates the classes poorly: a plausible but clearly worse model.
    weak_feature = 1
    degraded = LogisticRegression(max_iter=500).fit(x_train[:, [weak_feature]], y_train)

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "good.pkl", "wb") as fh:
        pickle.dump({"model": good, "features": None}, fh)
    with open(args.out / "degraded.pkl", "wb") as fh:
        pickle.dump({"model": degraded, "features": [weak_feature]}, fh)
    metrics = {
        "version": args.version,
        "algorithm": type(good).__name__,
        "good_accuracy": float(good.score(x_test, y_test)),
        "degraded_accuracy": float(degraded.score(x_test[:, [weak_feature]], y_test)),
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
