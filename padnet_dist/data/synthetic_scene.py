"""Procedural scenes rendered by analytic ray casting: RGB, labels, depth and instances that agree exactly.

A scene is either a *room* (floor, four walls, ceiling; NYUD-like) or a *street* (ground, two building
facades with varying heights, open sky; Cityscapes-like), with boxes, spheres, cylinders and poles standing
on the floor. Rays through a pinhole camera are intersected with every primitive in numpy; the nearest hit
gives the class, the instance, the true surface normal and the z-depth. Appearance is a per-class
procedural texture in world coordinates (so it is stable under viewpoint changes) times Lambertian shading
``ambient + diffuse * max(0, n . l)`` from one directional light: depth, labels and appearance are consistent,
so every PAD-Net task is learnable from the image.

Conventions: world frame Y up, floor at y = 0; camera frame x right, y down, z forward; depth is the z
coordinate in the camera frame (as for Cityscapes and NYUD). Pixel (u, v) has its centre at (u, v) (0-based).
Invalid depth (0): sky, surfaces beyond the scene's max range, a few small sensor holes, and the void region.
A thin void region (an ego "hood" at the bottom of street scenes, a white border around room scenes, like
NYUD's) is labelled 255 (ignore). Everything is a pure function of ``(seed, index)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

STEREO_BASELINE_M = 0.22  # virtual rig, as Cityscapes (0.21-0.22 m): disparity = baseline * fx / depth

SYNTHETIC_CLASSES: tuple[str, ...] = ("ground", "wall", "ceiling", "sky", "box", "sphere", "cylinder", "pole")
SYNTHETIC_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),
    (102, 102, 156),
    (220, 220, 170),
    (70, 130, 180),
    (0, 0, 142),
    (220, 20, 60),
    (250, 170, 30),
    (153, 153, 153),
)
GROUND, WALL, CEILING, SKY, BOX, SPHERE, CYLINDER, POLE = range(8)
OBJECT_CLASSES: tuple[int, ...] = (BOX, SPHERE, CYLINDER, POLE)
IGNORE_ID = 255
SCENE_KINDS: tuple[str, ...] = ("room", "street")
MAX_RANGE_M = {"room": 10.0, "street": 60.0}
AMBIENT, DIFFUSE = 0.3, 0.7
_EPS = 1e-4
_INF = np.float32(np.inf)

# Base albedo per class (linear RGB, 0..1); each instance jitters it a little.
_ALBEDO = np.array(
    [(0.35, 0.33, 0.32), (0.62, 0.52, 0.42), (0.85, 0.85, 0.8), (0, 0, 0),
     (0.15, 0.3, 0.65), (0.7, 0.15, 0.15), (0.8, 0.6, 0.1), (0.45, 0.45, 0.5)],
    dtype=np.float32,
)  # fmt: skip


@dataclass(frozen=True)
class SceneRender:
    """One rendered view. Shapes are (H, W) unless noted."""

    rgb: np.ndarray  # uint8 (H, W, 3)
    semantic: np.ndarray  # uint8 train ids 0..7, 255 = void
    depth: np.ndarray  # float32 metres (z in the camera frame), 0 = invalid
    instances: np.ndarray  # int32: class*1000+k for objects, the class id for stuff, 255 for void
    normals: np.ndarray  # float32 (H, W, 3) true unit normals in the camera frame, 0 where no surface
    shading: np.ndarray  # float32 ambient + diffuse * max(0, n . l) (1 where unlit: sky, void)
    # fx, fy, cx, cy in pixels at this resolution; baseline (metres) of a virtual stereo rig, Cityscapes' nominal one,
    # so disparity targets (data.depth_target=disparity) are defined on synthetic scenes as on Cityscapes
    camera: dict[str, float]
    meta: dict = field(default_factory=dict)  # scene kind, pose, light, seed, index


# ----------------------------------------------------------------------------------------------------------
# Primitives. `hit(o, d)` returns the ray parameter t (N,) of the nearest hit in front of the camera, inf if
# none; with d's camera-frame z equal to 1, t is the z-depth. `normal(o, d, t)` is called on the rays that hit.


@dataclass
class _Plane:
    axis: int
    offset: float
    class_id: int
    lo: tuple[float, float, float] = (-math.inf,) * 3
    hi: tuple[float, float, float] = (math.inf,) * 3
    instance_id: int = -1
    height_steps: tuple[float, float, np.ndarray] | None = None  # facade: (z0, step_m, heights per step)

    def hit(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.offset - o[self.axis]) / d[:, self.axis]
        ok = t > _EPS
        for ax in range(3):
            if ax != self.axis and (math.isfinite(self.lo[ax]) or math.isfinite(self.hi[ax])):
                c = o[ax] + t * d[:, ax]
                ok &= (c >= self.lo[ax]) & (c <= self.hi[ax])
        if self.height_steps is not None:
            z0, step, heights = self.height_steps
            with np.errstate(invalid="ignore"):
                z = o[2] + t * d[:, 2]
            # rays parallel to the facade (t inf/nan) never hit it: any step index will do for them
            z = np.nan_to_num(z, nan=z0, posinf=z0, neginf=z0)
            seg = np.clip(((z - z0) / step).astype(np.int64), 0, len(heights) - 1)
            ok &= o[1] + t * d[:, 1] <= heights[seg]
        return np.where(ok, t, _INF)

    def normal(self, o: np.ndarray, d: np.ndarray, t: np.ndarray) -> np.ndarray:
        n = np.zeros_like(d)
        n[:, self.axis] = -np.sign(d[:, self.axis])  # the side facing the camera
        return n


@dataclass
class _Sphere:
    centre: np.ndarray
    radius: float
    class_id: int
    instance_id: int

    def hit(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        oc = o - self.centre
        a = np.einsum("ij,ij->i", d, d)
        b = d @ oc
        disc = b * b - a * (oc @ oc - self.radius**2)
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a
        return np.where((disc >= 0) & (t > _EPS), t, _INF)

    def normal(self, o: np.ndarray, d: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (o + t[:, None] * d - self.centre) / self.radius


@dataclass
class _Cylinder:
    """Vertical cylinder standing on the floor, with a top cap."""

    x: float
    z: float
    radius: float
    height: float
    class_id: int
    instance_id: int

    def _side_cap(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ox, oz = o[0] - self.x, o[2] - self.z
        dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
        a = dx * dx + dz * dz
        b = dx * ox + dz * oz
        disc = b * b - a * (ox * ox + oz * oz - self.radius**2)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = (-b - np.sqrt(np.maximum(disc, 0))) / a
            y = o[1] + t_side * dy
            side_ok = (disc >= 0) & (t_side > _EPS) & (y >= 0) & (y <= self.height)
            t_cap = (self.height - o[1]) / dy
            cx, cz = ox + t_cap * dx, oz + t_cap * dz
            cap_ok = (t_cap > _EPS) & (cx * cx + cz * cz <= self.radius**2)
        return np.where(side_ok, t_side, _INF), np.where(cap_ok, t_cap, _INF)

    def hit(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        return np.minimum(*self._side_cap(o, d))

    def normal(self, o: np.ndarray, d: np.ndarray, t: np.ndarray) -> np.ndarray:
        t_side, t_cap = self._side_cap(o, d)
        p = o + t[:, None] * d
        radial = np.stack([p[:, 0] - self.x, np.zeros_like(t), p[:, 2] - self.z], axis=1) / self.radius
        up = np.broadcast_to(np.array([0, 1, 0], dtype=d.dtype), d.shape)
        return np.where((t_cap < t_side)[:, None], up, radial)


@dataclass
class _Box:
    """Box standing on the floor, rotated by `yaw` about the vertical axis."""

    centre: np.ndarray  # (3,), centre of the box
    half: np.ndarray  # (3,) half sizes in the box frame
    yaw: float
    class_id: int
    instance_id: int

    def _local(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        to_local = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]], dtype=d.dtype)
        return (o - self.centre) @ to_local.T, d @ to_local.T, to_local

    def hit(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ol, dl, _ = self._local(o, d)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-self.half - ol) / dl
            t2 = (self.half - ol) / dl
        t_near = np.minimum(t1, t2).max(axis=1)
        t_far = np.maximum(t1, t2).min(axis=1)
        return np.where((t_near <= t_far) & (t_near > _EPS), t_near, _INF)

    def normal(self, o: np.ndarray, d: np.ndarray, t: np.ndarray) -> np.ndarray:
        ol, dl, to_local = self._local(o, d)
        pl = (ol + t[:, None] * dl) / self.half
        axis = np.abs(pl).argmax(axis=1)
        n_local = np.zeros_like(pl)
        rows = np.arange(len(t))
        n_local[rows, axis] = np.sign(pl[rows, axis])
        return n_local @ to_local  # back to world: inverse of a rotation is its transpose


# ----------------------------------------------------------------------------------------------------------
# Scene sampling


def _rotation_cam_to_world(pitch: float, yaw: float) -> np.ndarray:
    """Camera (x right, y down, z forward) -> world (Y up), pitching the view down by `pitch` radians."""
    flip = np.diag([1.0, -1.0, 1.0])
    cp, sp = math.cos(pitch), math.sin(pitch)
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    cy, sy = math.cos(yaw), math.sin(yaw)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return (ry @ rx @ flip).astype(np.float32)


def _sample_objects(rng: np.random.Generator, kind: str, half_width: float, z_max: float, ceiling: float) -> list:
    counts = dict.fromkeys(OBJECT_CLASSES, 0)
    objects: list = []
    for _ in range(int(rng.integers(3, 9))):
        cls = int(rng.choice(OBJECT_CLASSES, p=[0.35, 0.25, 0.25, 0.15]))
        inst = cls * 1000 + counts[cls]
        counts[cls] += 1
        x = float(rng.uniform(-half_width + 0.4, half_width - 0.4))
        z = float(rng.uniform(2.5, z_max))
        scale = 1.0 if kind == "room" else 1.8
        if cls == BOX:
            half = np.array(rng.uniform([0.2, 0.2, 0.2], [0.7, 0.6, 0.9]) * scale, dtype=np.float32)
            centre = np.array([x, half[1], z], dtype=np.float32)
            objects.append(_Box(centre, half, float(rng.uniform(-math.pi, math.pi)), cls, inst))
        elif cls == SPHERE:
            r = float(rng.uniform(0.2, 0.6) * scale)
            objects.append(_Sphere(np.array([x, r, z], dtype=np.float32), r, cls, inst))
        elif cls == CYLINDER:
            h = min(float(rng.uniform(0.4, 1.5) * scale), ceiling - 0.1)
            objects.append(_Cylinder(x, z, float(rng.uniform(0.15, 0.5) * scale), h, cls, inst))
        else:
            h = min(float(rng.uniform(2.0, 6.0)), ceiling)
            objects.append(_Cylinder(x, z, float(rng.uniform(0.04, 0.1)), h, cls, inst))
    return objects


def _sample_scene(rng: np.random.Generator, kind: str) -> tuple[list, dict]:
    if kind == "room":
        half_w, depth_m, height_m = rng.uniform(2.0, 3.5), rng.uniform(5.0, 9.5), rng.uniform(2.5, 3.2)
        stuff = [
            _Plane(1, 0.0, GROUND),
            _Plane(1, float(height_m), CEILING),
            _Plane(0, float(-half_w), WALL),
            _Plane(0, float(half_w), WALL),
            _Plane(2, float(depth_m), WALL),
            _Plane(2, -1.5, WALL),
        ]
        pose = {"x": rng.uniform(-0.5, 0.5) * half_w, "height": rng.uniform(1.0, 1.6)}
        pose.update(pitch=rng.uniform(-8, 15), yaw=rng.uniform(-20, 20))
        objects = _sample_objects(rng, kind, float(half_w), float(depth_m) - 0.6, float(height_m))
    else:
        half_w, step = rng.uniform(5.0, 9.0), rng.uniform(8.0, 20.0)
        far = 150.0
        facades = []
        for side in (-1, 1):
            heights = rng.uniform(5.0, 25.0, size=int(far / step) + 2).astype(np.float32)
            facades.append(_Plane(0, float(side * half_w), WALL, height_steps=(-10.0, float(step), heights)))
        lo, hi = (-100.0, -math.inf, -10.0), (100.0, math.inf, far)
        stuff = [_Plane(1, 0.0, GROUND, lo=lo, hi=hi), *facades]
        pose = {"x": rng.uniform(-0.5, 0.5) * half_w, "height": rng.uniform(1.2, 1.8)}
        pose.update(pitch=rng.uniform(-2, 8), yaw=rng.uniform(-12, 12))
        objects = _sample_objects(rng, kind, float(half_w), 30.0, math.inf)
    return stuff + objects, {k: float(v) for k, v in pose.items()}


# ----------------------------------------------------------------------------------------------------------
# Appearance


def _texture(cls: int, p: np.ndarray, n: np.ndarray, kind: str) -> np.ndarray:
    """Albedo multiplier (M,) in about [0.4, 1] from the world hit points `p` (M, 3)."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    if cls == GROUND:
        tile = 0.6 if kind == "room" else 2.5
        return np.where((np.floor(x / tile) + np.floor(z / tile)) % 2 == 0, 1.0, 0.7)
    if cls == WALL:
        if kind == "street":  # windows on a 3 m grid
            u, w = np.mod(z + x, 3.0) / 3.0, np.mod(y, 3.0) / 3.0
            return np.where((u > 0.3) & (u < 0.7) & (w > 0.35) & (w < 0.75), 0.35, 1.0)
        row = np.floor(y / 0.25)
        u = np.mod(x + z + 0.3 * (row % 2), 0.6)
        return np.where((np.mod(y, 0.25) < 0.03) | (u < 0.04), 0.55, 1.0)
    if cls == CEILING:
        return 0.92 + 0.08 * np.sin(1.5 * x) * np.sin(1.5 * z)
    if cls == BOX:
        return np.where((np.floor(3 * x) + np.floor(3 * y) + np.floor(3 * z)) % 2 == 0, 1.0, 0.65)
    if cls == SPHERE:
        return np.where(np.sin(8 * np.arctan2(n[:, 2], n[:, 0])) > 0, 1.0, 0.6)
    if cls == CYLINDER:
        return np.where(np.sin(12 * y) > 0, 1.0, 0.7)
    return np.where(np.mod(y, 0.6) < 0.3, 1.0, 0.45)  # pole: banded


def _ellipse_mask(
    shape: tuple[int, int], rng: np.random.Generator, num: int, size_frac: tuple[float, float]
) -> np.ndarray:
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    for _ in range(num):
        cu, cv = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.85) * height  # clear of the void border
        ru, rv = rng.uniform(*size_frac, size=2) * min(height, width) + 0.75
        u0, u1 = max(0, int(cu - ru)), min(width, int(cu + ru) + 1)
        v0, v1 = max(0, int(cv - rv)), min(height, int(cv + rv) + 1)
        vv, uu = np.mgrid[v0:v1, u0:u1]
        mask[v0:v1, u0:u1] |= ((uu - cu) / ru) ** 2 + ((vv - cv) / rv) ** 2 <= 1
    return mask


def _void_mask(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    u = np.arange(width)
    if kind == "street":  # an ego hood: a curved band at the bottom
        top = height * rng.uniform(0.02, 0.06) * (1 - 0.5 * ((u - width / 2) / (width / 2)) ** 2)
        rows_from_bottom = np.maximum(1, np.round(top)).astype(np.int64)
        return np.arange(height)[:, None] >= height - rows_from_bottom[None, :]
    border = max(1, round(min(height, width) * rng.uniform(0.01, 0.025)))
    mask = np.zeros((height, width), dtype=bool)
    mask[:border], mask[-border:], mask[:, :border], mask[:, -border:] = True, True, True, True
    return mask


# ----------------------------------------------------------------------------------------------------------


def render_scene(seed: int, index: int, height: int = 256, width: int = 512, kind: str | None = None) -> SceneRender:
    """Render scene `index` of the family `seed` at `height` x `width` pixels (deterministic).

    `kind` forces "room" or "street"; by default it is drawn from (seed, index). Intrinsics vary a few
    percent per scene around a 55-65 degree horizontal field of view.
    """
    if height < 8 or width < 8:
        raise ValueError(f"synthetic scenes need at least 8x8 pixels, got {height}x{width}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    kind = kind or SCENE_KINDS[int(rng.integers(0, 2))]
    if kind not in SCENE_KINDS:
        raise ValueError(f"kind='{kind}': choose one of {', '.join(SCENE_KINDS)}")
    fx = 0.5 * width / math.tan(math.radians(rng.uniform(55, 65)) / 2)
    fy = fx * rng.uniform(0.99, 1.01)
    cx = (width - 1) / 2 + rng.uniform(-0.02, 0.02) * width
    cy = (height - 1) / 2 + rng.uniform(-0.02, 0.02) * height
    primitives, pose = _sample_scene(rng, kind)
    rot = _rotation_cam_to_world(math.radians(pose["pitch"]), math.radians(pose["yaw"]))
    origin = np.array([pose["x"], pose["height"], 0.0], dtype=np.float32)

    vv, uu = np.mgrid[0:height, 0:width].astype(np.float32)
    rays_cam = np.stack([(uu - cx) / fx, (vv - cy) / fy, np.ones_like(uu)], axis=-1).reshape(-1, 3)
    rays = (rays_cam @ rot.T).astype(np.float32)

    t_best = np.full(len(rays), _INF, dtype=np.float32)
    which = np.full(len(rays), -1, dtype=np.int16)
    for i, prim in enumerate(primitives):
        t = prim.hit(origin, rays)
        closer = t < t_best
        t_best = np.where(closer, t, t_best)
        which[closer] = i

    elev, azim = math.radians(rng.uniform(30, 70)), rng.uniform(-math.pi, math.pi)
    light = np.array([math.cos(elev) * math.cos(azim), math.sin(elev), math.cos(elev) * math.sin(azim)], np.float32)
    semantic = np.full(len(rays), SKY, dtype=np.uint8)
    instances = np.full(len(rays), SKY, dtype=np.int32)
    normals = np.zeros_like(rays)
    albedo = np.zeros_like(rays)
    for i, prim in enumerate(primitives):
        sel = np.flatnonzero(which == i)
        if sel.size == 0:
            continue
        n = prim.normal(origin, rays[sel], t_best[sel]).astype(np.float32)
        n /= np.linalg.norm(n, axis=1, keepdims=True)  # float32 hit points on thin poles are off by ~1e-3
        p = origin + t_best[sel, None] * rays[sel]
        jitter = 1.0 + 0.1 * np.sin(np.array([1.0, 2.0, 3.0]) * (i + 1) + seed)  # per-primitive tint
        albedo[sel] = (_ALBEDO[prim.class_id] * jitter)[None] * _texture(prim.class_id, p, n, kind)[:, None]
        normals[sel] = n
        semantic[sel] = prim.class_id
        instances[sel] = prim.instance_id if prim.instance_id >= 0 else prim.class_id
    surface = which >= 0
    shading = np.where(surface, AMBIENT + DIFFUSE * np.maximum(normals @ light, 0.0), 1.0).astype(np.float32)
    linear = albedo * shading[:, None] * rng.uniform(0.85, 1.15)
    elevation = rays[:, 1] / np.linalg.norm(rays, axis=1)
    sky = np.array([0.35, 0.55, 0.9], np.float32) * (0.75 + 0.25 * np.clip(elevation, 0, 1))[:, None]
    linear[~surface] = sky[~surface]

    shape = (height, width)
    depth = np.where(surface, t_best, 0.0).astype(np.float32).reshape(shape)
    depth[depth > MAX_RANGE_M[kind]] = 0.0
    depth[_ellipse_mask(shape, rng, int(rng.integers(1, 5)), (0.01, 0.03))] = 0.0  # sensor holes
    rgb = linear.reshape(height, width, 3)
    semantic, instances = semantic.reshape(shape), instances.reshape(shape)
    normals_cam = (normals @ rot).reshape(height, width, 3)  # world -> camera: R^T n
    shading = shading.reshape(shape)

    void = _void_mask(kind, height, width, rng)
    semantic[void], instances[void], depth[void] = IGNORE_ID, IGNORE_ID, 0.0
    normals_cam[void], shading[void] = 0.0, 1.0
    rgb[void] = 0.08 if kind == "street" else 0.95
    rgb = rgb + rng.normal(0.0, 0.01, size=rgb.shape).astype(np.float32)
    rgb8 = np.round(255 * np.clip(rgb, 0, 1) ** (1 / 2.2)).astype(np.uint8)
    return SceneRender(
        rgb=rgb8,
        semantic=semantic,
        depth=depth,
        instances=instances,
        normals=normals_cam,
        shading=shading,
        camera={"fx": float(fx), "fy": float(fy), "cx": float(cx), "cy": float(cy), "baseline": STEREO_BASELINE_M},
        meta={
            "scene": kind,
            "seed": int(seed),
            "index": int(index),
            "camera_height_m": pose["height"],
            "pitch_deg": pose["pitch"],
            "yaw_deg": pose["yaw"],
            "light_dir_cam": [float(v) for v in light @ rot],
            "max_range_m": MAX_RANGE_M[kind],
        },
    )
