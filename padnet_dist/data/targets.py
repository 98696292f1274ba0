"""Targets derived from the labels (paper §3.6): surface normals from depth, contours from semantic labels, and
the depth target a run trains on (depth, disparity or inverse depth) from metric depth and back.

Both functions are batched, vectorised torch and deterministic; they run on whatever device the inputs are on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_MAX_RELATIVE_JUMP = 0.1
DEPTH_TARGET_UNITS = {"depth": "m", "disparity": "px", "inverse_depth": "1/m"}


def _per_sample(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(-1)
    return t.expand(like.shape[0]).reshape(-1, *([1] * (like.dim() - 1)))


def _stereo(kind: str, baseline_m: torch.Tensor | float | None, fx: torch.Tensor | float | None) -> None:
    if kind not in DEPTH_TARGET_UNITS:
        raise ValueError(f"depth target '{kind}' is not one of {', '.join(DEPTH_TARGET_UNITS)}")
    if kind == "disparity" and (baseline_m is None or fx is None):
        raise ValueError("disparity needs each sample's stereo baseline (metres) and fx (pixels)")


def depth_to_target(
    depth_m: torch.Tensor,
    kind: str,
    *,
    baseline_m: torch.Tensor | float | None = None,
    fx: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Metric depth -> the depth target ``kind`` in its unit (``DEPTH_TARGET_UNITS``); 0 stays invalid.

    depth_m (B, ...) metres, 0 = invalid; baseline_m, fx (B,) or one value (disparity only): metres and pixels at
    this resolution. depth: unchanged; disparity = baseline_m * fx / depth (pixels); inverse_depth = 1 / depth.
    Computed in float64, returned in depth_m's dtype.
    """
    _stereo(kind, baseline_m, fx)
    if kind == "depth":
        return depth_m
    z = depth_m.to(torch.float64)
    valid = torch.isfinite(z) & (z > 0)
    numerator = 1.0 if kind == "inverse_depth" else _per_sample(baseline_m, z) * _per_sample(fx, z)
    out = torch.where(valid, numerator / torch.where(valid, z, torch.ones_like(z)), torch.zeros_like(z))
    return out.to(depth_m.dtype)


def target_to_depth(
    values: torch.Tensor,
    kind: str,
    *,
    baseline_m: torch.Tensor | float | None = None,
    fx: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """The inverse of ``depth_to_target``: values (B, ...) in ``kind``'s unit -> metres. For disparity and inverse
    depth, values <= 0 or non-finite (no depth can be read from them) give 0, i.e. invalid."""
    return depth_to_target(values, kind, baseline_m=baseline_m, fx=fx)  # each mapping is its own inverse


def backproject(
    depth: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor
) -> torch.Tensor:
    """Back-project a depth map to camera-frame points.

    depth (B, 1, H, W) metres (z along the optical axis); fx, fy, cx, cy (B,) (or one value for the whole batch)
    pixels with 0-based pixel centres.
    Returns (B, 3, H, W) points (X, Y, Z): x right, y down, z forward (the usual pinhole frame).
    """
    batch, _, height, width = depth.shape
    dtype, device = depth.dtype, depth.device
    u = torch.arange(width, dtype=dtype, device=device).view(1, 1, 1, width)
    v = torch.arange(height, dtype=dtype, device=device).view(1, 1, height, 1)

    def per_sample(t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=dtype, device=device).reshape(-1)
        return t.expand(batch).reshape(batch, 1, 1, 1)  # a single value serves the whole batch

    x = (u - per_sample(cx)) / per_sample(fx) * depth
    y = (v - per_sample(cy)) / per_sample(fy) * depth
    return torch.cat([x, y, depth], dim=1)


def normals_from_depth(
    depth: torch.Tensor,
    fx: torch.Tensor,
    fy: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    max_relative_jump: float = DEFAULT_MAX_RELATIVE_JUMP,
) -> torch.Tensor:
    """Unit surface normals from a depth map through a pinhole camera.

    depth (B, 1, H, W) metres, 0 = invalid; fx, fy, cx, cy (B,) pixels at this resolution.
    Computed in float64 (back-projected differences of distant points cancel badly in float32).
    Returns (B, 3, H, W) float32 unit vectors in the camera frame (x right, y down, z forward), oriented toward
    the camera (n . P < 0 for the pixel's 3D point P). The normal of pixel (v, u) is the cross product of the
    central differences P(v+1,u) - P(v-1,u) and P(v,u+1) - P(v,u-1); it is exact for planar surfaces.

    The zero vector marks pixels without a normal: image-border pixels (a neighbour is missing), pixels whose
    own depth or any of the 4 neighbours' depth is invalid (<= 0 or non-finite), and depth discontinuities,
    where |Z_neighbour - Z| > max_relative_jump * Z for any of the 4 neighbours.
    """
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"depth must be (B, 1, H, W), got {tuple(depth.shape)}")
    z = depth.to(torch.float64)
    valid = torch.isfinite(z) & (z > 0)
    z = torch.where(valid, z, torch.zeros_like(z))
    points = backproject(z, fx, fy, cx, cy)
    normals = torch.zeros_like(points)
    if z.shape[-1] < 3 or z.shape[-2] < 3:
        return normals.to(torch.float32)

    centre = z[..., 1:-1, 1:-1]
    neighbours = (z[..., :-2, 1:-1], z[..., 2:, 1:-1], z[..., 1:-1, :-2], z[..., 1:-1, 2:])
    ok = valid[..., 1:-1, 1:-1]
    for nb, nb_valid in zip(
        neighbours,
        (valid[..., :-2, 1:-1], valid[..., 2:, 1:-1], valid[..., 1:-1, :-2], valid[..., 1:-1, 2:]),
    ):
        ok = ok & nb_valid & ((nb - centre).abs() <= max_relative_jump * centre)

    d_down = points[..., 2:, 1:-1] - points[..., :-2, 1:-1]
    d_right = points[..., 1:-1, 2:] - points[..., 1:-1, :-2]
    # down x right points toward the camera for a front-facing surface (x right, y down, z forward).
    n = torch.cross(d_down, d_right, dim=1)
    # Guarantee the documented orientation even where noise makes the surface seem back-facing.
    facing_away = (n * points[..., 1:-1, 1:-1]).sum(dim=1, keepdim=True) > 0
    n = torch.where(facing_away, -n, n)
    norm = (n * n).sum(dim=1, keepdim=True).sqrt()  # 4-5x faster than n.norm(dim=1) on CPU (a loader hot spot)
    ok = ok & (norm > 0)
    n = torch.where(ok, n / norm.clamp_min(torch.finfo(n.dtype).tiny), torch.zeros_like(n))
    normals[..., 1:-1, 1:-1] = n
    return normals.to(torch.float32)


def contours_from_labels(semantic: torch.Tensor, ignore_index: int = 255, width: int = 1) -> torch.Tensor:
    """Semantic contours (the paper's contour target, generated from the labels).

    semantic (B, H, W) integer labels, ignore_index = unlabelled. Returns (B, 1, H, W) float32:
      255 where the pixel itself is ignore_index;
      1   where the pixel has a valid label and some pixel q with a *different valid* label lies within
          Chebyshev distance `width` (the (2*width+1)^2 square centred on it, diagonals included);
      0   elsewhere (a pixel next to ignore pixels only is not a contour).
    So a straight boundary between two regions is marked `width` pixels deep on each side of it.
    """
    if semantic.dim() != 3:
        raise ValueError(f"semantic must be (B, H, W), got {tuple(semantic.shape)}")
    if width < 1:
        raise ValueError(f"contour width must be >= 1, got {width}")
    labels = semantic.unsqueeze(1).to(torch.float32)  # label values < 2**24 are exact in float32
    ignore = semantic.unsqueeze(1) == ignore_index
    kernel = 2 * width + 1
    # Ignore pixels must not win either pool: push them below every label for the max, above for the min.
    low = torch.where(ignore, torch.full_like(labels, -1.0), labels)
    high = torch.where(ignore, torch.full_like(labels, float("inf")), labels)
    window_max = F.max_pool2d(low, kernel, stride=1, padding=width)
    window_min = -F.max_pool2d(-high, kernel, stride=1, padding=width)
    boundary = (window_max > labels) | (window_min < labels)
    out = boundary.to(torch.float32)
    return torch.where(ignore, torch.full_like(out, float(ignore_index)), out)
