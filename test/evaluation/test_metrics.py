"""Tests of evaluation.metrics: hand-computed cases, brute-force references (loops) for
the symmetry-aware metrics, summaries and comparisons."""

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose_refiner_ros.evaluation.metrics import (
    ERROR_KEYS,
    PoseMetrics,
    add,
    adds,
    as_dict,
    bbox_diagonal_px,
    compare,
    evaluate_pose,
    mspd,
    mssd,
    reprojection_error,
    rotation_error_deg,
    rt_error,
    summarize,
    translation_error_m,
    translation_error_rel,
)

K = np.array([[500.0, 0.0, 320.0], [0.0, 400.0, 240.0], [0.0, 0.0, 1.0]])
IMAGE_SIZE = (640, 480)
A = 0.1  # half side of the test square, metres
# Four points of a square in the object's xy-plane: symmetric under 90-degree turns.
SQUARE = np.array([[A, 0, 0], [0, A, 0], [-A, 0, 0], [0, -A, 0]], dtype=np.float64)


def _T(R=None, t=(0.0, 0.0, 1.0)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = np.eye(3) if R is None else R
    T[:3, 3] = t
    return T


def _rz(deg: float) -> np.ndarray:
    return Rotation.from_euler("z", deg, degrees=True).as_matrix()


SYM_Z4 = np.stack([_T(_rz(a), (0, 0, 0)) for a in (0, 90, 180, 270)])


def test_pure_90_degree_rotation():
    T_gt, T_est = _T(), _T(_rz(90))
    assert rotation_error_deg(T_est, T_gt) == pytest.approx(90.0)
    assert translation_error_m(T_est, T_gt) == 0.0
    assert translation_error_rel(T_est, T_gt) == 0.0
    # Each point moves by sqrt(2) A; the rotated square is the same point set.
    assert add(T_est, T_gt, SQUARE) == pytest.approx(math.sqrt(2) * A)
    assert adds(T_est, T_gt, SQUARE) == pytest.approx(0.0, abs=1e-15)
    assert mssd(T_est, T_gt, SQUARE) == pytest.approx(math.sqrt(2) * A)
    # At depth 1 a point of the square moves by (fx, fy) * its 3D displacement.
    uv_shift = np.array([[500, 400], [500, 400], [500, 400], [500, 400]]) * np.array(
        [[-A, A], [-A, -A], [A, -A], [A, A]]
    )
    assert mspd(T_est, T_gt, SQUARE, K) == pytest.approx(np.linalg.norm(uv_shift, axis=1).max())
    # With the square's symmetries every error vanishes.
    assert rotation_error_deg(T_est, T_gt, SYM_Z4) == pytest.approx(0.0, abs=1e-6)
    for fn in (add, mssd):
        assert fn(T_est, T_gt, SQUARE, SYM_Z4) == pytest.approx(0.0, abs=1e-12)
    assert mspd(T_est, T_gt, SQUARE, K, SYM_Z4) == pytest.approx(0.0, abs=1e-9)


def test_pure_translation():
    T_gt = _T(t=(0.0, 0.0, 1.0))
    T_est = _T(t=(0.03, 0.04, 1.0))
    assert rotation_error_deg(T_est, T_gt) == 0.0
    assert translation_error_m(T_est, T_gt) == pytest.approx(0.05)
    assert translation_error_rel(T_est, T_gt) == pytest.approx(0.05)
    assert add(T_est, T_gt, SQUARE) == pytest.approx(0.05)
    assert mssd(T_est, T_gt, SQUARE) == pytest.approx(0.05)
    # All points at depth 1: every projection shifts by (fx dx, fy dy) = (15, 16) px.
    shift = math.hypot(15.0, 16.0)
    assert mspd(T_est, T_gt, SQUARE, K) == pytest.approx(shift)
    d_bbox = math.hypot(2 * A * 500, 2 * A * 400)
    assert bbox_diagonal_px(T_gt, SQUARE, K) == pytest.approx(d_bbox)
    assert reprojection_error(T_est, T_gt, SQUARE, K) == pytest.approx(shift / d_bbox)
    d_img = math.hypot(*IMAGE_SIZE)
    assert rt_error(T_est, T_gt, SQUARE, K, IMAGE_SIZE) == pytest.approx(0.05 * d_bbox / d_img)
    # ADD-S: each GT point's nearest estimated point is its own image, 5 cm away.
    assert adds(T_est, T_gt, SQUARE) == pytest.approx(0.05)


@pytest.mark.parametrize("angle", [0.0, 1e-7, 1e-3, 10.0, 90.0, 179.9999, 180.0])
def test_rotation_error_matches_scipy_near_0_and_180(angle):
    rng = np.random.default_rng(0)
    R_gt = Rotation.random(random_state=1).as_matrix()
    axis = rng.normal(size=3)
    delta = Rotation.from_rotvec(axis / np.linalg.norm(axis) * math.radians(angle)).as_matrix()
    got = rotation_error_deg(_T(R_gt @ delta), _T(R_gt))
    assert got == pytest.approx(angle, abs=1e-9)


# -- brute-force references -------------------------------------------------------------


def _random_case(seed: int, n_sym: int):
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(60, 3)) * [0.05, 0.03, 0.02]
    T_gt = _T(Rotation.random(random_state=seed).as_matrix(),
              (rng.normal() * 0.1, rng.normal() * 0.1, 0.8 + rng.random()))
    noise = Rotation.from_rotvec(rng.normal(size=3) * 0.3).as_matrix()
    T_est = _T(noise @ T_gt[:3, :3], T_gt[:3, 3] + rng.normal(size=3) * 0.02)
    sym = [np.eye(4)] + [
        _T(Rotation.random(random_state=seed * 100 + k).as_matrix(), rng.normal(size=3) * 0.01)
        for k in range(n_sym - 1)
    ]
    return T_est, T_gt, pts, np.stack(sym)


def _apply(T, p):
    return T[:3, :3] @ p + T[:3, 3]


def _proj(p):
    return (K @ p)[:2] / p[2]


@pytest.mark.parametrize("seed, n_sym", [(0, 1), (1, 2), (2, 7)])
def test_symmetry_aware_metrics_match_loops(seed, n_sym):
    T_est, T_gt, pts, S = _random_case(seed, n_sym)
    ref = {"add": [], "mssd": [], "mspd": [], "e_P": [], "e_R": []}
    for Sk in S:
        G = T_gt @ Sk
        d3 = [np.linalg.norm(_apply(G, p) - _apply(T_est, p)) for p in pts]
        d2 = [np.linalg.norm(_proj(_apply(G, p)) - _proj(_apply(T_est, p))) for p in pts]
        ref["add"].append(np.mean(d3))
        ref["mssd"].append(np.max(d3))
        ref["mspd"].append(np.max(d2))
        ref["e_P"].append(np.mean(d2))
        cos = (np.trace(G[:3, :3].T @ T_est[:3, :3]) - 1) / 2
        ref["e_R"].append(math.degrees(math.acos(min(1.0, max(-1.0, cos)))))
    uv_gt = np.array([_proj(_apply(T_gt, p)) for p in pts])
    d_bbox = np.linalg.norm(uv_gt.max(0) - uv_gt.min(0))
    adds_ref = np.mean([min(np.linalg.norm(_apply(T_gt, p) - _apply(T_est, q)) for q in pts)
                        for p in pts])

    assert add(T_est, T_gt, pts, S) == pytest.approx(min(ref["add"]), rel=1e-12)
    assert mssd(T_est, T_gt, pts, S) == pytest.approx(min(ref["mssd"]), rel=1e-12)
    assert mspd(T_est, T_gt, pts, K, S) == pytest.approx(min(ref["mspd"]), rel=1e-12)
    assert reprojection_error(T_est, T_gt, pts, K, S) == pytest.approx(min(ref["e_P"]) / d_bbox,
                                                                       rel=1e-12)
    assert rotation_error_deg(T_est, T_gt, S) == pytest.approx(min(ref["e_R"]), abs=1e-7)
    assert adds(T_est, T_gt, pts) == pytest.approx(adds_ref, rel=1e-12)
    t_norm = np.linalg.norm(T_gt[:3, 3])
    assert rt_error(T_est, T_gt, pts, K, IMAGE_SIZE, S) == pytest.approx(
        min(ref["add"]) / t_norm * d_bbox / math.hypot(*IMAGE_SIZE), rel=1e-12)
    # Translation errors are taken at the symmetry with the smallest rotation error.
    best = T_gt @ S[int(np.argmin(ref["e_R"]))]
    assert translation_error_m(T_est, T_gt, S) == pytest.approx(
        np.linalg.norm(best[:3, 3] - T_est[:3, 3]), rel=1e-12)


def test_many_symmetries_are_processed_in_blocks(monkeypatch):
    import pose_refiner_ros.evaluation.pose_errors as metrics

    T_est, T_gt, pts, S = _random_case(3, 9)
    full = mssd(T_est, T_gt, pts, S)
    monkeypatch.setattr(metrics, "_CHUNK", 2 * len(pts))  # two symmetries per block
    assert mssd(T_est, T_gt, pts, S) == full


# -- records, summaries, comparisons -------------------------------------------------------


def test_evaluate_pose_collects_every_metric():
    T_gt, T_est = _T(), _T(_rz(90), (0.0, 0.0, 1.01))
    r = evaluate_pose(T_est, T_gt, SQUARE, K, IMAGE_SIZE, diameter_m=2 * A, symmetries=SYM_Z4)
    assert r.symmetric and r.image_width == 640
    assert r.e_R_deg == pytest.approx(0.0, abs=1e-6)
    assert r.t_err_m == pytest.approx(0.01) and r.e_t == pytest.approx(0.01)
    assert r.add_or_adds_m == r.adds_m and r.add_or_adds_correct  # 0.01 < 0.1 * 0.2
    plain = evaluate_pose(T_est, T_gt, SQUARE, K, IMAGE_SIZE, diameter_m=2 * A)
    assert not plain.symmetric and plain.e_R_deg == pytest.approx(90.0)
    assert plain.add_or_adds_m == plain.add_m and not plain.add_or_adds_correct
    d = as_dict(r)
    assert d["add_or_adds_correct"] is True and set(ERROR_KEYS) <= set(d)


@pytest.mark.parametrize("n_sym", [1, 5])
def test_evaluate_pose_agrees_with_the_single_metrics(n_sym):
    T_est, T_gt, pts, S = _random_case(4, n_sym)
    r = evaluate_pose(T_est, T_gt, pts, K, IMAGE_SIZE, diameter_m=0.1, symmetries=S)
    expected = dict(
        e_R_deg=rotation_error_deg(T_est, T_gt, S),
        e_t=translation_error_rel(T_est, T_gt, S),
        t_err_m=translation_error_m(T_est, T_gt, S),
        e_Rt=rt_error(T_est, T_gt, pts, K, IMAGE_SIZE, S),
        e_P=reprojection_error(T_est, T_gt, pts, K, S),
        add_m=add(T_est, T_gt, pts, S),
        adds_m=adds(T_est, T_gt, pts),
        mssd_m=mssd(T_est, T_gt, pts, S),
        mspd_px=mspd(T_est, T_gt, pts, K, S),
    )
    for key, value in expected.items():
        assert getattr(r, key) == pytest.approx(value, rel=1e-12, abs=1e-15), key


def _record(e_R_deg, t_err_m, add_m=0.01, mssd_m=0.01, mspd_px=1.0, diameter_m=0.1, **kw):
    values = dict(e_R_deg=e_R_deg, e_t=t_err_m, t_err_m=t_err_m, e_Rt=0.0, e_P=0.0, add_m=add_m,
                  adds_m=add_m, mssd_m=mssd_m, mspd_px=mspd_px, diameter_m=diameter_m,
                  symmetric=False, image_width=640)
    return PoseMetrics(**(values | kw))


def test_summarize_hand_computed():
    records = [
        _record(2.0, 0.01, add_m=0.005, mssd_m=0.004, mspd_px=4.0),  # good everywhere
        _record(7.0, 0.01, add_m=0.02, mssd_m=0.026, mspd_px=12.0),
        _record(20.0, 0.10, add_m=0.009, mssd_m=0.06, mspd_px=60.0),
        _record(45.0, 0.01, add_m=float("nan"), mssd_m=float("nan"), mspd_px=float("nan")),
    ]
    s = summarize(records)
    assert s["n"] == 4
    assert s["median_e_R_deg"] == pytest.approx(13.5)
    assert s["median_add_m"] == pytest.approx(0.0145)  # NaN sorts as inf
    assert s["acc_pi_6"] == 0.75 and s["acc_pi_18"] == 0.5 and s["acc_5deg5cm"] == 0.25
    assert s["acc_add_or_adds_0.1d"] == 0.5  # 0.005 and 0.009 < 0.01
    # MSSD recall: 0.004 passes 10/10 thresholds (0.005 .. 0.05 m), 0.026 passes 5/10,
    # 0.06 and NaN none. MSPD: 4 px passes 10/10, 12 px 8/10, 60 px and NaN none.
    assert s["ar_mssd"] == pytest.approx(15 / 40)
    assert s["ar_mspd"] == pytest.approx(18 / 40)
    # Mappings (e.g. from JSON, with the derived keys) are accepted.
    assert summarize([as_dict(r) for r in records]) == s
    with pytest.raises(ValueError, match="records is empty"):
        summarize([])


def test_compare_counts_worse_and_better_samples():
    initial = [_record(10.0, 0.02), _record(10.0, 0.02), _record(10.0, 0.02)]
    refined = [_record(2.0, 0.01), _record(12.0, 0.01), _record(float("nan"), 0.03)]
    c = compare(initial, refined)
    assert c["n"] == 3
    assert c["n_worse"]["e_R_deg"] == 2 and c["n_better"]["e_R_deg"] == 1
    assert c["n_worse"]["t_err_m"] == 1 and c["n_better"]["t_err_m"] == 2
    assert c["n_worse"]["add_m"] == 0 and c["n_better"]["add_m"] == 0
    assert c["initial"]["median_e_R_deg"] == 10.0 and c["refined"]["median_e_R_deg"] == 12.0
    with pytest.raises(ValueError, match="same samples, got 3 and 2"):
        compare(initial, refined[:2])


def test_failed_estimates_do_not_crash():
    T_nan = np.full((4, 4), np.nan)
    r = evaluate_pose(T_nan, _T(), SQUARE, K, IMAGE_SIZE, diameter_m=0.2, symmetries=SYM_Z4)
    assert math.isnan(r.e_R_deg) and math.isnan(r.adds_m) and math.isnan(r.mssd_m)
    assert summarize([r])["acc_add_or_adds_0.1d"] == 0.0


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"T_est must have shape \(4, 4\), got \(3, 3\)"):
        add(np.eye(3), _T(), SQUARE)
    with pytest.raises(ValueError, match=r"pts_obj must have shape \(N, 3\)"):
        add(_T(), _T(), SQUARE[:, :2])
    with pytest.raises(ValueError, match=r"symmetries must have shape \(N, 4, 4\)"):
        mssd(_T(), _T(), SQUARE, np.eye(4))
    with pytest.raises(ValueError, match=r"K must have shape \(3, 3\)"):
        mspd(_T(), _T(), SQUARE, np.eye(4))
