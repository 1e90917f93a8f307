"""The correction's contract: the hinge's scale, class-balanced anchors, which groups are corrected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairfix.correct.fairnet import CorrectConfig, open_share
from fairfix.correct.loop import Rows
from fairfix.correct.loss import distance, hinge, triplet_loss
from fairfix.correct.plan import correction_plan


def test_normalised_distances_lie_in_0_2_whatever_the_feature_scale():
    gen = torch.Generator().manual_seed(0)
    z, p = torch.randn(50, 8, generator=gen), torch.randn(3, 8, generator=gen)
    small, large = distance(z, p), distance(z * 1000.0, p * 0.001)
    torch.testing.assert_close(small, large, atol=1e-5, rtol=0)  # scale-free by construction
    assert float(small.min()) >= 0.0 and float(small.max()) <= 2.0 + 1e-6
    assert float(distance(z * 1000.0, p, normalize=False).max()) > 100.0  # raw: out of scale with a margin


def test_hinge_opens_exactly_past_the_margin():
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # unit prototypes, sqrt(2) apart
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # at class 0, halfway, at class 1
    y = torch.zeros(3, dtype=torch.long)
    h = hinge(z, y, protos, margin=0.5)
    d = 2 ** 0.5
    torch.testing.assert_close(h, torch.tensor([-d + 0.5, 0.5, d + 0.5]))
    assert open_share(z, y, protos, CorrectConfig(margin=0.5)) == pytest.approx(2 / 3)
    assert open_share(z, y, protos, CorrectConfig(margin=1.5)) == 1.0  # margin > sqrt(2): never closes
    # the loss is the weighted mean of the open hinges only
    w = torch.tensor([1.0, 1.0, 2.0])
    loss = triplet_loss(z, y, protos, margin=0.5, weights=w)
    torch.testing.assert_close(loss, torch.tensor((0.5 * 1 + (d + 0.5) * 2) / 4))


def test_anchor_weights_balance_every_cell():
    cells = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 3])  # cell 2 empty
    w = Rows(np.arange(len(cells)), cells, np.ones(len(cells), bool)).cell_weights()
    totals = np.bincount(cells, weights=w, minlength=4)
    np.testing.assert_allclose(totals, [1 / 3, 1 / 3, 0, 1 / 3])
    assert w.sum() == pytest.approx(1.0)


def test_plan_corrects_every_group_that_holds_an_under_served_cell():
    # coloured digits' shape: the minority fails class 0, the rest fails class 1
    m = np.array([1] * 20 + [0] * 20)
    y = np.array(([0] * 10 + [1] * 10) * 2)
    pred = y.copy()
    pred[:5] = 1  # minority, class 0: 50%
    pred[30:35] = 0  # rest, class 1: 50%
    counts = np.array([[10, 10], [10, 10]])
    plan = correction_plan(m, y, pred, 2, "auto", counts)
    assert plan["groups"] == "all" and plan["rest_underserved"]
    assert plan["reference"] == [0, 1]  # class 0: the rest serves it best; class 1: the minority
    assert correction_plan(m, y, pred, 2, "minority", counts)["groups"] == "minority"
    # the rest served as well as the minority on every class: the minority alone
    pred_b = y.copy()
    pred_b[:5] = 1
    plan_b = correction_plan(m, y, pred_b, 2, "auto", counts)
    assert plan_b["groups"] == "minority" and plan_b["reference"] == [0, 0]
    assert plan_b["cell_accuracy_validation"] == [[1.0, 1.0], [0.5, 1.0]]
