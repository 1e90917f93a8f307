"""Regenerate fairfix/datasets/adult_test_predictions.csv.gz, the demo's predictions file.

A scikit-learn logistic regression on the Adult training split (sex and race
removed from the inputs), scored on the Adult test split.  Deterministic.
Run: python scripts/make_adult_predictions.py
"""

from __future__ import annotations

import numpy as np
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairfix.datasets import ADULT_LABEL, HERE, load_adult

train, test = load_adult("train"), load_adult("test")
numeric = ["age", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
categorical = ["workclass", "education", "marital-status", "occupation", "relationship", "native-country"]
model = make_pipeline(
    make_column_transformer(
        (StandardScaler(), numeric),
        (OneHotEncoder(handle_unknown="ignore"), categorical),
    ),
    LogisticRegression(max_iter=2000),
)
model.fit(train[numeric + categorical].fillna("missing"), train[ADULT_LABEL])
proba = model.predict_proba(test[numeric + categorical].fillna("missing"))
pos = list(model.classes_).index(">50K")
out = test[["age", "sex", "race", ADULT_LABEL]].copy()
out["score"] = np.round(proba[:, pos], 6)
out["pred"] = np.where(out["score"] >= 0.5, ">50K", "<=50K")
out.insert(0, "id", np.arange(len(out)))
out.to_csv(HERE / "adult_test_predictions.csv.gz", index=False, compression={"method": "gzip", "mtime": 0})
print(f"accuracy {np.mean(out['pred'] == out[ADULT_LABEL]):.4f} on {len(out)} rows")
