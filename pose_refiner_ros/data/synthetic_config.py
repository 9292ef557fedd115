"""The settings of the synthetic generators: :class:`SyntheticConfig`, shared by the
scenes of :mod:`.synthetic` and the training crops of :mod:`.training_batch`, and
loaded from the ``synthetic:`` section of a training YAML."""

from __future__ import annotations

from dataclasses import dataclass

from pose_refiner_ros.config_dict import dataclass_from_dict

__all__ = ["SyntheticConfig"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the synthetic generators (defaults are the training defaults).

    Camera and placement:
        image_width, image_height: full image size, pixels (640 x 480).
        focal_range_px: ``f_x = f_y`` drawn uniformly in this range, pixels.
        principal_jitter_px: principal point = image centre + U(-j, j) per axis, pixels.
        apparent_size_px: the target's projected diameter in the full image is drawn
            log-uniformly in this range (sets the distance), pixels.
        distance_range_m: the target's depth is clipped to this range, metres.
        centre_margin: the target's projected centre lies in the image's central
            ``1 - 2 * margin`` fraction.
        objects_per_scene: (min, max) annotated objects per :func:`generate_scene`.
        distractors_per_scene: (min, max) unannotated distractor objects per scene.

    Initial poses (the protocol's standard perturbation):
        sigma_r_deg, sigma_t_m: see :func:`~pose_refiner_ros.data.perturb.perturb_pose`.
        min_init_depth_ratio: ``t_init.z`` is clipped to at least this times ``t_gt.z``
            (only binds for close objects and large depth noise; keeps the window finite).

    Crops (training batches):
        crop_margin: window side = projected extent of the bbox corners at ``T_init``
            times this (``compute_crops``'s ``margin``).
        crop_jitter_scale, crop_jitter_shift: the window is scaled by
            ``exp(U(-s, s))`` and shifted by ``U(-d, d)`` crop sides (the affine
            augmentation; labels stay exact).
        simulate_resolution: down/up-sample crops whose window is smaller than the crop.

    Appearance:
        texture_prob: probability that the target's colours are replaced (partly or
            fully) by a random 3D pattern (stripes, checker, noise) evaluated on the
            object-frame surface point; teaches robustness to CAD colours that differ
            from reality. The renderings of the refiner still use the model's colours.
        ambient_range, diffuse_range, specular_range, shininess_range: per-item Phong
            parameters drawn uniformly; the light comes from a random direction of the
            camera-facing hemisphere (``light_elevation_min_deg`` above the image plane).
        light_tint: each light channel gain in ``[1 - tint, 1]``.

    Clutter and occlusion:
        bg_shapes: (min, max) random shapes drawn on the background.
        photo_background_prob: probability that a background is a random crop of a
            real photograph (the ones scikit-image ships inside its wheel, see
            :func:`_photo_background`) rather than procedural clutter.
        distractor_prob: probability of a distractor object behind the target (crops).
        occluder_prob: probability of an object occluder in front of the target (crops).
        occluder2d_prob: probability of a flat random-polygon occluder (crops and scenes).
        sprites_per_sample: distractor/occluder objects rendered per training sample
            (they are rendered once per batch and pasted, scaled and mirrored, into the
            samples; 0.25 means one rendered object for every 4 samples).
        min_visib_fract: occluders are removed from samples whose target would be less
            visible than this.
        occluders_per_scene: (min, max) object occluders per scene.

    Sensor:
        noise_std_range: additive Gaussian noise std on [0, 1] intensities.
        mult_noise_std: multiplicative per-pixel noise std (upper bound).
        blur_prob, blur_sigma_range: Gaussian blur (sigma in crop/image pixels).
        motion_blur_prob, motion_blur_len_px: linear motion blur (max kernel length 7).
        jpeg_prob, jpeg_quality_range: JPEG re-compression.
        brightness, contrast, saturation, hue, channel_gain: colour jitter amplitudes
            (factors ``1 + U(-a, a)``, hue shift ``U(-hue, hue)`` turns).
        gamma_range: ``I ** gamma``.
        depth_noise_m: (a, b): depth noise std ``a + b * z^2`` metres (z in metres).
        depth_dropout_max: per-pixel dropout probability drawn in ``[0, max]``.
        depth_hole_prob: probability of blob-shaped holes.
        depth_edge_drop_prob: dropout probability at depth discontinuities.
        depth_missing_prob: probability that a sample has no depth at all (all zeros).
        depth_max_m: returns beyond this are 0 (no return).
        background_depth_prob: probability that the background is a plane with depth
            returns (else it has none: 0).
    """

    image_width: int = 640
    image_height: int = 480
    focal_range_px: tuple[float, float] = (450.0, 1100.0)
    principal_jitter_px: float = 15.0
    apparent_size_px: tuple[float, float] = (60.0, 360.0)
    distance_range_m: tuple[float, float] = (0.3, 2.5)
    centre_margin: float = 0.15
    objects_per_scene: tuple[int, int] = (1, 4)
    distractors_per_scene: tuple[int, int] = (0, 3)

    sigma_r_deg: float = 15.0
    sigma_t_m: tuple[float, float, float] = (0.01, 0.01, 0.05)
    min_init_depth_ratio: float = 0.5

    crop_margin: float = 1.4
    crop_jitter_scale: float = 0.05
    crop_jitter_shift: float = 0.03
    simulate_resolution: bool = True

    texture_prob: float = 0.25
    ambient_range: tuple[float, float] = (0.25, 0.7)
    diffuse_range: tuple[float, float] = (0.3, 0.9)
    specular_range: tuple[float, float] = (0.0, 0.5)
    shininess_range: tuple[float, float] = (4.0, 64.0)
    light_elevation_min_deg: float = 15.0
    light_tint: float = 0.15

    bg_shapes: tuple[int, int] = (3, 14)
    photo_background_prob: float = 0.0
    distractor_prob: float = 0.5
    occluder_prob: float = 0.35
    occluder2d_prob: float = 0.2
    sprites_per_sample: float = 0.25
    min_visib_fract: float = 0.35
    occluders_per_scene: tuple[int, int] = (0, 2)

    noise_std_range: tuple[float, float] = (0.0, 0.04)
    mult_noise_std: float = 0.05
    blur_prob: float = 0.3
    blur_sigma_range: tuple[float, float] = (0.3, 1.3)
    motion_blur_prob: float = 0.1
    motion_blur_len_px: tuple[int, int] = (3, 7)
    jpeg_prob: float = 0.2
    jpeg_quality_range: tuple[int, int] = (40, 95)
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    hue: float = 0.03
    channel_gain: float = 0.08
    gamma_range: tuple[float, float] = (0.8, 1.25)

    depth_noise_m: tuple[float, float] = (0.001, 0.0015)
    depth_dropout_max: float = 0.03
    depth_hole_prob: float = 0.4
    depth_edge_drop_prob: float = 0.5
    depth_missing_prob: float = 0.05
    depth_max_m: float = 5.0
    background_depth_prob: float = 0.8

    @classmethod
    def from_dict(cls, d: dict) -> SyntheticConfig:
        """Build from a plain dict (e.g. YAML); lists become tuples; unknown keys raise."""
        return dataclass_from_dict(cls, d, "SyntheticConfig", lists_to_tuples=True)
