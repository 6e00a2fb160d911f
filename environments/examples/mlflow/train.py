"""Log an iris model with MLflow into OUT: v1 logistic regression, v2 a random forest.

The model takes a DataFrame with the four iris column names (its signature records them) and
answers class ids. Saved with cloudpickle: the default format wants skops.
"""

from __future__ import annotations

import argparse

import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    x, y = load_iris(return_X_y=True)
    x_train, _x_test, y_train, _y_test = train_test_split(x, y, test_size=0.3, random_state=7, stratify=y)
    frame = pd.DataFrame(x_train, columns=COLUMNS)
    model = RandomForestClassifier(n_estimators=50, random_state=7) if args.version == "v2" \
        else LogisticRegression(max_iter=500)
    model.fit(frame, y_train)
    mlflow.sklearn.save_model(model, args.out, serialization_format="cloudpickle",
                              signature=infer_signature(frame, model.predict(frame)))


if __name__ == "__main__":
    main()
