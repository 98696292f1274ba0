"""Targets derived from the labels (paper §3.6): surface normals from depth, contours from semantic labels, and
the depth target a run trains on (depth, disparity or inverse depth) from metric depth and back.

All functions are batched, vectorised torch and deterministic; they run on whatever device the inputs are on.
``normals_at_size`` and ``contours_at_size`` give the objective's targets for the 1/4-resolution heads directly
(bitwise equal to resizing the full-resolution maps, at a fraction of the cost): what the training loader uses.
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

    depth (B, 1, H, W) metres, 0 = invalid; fx, fy, cx, cy (B,) pixels at this resolution (fx, fy > 0).
    Returns (B, 3, H, W) float32 unit vectors in the camera frame (x right, y down, z forward), oriented toward
    the camera (n . P < 0 for the pixel's 3D point P). The normal of pixel (v, u) is the direction of the cross
    product of the central differences P(v+1,u) - P(v-1,u) and P(v,u+1) - P(v,u-1); it is exact for planar
    surfaces. Computed in float32 from a closed form of that cross product without cancelling terms (see
    ``_normals_of``): within a few float32 ulps of the float64 evaluation of the cross product.

    The zero vector marks pixels without a normal: image-border pixels (a neighbour is missing), pixels whose
    own depth or any of the 4 neighbours' depth is invalid (<= 0 or non-finite), and depth discontinuities,
    where |Z_neighbour - Z| > max_relative_jump * Z for any of the 4 neighbours (tested in float32).
    """
    _check_depth(depth)
    batch, _, height, width = depth.shape
    normals = torch.zeros(batch, 3, height, width, dtype=torch.float32, device=depth.device)
    if height >= 3 and width >= 3:
        z = _clean_depth(depth)
        u = torch.arange(1, width - 1, dtype=torch.float64, device=depth.device).view(1, 1, 1, -1)
        v = torch.arange(1, height - 1, dtype=torch.float64, device=depth.device).view(1, 1, -1, 1)
        neighbours = (z[..., 1:-1, 1:-1], z[..., :-2, 1:-1], z[..., 2:, 1:-1], z[..., 1:-1, :-2], z[..., 1:-1, 2:])
        normals[..., 1:-1, 1:-1] = _normals_of(*neighbours, u, v, fx, fy, cx, cy, max_relative_jump)
    return normals


def _check_depth(depth: torch.Tensor) -> None:
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"depth must be (B, 1, H, W), got {tuple(depth.shape)}")


def _clean_depth(depth: torch.Tensor) -> torch.Tensor:
    """float32 depth with non-finite values set to 0 (invalid): from here on, valid is simply z > 0."""
    return torch.nan_to_num(depth.to(torch.float32), nan=0.0, posinf=0.0, neginf=0.0)


def _normals_of(
    centre: torch.Tensor,
    up: torch.Tensor,
    down: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    fx: torch.Tensor,
    fy: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    max_relative_jump: float,
) -> torch.Tensor:
    """Normals from the cleaned depth of each pixel and of its 4 neighbours (tensors of one shape (B, 1, ...)),
    the pixels' column and row coordinates ``u``, ``v`` (float64, broadcastable to it) and fx, fy, cx, cy (B,):
    (B, 3, ...) float32. Elementwise only, so a pixel's value does not depend on which other pixels are computed.

    With X = (u - cx) / fx, Y = (v - cy) / fy, a = Z_down - Z_up, b = Z_right - Z_left, s = Z_down + Z_up,
    t = Z_right + Z_left, the central differences of the points P = Z (X, Y, 1) are
    D = (X a, Y a + s / fy, a) and R = (X b + t / fx, Y b, b), and fx fy (D x R) = (fx s b, fy a t, -(X fx s b +
    Y fy a t + s t)). The terms of the float64 form that cancel (Y a against Y a) are gone, so float32 keeps full
    relative precision, and n . P = -Z s t / (fx fy) < 0 wherever all depths are positive: it faces the camera
    by construction.
    """
    batch = centre.shape[0]
    shape = (batch,) + (1,) * (centre.dim() - 1)

    def per_sample(t: torch.Tensor | float) -> torch.Tensor:
        return torch.as_tensor(t, dtype=torch.float64, device=centre.device).reshape(-1).expand(batch).reshape(shape)

    fx64, fy64 = per_sample(fx), per_sample(fy)
    x_u = ((u - per_sample(cx)) / fx64).to(torch.float32)  # per row / column: float64 costs nothing here
    y_v = ((v - per_sample(cy)) / fy64).to(torch.float32)
    ok = centre > 0
    limit = centre * max_relative_jump
    for neighbour in (up, down, left, right):
        ok &= (neighbour - centre).abs() <= limit
        if max_relative_jump >= 1.0:  # below 1 the jump test already rejects a neighbour <= 0
            ok &= neighbour > 0
    a, s = down - up, down + up
    b, t = right - left, right + left
    n_x = fx64.to(torch.float32) * s * b
    n_y = fy64.to(torch.float32) * a * t
    n_z = -(x_u * n_x + y_v * n_y + s * t)
    norm = (n_x * n_x + n_y * n_y + n_z * n_z).sqrt()
    ok &= norm > 0
    inverse = torch.where(ok, 1.0 / norm, torch.zeros_like(norm))
    return torch.cat([n_x * inverse, n_y * inverse, n_z * inverse], dim=1)


def _normals_at(
    depth: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    fx: torch.Tensor,
    fy: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    max_relative_jump: float,
) -> torch.Tensor:
    """``normals_from_depth`` at the pixels ``rows x cols`` only (interior indices, 1 .. H-2 and 1 .. W-2):
    (B, 3, len(rows), len(cols)) float32, bitwise the full map's values there (``_normals_of``)."""
    z = _clean_depth(depth)
    by_row = {dr: z.index_select(2, rows + dr) for dr in (-1, 0, 1)}

    def at(dr: int, dc: int) -> torch.Tensor:
        return by_row[dr].index_select(3, cols + dc)

    u = cols.to(torch.float64).view(1, 1, 1, -1)
    v = rows.to(torch.float64).view(1, 1, -1, 1)
    return _normals_of(at(0, 0), at(-1, 0), at(1, 0), at(0, -1), at(0, 1), u, v, fx, fy, cx, cy, max_relative_jump)


def _normals_in_quarter_cells(
    depth: torch.Tensor,
    fx: torch.Tensor,
    fy: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    max_relative_jump: float,
) -> torch.Tensor:
    """``_normals_at`` of rows and columns 4i + 1, 4i + 2 (the central 2x2 pixels of each 4x4 cell) of a
    (B, 1, 4h, 4w) depth map: (B, 3, 2h, 2w). One copy puts the column within the cell outermost,
    (B, 1, 4, h, 4, w): each neighbour is then a view whose rows are contiguous (elementwise ops on views with
    2-element rows ran 4x slower), and nothing is gathered."""
    batch, _, height, width = depth.shape
    cells = _clean_depth(depth).view(batch, 1, height // 4, 4, width // 4, 4).permute(0, 1, 5, 2, 3, 4).contiguous()
    centre = cells[:, :, 1:3, :, 1:3]
    up, down = cells[:, :, 1:3, :, 0:2], cells[:, :, 1:3, :, 2:4]
    left, right = cells[:, :, 0:2, :, 1:3], cells[:, :, 2:4, :, 1:3]
    offsets = torch.tensor([1.0, 2.0], dtype=torch.float64, device=depth.device)
    cell_cols = torch.arange(width // 4, dtype=torch.float64, device=depth.device) * 4
    cell_rows = torch.arange(height // 4, dtype=torch.float64, device=depth.device) * 4
    u = (offsets.view(-1, 1) + cell_cols).view(1, 1, 2, 1, 1, -1)
    v = (cell_rows.view(-1, 1) + offsets).view(1, 1, 1, -1, 2, 1)
    normals = _normals_of(centre, up, down, left, right, u, v, fx, fy, cx, cy, max_relative_jump)
    # (B, 3, column in cell, h, row in cell, w) -> (B, 3, 2h, 2w)
    return normals.permute(0, 1, 3, 4, 5, 2).reshape(batch, 3, height // 2, width // 2)


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


# -- targets at the resolution of the outputs that use them ----------------------------------------------------
# The objective compares the 1/4-resolution outputs with targets brought to their grid (``train.objective``), and
# the training loader makes normals and contours directly there with the functions below: each equals the objective's
# resize of the full-resolution map bitwise (tests/data/test_targets.py), at a fraction of the cost.
CONTOUR_IGNORE = 255.0


def intermediate_size(height: int, width: int) -> tuple[int, int]:
    """The grid of the intermediate (1/4-resolution) outputs for an input of height x width (the model's
    ``(H // 4, W // 4)``); an input under 4 pixels keeps its own size."""
    return (height // 4, width // 4) if height >= 4 and width >= 4 else (height, width)


def resize_nearest(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, K, H, W) -> (B, K, h, w): the source pixel nearest to each output pixel's centre (labels)."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    return F.interpolate(target, size=size, mode="nearest-exact")


def resize_valid(target: torch.Tensor, valid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, K, H, W) values, (B, 1, H, W) bool -> (B, K, h, w) sampled at the output pixels' centres.

    Bilinear (align_corners=False) where every source pixel with a weight is valid, else the nearest source pixel
    (which may be invalid: the caller's validity test then rejects it).
    """
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    clean = torch.where(valid, target, torch.zeros_like(target))
    bilinear = F.interpolate(clean, size=size, mode="bilinear", align_corners=False)
    all_valid = F.interpolate(valid.to(target.dtype), size=size, mode="bilinear", align_corners=False) >= 1.0 - 1e-6
    return torch.where(all_valid, bilinear, F.interpolate(clean, size=size, mode="nearest-exact"))


def resize_normals(normals: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 3, H, W) unit normals (zero = invalid) -> (B, 3, h, w) by ``resize_valid``, renormalised (an average of
    unit vectors is shorter than 1); the zero vector stays invalid."""
    if tuple(normals.shape[-2:]) == tuple(size):
        return normals
    target = resize_valid(normals, normals.abs().sum(dim=1, keepdim=True) > 0, size)
    norm = (target * target).sum(dim=1, keepdim=True).sqrt()  # torch.norm over dim 1 is several times slower
    return target / norm.clamp_min(torch.finfo(target.dtype).tiny)


def resize_contour(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, H, W) contours (1 / 0 / 255) -> (B, 1, h, w): 1 if any pixel of the output cell is 1 (adaptive
    max-pool: thin boundaries survive), else 0 if any pixel in it is valid, else 255."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    if target.shape[-2] < size[0] or target.shape[-1] < size[1]:
        return F.interpolate(target, size=size, mode="nearest")
    positive = F.adaptive_max_pool2d((target == 1).to(target.dtype), size)
    any_valid = F.adaptive_max_pool2d((target != CONTOUR_IGNORE).to(target.dtype), size)
    ignore = torch.full_like(positive, CONTOUR_IGNORE)
    return torch.where(positive > 0, positive, torch.where(any_valid > 0, torch.zeros_like(positive), ignore))


def _read_indices(in_size: int, out_size: int) -> torch.Tensor:
    """Source indices that bilinear (align_corners=False) and nearest-exact resizing from ``in_size`` to
    ``out_size`` read, with both neighbours kept where a coordinate lies within 1e-6 of an integer (so a rounding
    difference between this float64 arithmetic and the kernel's cannot leave out a pixel it reads)."""
    i = torch.arange(out_size, dtype=torch.float64)
    src = ((i + 0.5) * (in_size / out_size) - 0.5).clamp_min(0.0)
    eps = 1e-6
    low = torch.cat([torch.floor(src - eps), torch.floor(src + eps)]).clamp_min(0)
    nearest = torch.floor((i + 0.5) * (in_size / out_size))
    idx = torch.cat([low, low + 1, torch.floor(nearest - eps), torch.floor(nearest + eps)])
    return torch.unique(idx.clamp(0, in_size - 1).long())


def normals_at_size(
    depth: torch.Tensor,
    fx: torch.Tensor,
    fy: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    size: tuple[int, int],
    max_relative_jump: float = DEFAULT_MAX_RELATIVE_JUMP,
) -> torch.Tensor:
    """``resize_normals(normals_from_depth(depth, ...), size)``, bitwise, computing normals only where the resize
    reads them (at 1/4 resolution: the central 2x2 pixels of each 4x4 cell, a quarter of the pixels).

    depth (B, 1, H, W) metres (0 = invalid) and fx, fy, cx, cy (B,) pixels at depth's resolution -> (B, 3, h, w).
    """
    _check_depth(depth)
    batch, _, height, width = depth.shape
    if (height, width) == tuple(size):
        return normals_from_depth(depth, fx, fy, cx, cy, max_relative_jump)
    if (height, width) == (4 * size[0], 4 * size[1]):
        # Exactly 1/4: the resize reads the central 2x2 pixels of each 4x4 cell (rows and columns 4i + 1, 4i + 2,
        # all interior), and resizing the map of just those pixels by 1/2 reads the same values with the same weights.
        return resize_normals(_normals_in_quarter_cells(depth, fx, fy, cx, cy, max_relative_jump), size)
    rows, cols = _read_indices(height, size[0]), _read_indices(width, size[1])
    rows = rows[(rows >= 1) & (rows <= height - 2)]  # border pixels have no normal (zero): nothing to compute
    cols = cols[(cols >= 1) & (cols <= width - 2)]
    full = torch.zeros(batch, 3, height, width, dtype=torch.float32, device=depth.device)
    if len(rows) and len(cols):
        sparse = _normals_at(depth, rows.to(depth.device), cols.to(depth.device), fx, fy, cx, cy, max_relative_jump)
        full[:, :, rows.view(-1, 1), cols.view(1, -1)] = sparse
    return resize_normals(full, size)


def contours_at_size(
    semantic: torch.Tensor, size: tuple[int, int], ignore_index: int = 255, width: int = 1
) -> torch.Tensor:
    """``resize_contour(contours_from_labels(semantic, ignore_index, width), size)``, bitwise: (B, H, W) labels ->
    (B, 1, h, w) float32 1 / 0 / 255, by 8-bit window min/max (labels 0..254 with ignore 255; other label ranges
    take the float path of ``contours_from_labels``)."""
    if semantic.dim() != 3:
        raise ValueError(f"semantic must be (B, H, W), got {tuple(semantic.shape)}")
    if width < 1:
        raise ValueError(f"contour width must be >= 1, got {width}")
    if ignore_index != 255 or semantic.numel() == 0 or not _fits_8_bits(semantic):
        return resize_contour(contours_from_labels(semantic, ignore_index, width), size)
    labels = semantic.to(torch.uint8).unsqueeze(1)
    # label + 1 wraps ignore (255) to 0, below every label + 1: the max test needs no separate masking pass.
    shifted = labels + 1
    boundary = _window(shifted, width, torch.maximum, 0) > shifted
    boundary |= _window(labels, width, torch.minimum, 255) < labels
    # 0 = ignore, 1 = valid, 2 = valid contour (an ignore pixel's own boundary test is meaningless: masked here)
    code = (boundary.view(torch.uint8) + 1) * shifted.clamp(max=1)
    lookup = torch.tensor([CONTOUR_IGNORE, 0.0, 1.0], device=semantic.device)
    height, width_px = semantic.shape[-2:]
    if (height, width_px) == tuple(size):
        return lookup[code.long()]
    if (height, width_px) == (4 * size[0], 4 * size[1]):
        # Exact 4x4 cells: the max-pool of ``resize_contour`` is the largest code in each cell (contour over valid
        # over ignore), as a chain of maxima over strided views.
        cells = code.view(semantic.shape[0], 1, size[0], 4, size[1], 4)
        rows = cells[:, :, :, 0]
        for k in range(1, 4):  # over a cell's rows, then its columns: not over pixels
            rows = torch.maximum(rows, cells[:, :, :, k])
        cell_max = rows[..., 0]
        for k in range(1, 4):
            cell_max = torch.maximum(cell_max, rows[..., k])
        return lookup[cell_max.long()]
    return resize_contour(lookup[code.long()], size)


def _fits_8_bits(semantic: torch.Tensor) -> bool:
    if semantic.dtype == torch.uint8:
        return True
    low, high = torch.aminmax(semantic)
    return int(low) >= 0 and int(high) <= 255


def _window(x: torch.Tensor, width: int, reduce, pad_value: int) -> torch.Tensor:
    """Separable (2 * width + 1)^2 window max or min of (B, 1, H, W), out-of-image pixels = ``pad_value``."""
    padded = F.pad(x, (width, width, width, width), value=pad_value)
    height, cols = x.shape[-2:]
    rows = padded[..., 0:height, :]
    for k in range(1, 2 * width + 1):  # over window offsets, not pixels
        rows = reduce(rows, padded[..., k : k + height, :])
    out = rows[..., 0:cols]
    for k in range(1, 2 * width + 1):
        out = reduce(out, rows[..., k : k + cols])
    return out
