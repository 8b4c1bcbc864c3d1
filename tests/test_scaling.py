"""Scaling fits (sweep/scaling.py): known exponents in, the right k, interval and class out."""

from __future__ import annotations

import math

import numpy as np
import pytest
from report_data import core_dataset, synthetic_dataset

from sweep.scaling import (
    classify,
    decade_window,
    fit_exponent,
    fit_scaling,
    log_reference,
    t975,
    table_rows,
)

N = np.array([10, 100, 1000, 3000, 10000])


@pytest.mark.parametrize(
    ("law", "order", "k_true"),
    [
        (lambda n: np.full_like(n, 3.0), "O(1)", lambda lo, hi: 0.0),
        (lambda n: 0.5 * n + 2, "O(N)", lambda lo, hi: 1.0),
        (np.log, "O(log N)", lambda lo, hi: math.log(math.log(hi) / math.log(lo))
         / math.log(hi / lo)),
    ],
    ids=["k=0", "k=1", "log N"],
)
def test_known_exponents_with_noise_are_recovered(law, order, k_true):
    # 2 % multiplicative noise over 8 seeds: the interval must cover the true local exponent.
    ds = synthetic_dataset(law, processes=N.tolist(), seed=range(8), noise=0.02)
    fit = fit_scaling(ds).isel(kernel=0, pages_per_vma=0, cow_fraction=0, cpus=0)
    assert str(fit["order"].values) == order
    assert (float(fit["n_lo"]), float(fit["n_hi"])) == (1000, 10000)  # the largest decade
    truth = k_true(1000.0, 10000.0)
    assert float(fit["k_lo"]) <= truth <= float(fit["k_hi"])
    assert float(fit["k_hi"]) - float(fit["k_lo"]) < 0.1
    assert int(fit["seeds"]) == 8 and int(fit["points"]) == 3


def test_exact_laws_give_zero_width_confident_fits():
    for law, order in ((lambda n: n, "O(N)"), (np.log, "O(log N)"), (np.ones_like, "O(1)")):
        fit = fit_exponent(N, np.vstack([law(N.astype(float))] * 3))
        assert fit.order == order and fit.confident
        assert fit.k_hi - fit.k_lo == pytest.approx(0, abs=1e-9)


def test_a_dominating_constant_reads_as_flat():
    # 100 + ln N barely moves over a decade: the window shows O(1), and the class says so.
    fit = fit_exponent(N, np.vstack([100 + np.log(N)] * 2))
    assert fit.order == "O(1)"


def test_window_is_the_largest_decade_or_the_two_largest_counts():
    assert decade_window(np.array([1, 10, 100, 1000, 10000])).tolist() == [
        False, False, False, True, True]
    assert decade_window(np.array([1, 3, 10, 30, 100])).tolist() == [
        False, False, True, True, True]
    # Nothing else within a decade of 2000: the two largest counts.
    assert decade_window(np.array([1, 50, 2000])).tolist() == [False, True, True]
    assert decade_window(np.array([7])).tolist() == [True]


def test_one_seed_interval_from_residuals_or_unknown():
    noisy = N * (1 + 0.01 * np.array([1, -1, 1, -1, 1]))
    three = fit_exponent(N, noisy[None, :])
    assert three.seeds == 1 and three.k_lo < three.k < three.k_hi
    two = fit_exponent(np.array([100, 1000]), np.array([[100.0, 1000.0]]))
    assert two.k == pytest.approx(1.0) and math.isnan(two.k_lo) and not two.confident


def test_unfinished_and_nonpositive_points_are_left_out():
    values = np.vstack([N * 1.0, N * 1.0])
    values[0, -1] = np.nan  # seed 0's largest point not done: that seed still has 2 points
    values[1, :] = 0.0  # seed 1 has no usable point at all
    fit = fit_exponent(N, values)
    assert fit.seeds == 1 and fit.k == pytest.approx(1.0) and fit.n_hi == 3000
    assert fit_exponent(N, np.full((2, N.size), np.nan)).order == "n/a"


def test_done_mask_is_respected():
    ds = synthetic_dataset(lambda n: n, processes=N.tolist(), seed=[0])
    ds["entries_mean"][:, -1] = 1.0  # a bogus value at an unfinished point
    ds["done"][:, -1] = False
    fit = fit_scaling(ds).isel(kernel=0, pages_per_vma=0, cow_fraction=0, cpus=0)
    assert float(fit["k"]) == pytest.approx(1.0) and float(fit["n_hi"]) == 3000


def test_classification_edges_follow_the_log_reference():
    k_log = log_reference(1000, 10000)
    assert 0.12 < k_log < 0.13
    assert classify(0.0, -0.01, 0.01, k_log) == ("O(1)", True)
    assert classify(k_log, k_log - 0.01, k_log + 0.01, k_log) == ("O(log N)", True)
    assert classify(0.95, 0.9, 1.0, k_log) == ("O(N)", True)
    assert classify(0.06, -0.1, 0.2, k_log) == ("O(1)", False)  # interval spans two classes


def test_student_t_quantiles():
    assert t975(1) == 12.706 and t975(30) == 2.042
    assert t975(60) == pytest.approx(2.000, abs=2e-3)
    assert t975(10**6) == pytest.approx(1.96, abs=1e-3)
    with pytest.raises(ValueError):
        t975(0)


def test_real_core_shared_list_is_linear_and_chain_is_constant():
    ds = core_dataset(kernel=("2.6.33", "2.6.34"), processes=(30, 100, 300),
                      cow_fraction=(1.0,), cpus=(1, 2), seed=(0, 1))
    fits = fit_scaling(ds)
    assert fits["order"].sel(kernel="2.6.33").values.ravel().tolist() == ["O(N)"] * 2
    assert fits["order"].sel(kernel="2.6.34").values.ravel().tolist() == ["O(1)"] * 2
    assert dict(fits.sizes) == {"kernel": 2, "pages_per_vma": 1, "cow_fraction": 1, "cpus": 2}
    rows = table_rows(fits)
    assert len(rows) == 2 and "cpus" not in rows[0]  # cpus values repeat: not a column
