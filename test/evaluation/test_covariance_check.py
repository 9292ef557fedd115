"""The covariance calibration of ``evaluation.covariance_check``: honest claims score as
calibrated, overconfident ones do not, and the rank correlation follows the errors."""

from types import SimpleNamespace

import numpy as np

from pose_refiner_ros.evaluation.covariance_check import covariance_calibration


def _records(rng, n, sd_true, sd_claimed):
    out = []
    for i in range(n):
        s = sd_true * (1 + i % 5)  # errors of several sizes
        T_gt = np.eye(4)
        T_gt[:3, 3] = [0.1, 0.0, 1.0]
        T = T_gt.copy()
        T[:3, 3] += rng.normal(0.0, s)
        C = np.diag(np.r_[(sd_claimed / sd_true * s) ** 2, [1e-4] * 3])
        out.append(SimpleNamespace(covariance=C, T_refined=T, T_gt=T_gt, kept_coarse=False))
    return out


def test_honest_covariances_are_calibrated_and_overconfident_ones_are_not():
    rng = np.random.default_rng(0)
    sd = np.array([0.002, 0.002, 0.01])
    honest = covariance_calibration(_records(rng, 4000, sd, sd))
    assert honest["n"] == 4000
    for a in honest["axes"].values():
        assert abs(a["within_1sigma"] - 0.683) < 0.03
        assert abs(a["within_2sigma"] - 0.954) < 0.02
        assert a["spearman"] > 0.3  # larger claims where the errors are larger
    over = covariance_calibration(_records(rng, 4000, sd, sd / 3))
    assert over["axes"]["z"]["within_1sigma"] < 0.35


def test_coarse_poses_and_missing_covariances_are_left_out():
    rng = np.random.default_rng(1)
    recs = _records(rng, 10, np.array([0.002] * 3), np.array([0.002] * 3))
    recs[0].kept_coarse = True
    recs[1].covariance = None
    recs[2].T_gt = None
    assert covariance_calibration(recs)["n"] == 7
    assert covariance_calibration(recs[:3]) is None

