"""Train an iris model for MLServer's scikit-learn runtime into OUT (model.joblib, model-settings.json).

v1 is logistic regression, v2 a random forest; the version is in the model's settings, so the
Open Inference Protocol's model metadata (GET /v2/models/iris) reports it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    x, y = load_iris(return_X_y=True)
    x_train, _x_test, y_train, _y_test = train_test_split(x, y, test_size=0.3, random_state=7, stratify=y)
    model = RandomForestClassifier(n_estimators=50, random_state=7) if args.version == "v2" \
        else LogisticRegression(max_iter=500)
    model.fit(x_train, y_train)
    args.out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, args.out / "model.joblib")
    # "versions" is what the model metadata reports; parameters.version what each answer carries.
    settings = {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel", "versions": [args.version],
                "parameters": {"uri": "./model.joblib", "version": args.version}}
    (args.out / "model-settings.json").write_text(json.dumps(settings, indent=2))


if __name__ == "__main__":
    main()
