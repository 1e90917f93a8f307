"""``fairfix.FairNet``: the scikit-learn estimator, under scikit-learn's own estimator checks.

scikit-learn's checks call ``fit(X, y)``; FairNet's ``fit`` needs ``sensitive_features=``
(the attribute to correct for), so the checks run on a subclass whose ``fit`` supplies one
(rows alternate between two groups).  Every check then runs and passes; scikit-learn itself
skips ``check_array_api_input`` (FairNet runs torch on numpy inputs, it does not take Array API
arrays).  Beside them: ``fit`` without ``sensitive_features`` is an error.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

import fairfix
from fairfix import FairNet

SMALL = {"hidden": (16, 8), "base_steps": 150, "steps": 10, "eval_every": 5, "folds": 2, "random_state": 0}


class FairNetTwoGroups(FairNet):
    """FairNet whose ``fit(X, y)`` supplies the sensitive attribute: row parity (two groups)."""

    def fit(self, X, y):  # noqa: N803 - scikit-learn's name
        n = X.shape[0] if hasattr(X, "shape") else len(np.asarray(X))
        return super().fit(X, y, sensitive_features=np.arange(n) % 2)


#: The checks expected to fail, and why (scikit-learn's ``expected_failed_checks``): none.
EXPECTED_FAILED: dict[str, str] = {}


@parametrize_with_checks([FairNetTwoGroups(**SMALL)], expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    s = (rng.random(n) < 0.3).astype(int)
    y = ((X[:, 0] + 0.8 * s * X[:, 1] + rng.normal(scale=0.5, size=n)) > 0).astype(int)
    return X, y, s


def test_fit_needs_sensitive_features():
    X, y, _ = data()
    with pytest.raises(TypeError, match="sensitive_features"):
        FairNet(**SMALL).fit(X, y)
    with pytest.raises(ValueError, match="sensitive_features"):
        FairNet(**SMALL).fit(X, y, sensitive_features=None)


def test_params_are_stored_unchanged_and_fits_repeat():
    X, y, s = data()
    est = FairNet(**SMALL)
    assert est.get_params()["hidden"] is SMALL["hidden"]
    a = est.fit(X, y, sensitive_features=s)
    b = clone(est).fit(X, y, sensitive_features=s)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))  # same random_state: the same fit
    assert a.report_ == b.report_
    assert set(a.classes_) == {0, 1} and a.n_features_in_ == 4
    assert a.evidence_["kind"] == "cross-fit" and a.evidence_["rows"] == len(X)
    assert isinstance(a.bundle_, fairfix.Bundle) and a.bundle_.to_dict() is a.report_
    proba = a.predict_proba(X)
    assert np.allclose(proba.sum(axis=1), 1) and np.array_equal(a.predict(X), a.classes_[proba.argmax(axis=1)])


def test_a_dataframe_with_text_columns_and_string_labels(tmp_path):
    """Adult as a DataFrame (categorical columns, string labels): feature names kept; the saved bundle
    gives `fairfix predict` the estimator's probabilities."""
    from typer.testing import CliRunner

    from fairfix.cli import app
    from fairfix.datasets import load_adult

    df = load_adult("train").sample(800, random_state=0).reset_index(drop=True)
    X, y = df.drop(columns=["income", "sex"]), df["income"].to_numpy()
    est = FairNet(**{**SMALL, "hidden": (32, 16)}).fit(X, y, sensitive_features=df["sex"])
    assert list(est.feature_names_in_) == list(X.columns)
    assert list(est.classes_) == ["<=50K", ">50K"]
    assert set(est.predict(X)) <= set(est.classes_)
    est.bundle_.save(tmp_path / "bundle")
    X.to_csv(tmp_path / "x.csv", index=False)
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "x.csv"), "--model", str(tmp_path / "bundle"),
                                   "-o", str(tmp_path / "p.parquet")], env={"FAIRFIX_NO_PROGRESS": "1"})
    assert res.exit_code == 0, res.output
    import pandas as pd

    score = pd.read_parquet(tmp_path / "p.parquet")["score"].to_numpy()
    assert np.allclose(score, est.predict_proba(X)[:, 1], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="feature names"):
        est.predict(X[list(reversed(X.columns))])


def test_a_torch_module_as_the_base_is_left_unchanged():
    import torch

    X, y, s = data()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                              torch.nn.Linear(8, 2))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    est = FairNet(**{**SMALL, "base": net}).fit(X, y, sensitive_features=s)
    assert est.get_params()["base"] is net
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert not any("lora" in n for n, _ in net.named_modules())
    with torch.no_grad():
        base = torch.softmax(net(torch.as_tensor(X, dtype=torch.float32)), -1).double().numpy()
    out = est.predict_proba(X)
    import pandas as pd

    flagged = est.bundle_.predict(pd.DataFrame(X, columns=[f"x{j}" for j in range(4)]))["corrected"].to_numpy()
    # rows the gate leaves alone get the base's outputs
    assert np.allclose(out[~flagged], base[~flagged], atol=1e-6)


def test_a_fairfix_model_as_the_base_keeps_its_classes_order():
    """A loaded or trained fairfix model as ``base=``: probabilities come back in ``classes_`` order."""
    import pandas as pd

    X, y, s = data()
    labels = np.where(y == 1, "yes", "no")
    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(4)]).assign(label=labels)
    base = fairfix.train(frame, label="label", steps=100, hidden=[16, 8], seed=0)
    est = FairNet(**{**SMALL, "base": base}).fit(frame.drop(columns=["label"]), labels, sensitive_features=s)
    assert list(est.classes_) == ["no", "yes"] and est.base_ is base
    proba = est.predict_proba(frame.drop(columns=["label"]))
    model_proba = est.bundle_.predict_proba(frame.drop(columns=["label"]))
    order = [base.classes.index(c) for c in est.classes_]
    assert np.array_equal(proba, model_proba[:, order])
