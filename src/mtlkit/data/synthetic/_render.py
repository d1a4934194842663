"""Vectorised NumPy ray casting of a :class:`Scene`: image and every label from the same geometry.

Conventions of :func:`render_scene`'s outputs (H, W = image size):

- ``image``: uint8 (H, W, 3).
- ``depth``: float32 (H, W), **z-depth** along the optical axis in metres (not the ray length), > 0 where a
  surface is hit, 0 where the ray escapes (no ceiling, over the walls).
- ``normals``: float32 (H, W, 3) unit surface normals in the camera frame (x right, y down, z forward),
  oriented towards the camera (``n . ray < 0``); all-zero where invalid.
- ``semseg``: uint8 class per pixel (:data:`CLASS_NAMES`), 255 where invalid.
- ``parts``: uint8, 0 on the room, 1 top / 2 side / 3 bottom on objects by the world-frame normal
  (``n_z > 0.7`` top, ``n_z < -0.7`` bottom, else side), 255 where invalid.
- ``saliency``: uint8, 1 on objects, 0 on the room, 255 where invalid.
- ``edge``: uint8, see :func:`compute_edges`; 255 where invalid.
- ``instance``: int16, 0 for the room, k + 1 for ``scene.objects[k]``, -1 where invalid.
"""

from __future__ import annotations

import math

import numpy as np

from mtlkit.data.synthetic._scene import (
    OBJECT_CLASS,
    PART_Z_THRESHOLD,
    Camera,
    Material,
    Scene,
    SceneObject,
)

IGNORE = 255
#: relative z-depth jump (|dz| / min z) between 4-neighbours on different objects that makes an occlusion edge
EDGE_DEPTH_JUMP = 0.02
_EPS = 1e-4
_INF = np.inf


def image_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``64`` -> (64, 64); ``(H, W)`` -> (H, W)."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def camera_basis(camera: Camera) -> np.ndarray:
    """3x3 matrix whose columns are the camera's x (right), y (down), z (forward) axes in world frame."""
    yaw, pitch = math.radians(camera.yaw), math.radians(camera.pitch)
    f = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    r = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    d = np.cross(f, r)
    return np.stack([r, d, f], axis=1)


def focal_length(camera: Camera, width: int) -> float:
    """Focal length in pixels (square pixels; ``hfov`` spans the image width)."""
    return (width / 2.0) / math.tan(math.radians(camera.hfov) / 2.0)


def camera_rays(camera: Camera, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origin (3,), world directions (H*W, 3) with camera-frame z = 1 (ray parameter t = z-depth), basis."""
    basis = camera_basis(camera)
    fpx = focal_length(camera, w)
    u = (np.arange(w) + 0.5 - w / 2.0) / fpx
    v = (np.arange(h) + 0.5 - h / 2.0) / fpx
    cam = np.empty((h, w, 3))
    cam[..., 0] = u[None, :]
    cam[..., 1] = v[:, None]
    cam[..., 2] = 1.0
    dirs = cam.reshape(-1, 3) @ basis.T
    return np.asarray(camera.position, dtype=np.float64), dirs, basis


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of (M, 3) arrays."""
    return np.einsum("ij,ij->i", a, b)


def _safe(x: np.ndarray) -> np.ndarray:
    """Replace near-zero values (divisors) by a tiny value of the same sign."""
    return np.where(np.abs(x) < 1e-12, np.where(x < 0, -1e-12, 1e-12), x)


def _rot_z(a: np.ndarray, yaw_deg: float) -> np.ndarray:
    """Rotate vectors (..., 3) about z by ``yaw_deg``."""
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    out = np.empty(np.broadcast_shapes(a.shape, (3,)))
    out[..., 0] = c * a[..., 0] - s * a[..., 1]
    out[..., 1] = s * a[..., 0] + c * a[..., 1]
    out[..., 2] = a[..., 2]
    return out


# ---------------------------------------------------------------- ray / primitive intersections
# Each takes origins and directions (M, 3) and returns (t, n): t (M,) the nearest hit distance > eps along the
# ray (inf on a miss) and n (M, 3) the outward world normal at that hit (meaningless where t is inf).


def _hit_sphere(obj: SceneObject, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.array([obj.x, obj.y, obj.radius])
    oc = o - c
    a = _dot(d, d)
    b = _dot(d, oc)
    cc = _dot(oc, oc) - obj.radius**2
    disc = b * b - a * cc
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    t = np.where((disc > 0) & (t > _EPS), t, _INF)
    p = oc + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    return t, p / obj.radius


def _hit_box(obj: SceneObject, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hx, hy = obj.half_size
    half = np.array([hx, hy, obj.height / 2.0])
    lo_ = _rot_z(o - np.array([obj.x, obj.y, obj.height / 2.0]), -obj.yaw)
    ld = _safe(_rot_z(d, -obj.yaw))
    t1 = (-half - lo_) / ld
    t2 = (half - lo_) / ld
    tmin = np.minimum(t1, t2)
    tnear = tmin.max(axis=-1)
    tfar = np.maximum(t1, t2).min(axis=-1)
    t = np.where((tnear <= tfar) & (tnear > _EPS), tnear, _INF)
    axis = tmin.argmax(axis=-1)
    n_local = np.zeros(t.shape + (3,))
    rows = np.arange(len(t))
    n_local[rows, axis] = -np.sign(ld[rows, axis])
    return t, _rot_z(n_local, obj.yaw)


def _hit_cylinder(obj: SceneObject, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = o - np.array([obj.x, obj.y, 0.0])
    shape = p.shape[:-1]
    px, py, pz = p[:, 0], p[:, 1], p[:, 2]
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    a = _safe(dx * dx + dy * dy)
    b = px * dx + py * dy
    c = px * px + py * py - obj.radius**2
    disc = b * b - a * c
    with np.errstate(invalid="ignore"):
        ts = (-b - np.sqrt(disc)) / a
    zs = pz + ts * dz
    ts = np.where((disc > 0) & (ts > _EPS) & (zs >= 0) & (zs <= obj.height), ts, _INF)
    tc = (obj.height - pz) / _safe(dz)
    xc, yc = px + tc * dx, py + tc * dy
    tc = np.where((tc > _EPS) & (xc * xc + yc * yc <= obj.radius**2), tc, _INF)
    side = ts <= tc
    t = np.minimum(ts, tc)
    tt = np.where(np.isfinite(t), t, 0.0)
    n = np.zeros(shape + (3,))
    n[..., 0] = np.where(side, (px + tt * dx) / obj.radius, 0.0)
    n[..., 1] = np.where(side, (py + tt * dy) / obj.radius, 0.0)
    n[..., 2] = np.where(side, 0.0, 1.0)
    return t, n


def _hit_cone(obj: SceneObject, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k2 = (obj.radius / obj.height) ** 2
    p = o - np.array([obj.x, obj.y, 0.0])
    shape = p.shape[:-1]
    px, py, pz = p[:, 0], p[:, 1], p[:, 2]
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    w = obj.height - pz
    a = _safe(dx * dx + dy * dy - k2 * dz * dz)
    b = px * dx + py * dy + k2 * w * dz
    c = px * px + py * py - k2 * w * w
    disc = b * b - a * c
    with np.errstate(invalid="ignore"):
        sq = np.sqrt(disc)
        r1, r2 = (-b - sq) / a, (-b + sq) / a
    t = np.full(shape, _INF)
    for r in (r1, r2):  # nearest root on the lower nappe (0 <= z <= height) in front of the ray
        z = pz + r * dz
        ok = (disc >= 0) & (r > _EPS) & (z >= 0) & (z <= obj.height)
        t = np.where(ok & (r < t), r, t)
    tt = np.where(np.isfinite(t), t, 0.0)
    n = np.empty(shape + (3,))
    n[..., 0] = px + tt * dx
    n[..., 1] = py + tt * dy
    n[..., 2] = k2 * (w - tt * dz)
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
    return t, n


_HIT = {"sphere": _hit_sphere, "box": _hit_box, "cylinder": _hit_cylinder, "cone": _hit_cone}


def bounding_sphere(obj: SceneObject) -> tuple[np.ndarray, float]:
    """Centre and radius of a sphere enclosing the object (for culling rays)."""
    if obj.kind == "sphere":
        return np.array([obj.x, obj.y, obj.radius]), obj.radius
    centre = np.array([obj.x, obj.y, obj.height / 2.0])
    return centre, math.hypot(obj.footprint_radius(), obj.height / 2.0)


def _intersect_sparse(
    obj: SceneObject, o: np.ndarray, d: np.ndarray, dd: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hits of the rays (o, d: (3,) or (M, 3)) that pass the bounding-sphere test: (indices, t, normals).

    ``dd``: the squared norms of ``d`` when o is (3,) and d is (M, 3), if already known.
    """
    if obj.kind not in _HIT:
        raise ValueError(f"unknown object kind {obj.kind!r}; valid: {', '.join(_HIT)}")
    centre, radius = bounding_sphere(obj)
    oc = o - centre
    if o.ndim == 1:
        b, a, cc = d @ oc, (_dot(d, d) if dd is None else dd), oc @ oc
    elif d.ndim == 1:
        b, a, cc = oc @ d, d @ d, _dot(oc, oc)
    else:
        b, a, cc = _dot(d, oc), _dot(d, d), _dot(oc, oc)
    idx = np.flatnonzero(b * b - a * (cc - (radius * 1.001) ** 2) > 0)
    o_sub = o if o.ndim == 1 else o[idx]
    d_sub = d if d.ndim == 1 else d[idx]
    o_sub, d_sub = np.broadcast_arrays(o_sub, d_sub)
    if len(idx) == 0:
        return idx, np.zeros(0), np.zeros((0, 3))
    t, n = _HIT[obj.kind](obj, o_sub, d_sub)
    return idx, t, n


def _shadowed(objects: list[SceneObject], p: np.ndarray, ldir: np.ndarray) -> np.ndarray:
    """Whether the segment from each point p (M, 3) towards the directional light hits an object."""
    e1 = np.cross(ldir, [0.0, 0.0, 1.0] if abs(ldir[2]) < 0.9 else [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    frame = np.stack([e1, np.cross(ldir, e1), ldir], axis=1)
    proj = p @ frame  # coordinates across (2) and along (1) the light direction: cheap culling
    blocked = np.zeros(len(p), dtype=bool)
    for obj in objects:
        centre, radius = bounding_sphere(obj)
        pc = centre @ frame
        da, db = proj[:, 0] - pc[0], proj[:, 1] - pc[1]
        cand = np.flatnonzero((da * da + db * db < (radius * 1.001) ** 2) & (proj[:, 2] < pc[2] + radius))
        cand = cand[~blocked[cand]]
        if len(cand):
            t, _ = _HIT[obj.kind](obj, p[cand], np.broadcast_to(ldir, (len(cand), 3)))
            blocked[cand[np.isfinite(t)]] = True
    return blocked


def intersect(obj: SceneObject, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of rays with an object: (t (M,), outward world normal (M, 3)); t = inf on a miss.

    ``origins`` and ``dirs`` are (3,) or (M, 3) (at least one of them (M, 3)).
    """
    o, d = np.asarray(origins, dtype=np.float64), np.asarray(dirs, dtype=np.float64)
    m = max(len(o) if o.ndim == 2 else 0, len(d) if d.ndim == 2 else 0)
    idx, ts, ns = _intersect_sparse(obj, o, d)
    t = np.full(m, _INF)
    n = np.zeros((m, 3))
    t[idx], n[idx] = ts, ns
    return t, n


def _hit_room(scene: Scene, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exit of the room box from inside: (t, inward normal, surface id).

    Surface ids: 0 floor, 1-4 walls x-/x+/y-/y+, 5 ceiling.

    Without a ceiling, the z upper slab is open and hits above the walls escape (t = inf, surface -1).
    """
    sx, sy = scene.room.size
    lo = np.array([-sx / 2, -sy / 2, 0.0])
    hi = np.array([sx / 2, sy / 2, scene.room.height if scene.room.ceiling else _INF])
    ds = _safe(d)
    with np.errstate(invalid="ignore"):
        ts = np.where(ds > 0, (hi - o) / ds, (lo - o) / ds)
    ts = np.where(np.isnan(ts) | (ts < 0), _INF, ts)
    axis = ts.argmin(axis=1)
    t = ts[np.arange(len(ts)), axis]
    positive = d[np.arange(len(d)), axis] > 0
    surface = np.select(
        [axis == 2, axis == 0, axis == 1], [np.where(positive, 5, 0), 1 + positive, 3 + positive]
    )
    n = np.zeros_like(d)
    n[np.arange(len(d)), axis] = np.where(positive, -1.0, 1.0)
    if not scene.room.ceiling:
        z = o[2] + np.where(np.isfinite(t), t, 0.0) * d[:, 2]
        escaped = ~np.isfinite(t) | ((surface >= 1) & (surface <= 4) & (z > scene.room.height))
        t = np.where(escaped, _INF, t)
        surface = np.where(escaped, -1, surface)
    return t, n, surface


# ---------------------------------------------------------------- appearance


def _value_noise(p: np.ndarray, seed: int) -> np.ndarray:
    """Smooth 3-D value noise in [0, 1] on a 16^3 periodic lattice (two octaves)."""
    lattice = np.random.default_rng(seed).random(16**3)
    out = np.zeros(len(p))
    for octave, amp in ((1.0, 0.65), (2.0, 0.35)):
        q = p * octave
        i0 = np.floor(q)
        f = q - i0
        f = f * f * (3 - 2 * f)
        i0 = i0.astype(np.int64)
        ix = [i0[:, 0] % 16, (i0[:, 0] + 1) % 16]
        iy = [(i0[:, 1] % 16) * 16, ((i0[:, 1] + 1) % 16) * 16]
        iz = [(i0[:, 2] % 16) * 256, ((i0[:, 2] + 1) % 16) * 256]
        wx, wy, wz = [1 - f[:, 0], f[:, 0]], [1 - f[:, 1], f[:, 1]], [1 - f[:, 2], f[:, 2]]
        for a in (0, 1):
            for b in (0, 1):
                for c in (0, 1):
                    out += amp * wx[a] * wy[b] * wz[c] * lattice[ix[a] + iy[b] + iz[c]]
    return out


def texture(material: Material, p: np.ndarray) -> np.ndarray:
    """Albedo (M, 3) of a material at texture-space points p (M, 3)."""
    c1, c2 = np.asarray(material.color), np.asarray(material.color2)
    s = max(material.scale, 1e-3)
    if material.pattern == "stripes":
        m = (np.floor(2.0 * (p @ np.asarray(material.direction)) / s) % 2).astype(np.float64)
    elif material.pattern == "checker":
        m = (np.floor(p / s).sum(axis=1) % 2).astype(np.float64)
    elif material.pattern == "noise":
        m = _value_noise(p / s + (material.seed % 997) * 0.137, material.seed)
    elif material.pattern == "plain":
        m = np.zeros(len(p))
    else:
        raise ValueError(f"unknown pattern {material.pattern!r}")
    return c1 * (1.0 - m[:, None]) + c2 * m[:, None]


# ---------------------------------------------------------------- labels


def compute_edges(semseg: np.ndarray, depth: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """Thin (1-pixel) edge map, uint8 in {0, 1}, 255 where the pixel is invalid (``instance < 0``).

    Between two 4-neighbours, a boundary is a change of semantic class, or an occlusion: the pixels lie on
    different objects and their z-depths differ by more than :data:`EDGE_DEPTH_JUMP` (relative to the nearer).
    The room is one surface (seen from inside it never occludes itself; its creases are not edges).
    Of the two pixels of a boundary, the nearer one (the occluding side) is marked, so edges are one pixel
    thick. A valid pixel next to an invalid one (a wall's top against escaping rays) is an edge as well.
    """
    valid = instance >= 0
    edge = np.zeros(semseg.shape, dtype=bool)
    for axis in (0, 1):
        sl_a = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
        sl_b = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
        va, vb = valid[sl_a], valid[sl_b]
        da, db = depth[sl_a], depth[sl_b]
        ia, ib = instance[sl_a], instance[sl_b]
        jump = np.abs(da - db) > EDGE_DEPTH_JUMP * np.minimum(da, db)
        occl = (ia != ib) & (ia > 0) & (ib > 0) & jump
        boundary = va & vb & ((semseg[sl_a] != semseg[sl_b]) | occl)
        a_near = da <= db
        edge[sl_a] |= (boundary & a_near) | (va & ~vb)
        edge[sl_b] |= (boundary & ~a_near) | (vb & ~va)
    out = edge.astype(np.uint8)
    out[~valid] = IGNORE
    return out


# ---------------------------------------------------------------- the renderer


def render_scene(scene: Scene, size: int | tuple[int, int] = 64) -> dict[str, np.ndarray]:
    """Ray-cast ``scene`` at ``size`` (int or (H, W)); returns the image and every label (see module doc)."""
    h, w = image_hw(size)
    o, d, basis = camera_rays(scene.camera, h, w)
    npx = h * w

    t, n_world, surface = _hit_room(scene, o, d)
    inst = np.where(surface >= 0, 0, -1)
    dd = _dot(d, d)
    for k, obj in enumerate(scene.objects):
        idx, tk, nk = _intersect_sparse(obj, o, d, dd)
        closer = tk < t[idx]
        sel = idx[closer]
        t[sel], n_world[sel], inst[sel] = tk[closer], nk[closer], k + 1
    valid = np.isfinite(t)
    tv = np.where(valid, t, 0.0)
    # orient normals towards the camera (objects are hit from outside, the room from inside: a safeguard)
    flip = _dot(n_world, d) > 0
    n_world = np.where(flip[:, None], -n_world, n_world)
    n_world /= np.linalg.norm(n_world, axis=1, keepdims=True) + 1e-12
    hit = o + tv[:, None] * d

    # labels
    room_class = np.array([0, 1, 1, 1, 1, 2])  # by surface id
    obj_class = np.array([0] + [OBJECT_CLASS[ob.kind] for ob in scene.objects])
    semseg = np.where(inst > 0, obj_class[np.maximum(inst, 0)], room_class[np.clip(surface, 0, 5)])
    semseg = np.where(valid, semseg, IGNORE).astype(np.uint8)
    nz = n_world[:, 2]
    parts = np.where(nz > PART_Z_THRESHOLD, 1, np.where(nz < -PART_Z_THRESHOLD, 3, 2))
    parts = np.where(inst > 0, parts, 0)
    parts = np.where(valid, parts, IGNORE).astype(np.uint8)
    saliency = np.where(valid, (inst > 0).astype(np.uint8), IGNORE).astype(np.uint8)
    normals = np.where(valid[:, None], n_world @ basis, 0.0)
    depth = tv.astype(np.float32)

    # appearance: albedo per surface (pixels grouped by surface with one sort), Lambert + ambient,
    # hard shadows cast by the objects (the room casts none: the light comes in as through a skylight)
    key = np.where(inst > 0, 5 + inst, surface)  # room surfaces 0-5, object k at 6 + k, -1 escaped
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange(-1, 7 + len(scene.objects)))
    room_mats = [scene.room.floor, *scene.room.walls, scene.room.ceiling_material]
    albedo = np.zeros((npx, 3))
    for sid in range(6 + len(scene.objects)):
        pix = order[bounds[sid + 1] : bounds[sid + 2]]
        if len(pix) == 0:
            continue
        if sid < 6:
            albedo[pix] = texture(room_mats[sid], hit[pix])
        else:
            obj = scene.objects[sid - 6]
            local = _rot_z(hit[pix] - np.array([obj.x, obj.y, 0.0]), -obj.yaw)
            albedo[pix] = texture(obj.material, local)
    light = scene.light
    ldir = light.direction()
    lambert = np.clip(n_world @ ldir, 0.0, None)
    if light.shadows and scene.objects:
        idx = np.flatnonzero(valid & (lambert > 0))
        if len(idx):
            blocked = _shadowed(scene.objects, hit[idx] + 1e-3 * n_world[idx], ldir)
            lambert[idx[blocked]] = 0.0
    shade = light.ambient + light.intensity * lambert
    rgb = albedo * shade[:, None] * np.asarray(light.color)
    if not valid.all():  # sky: a vertical gradient where rays escape
        esc = np.flatnonzero(~valid)
        up = np.clip(d[esc, 2] / np.linalg.norm(d[esc], axis=1), 0, 1)
        rgb[esc] = np.asarray(scene.sky) * (0.75 + 0.25 * up)[:, None]
    if scene.exposure is not None:  # auto-exposure: mean intensity -> scene.exposure
        rgb *= float(np.clip(scene.exposure / max(rgb.mean(), 1e-6), 0.5, 3.0))
    if scene.sensor_noise > 0:
        noise = np.random.default_rng(scene.seed).standard_normal(rgb.shape, dtype=np.float32)
        rgb += scene.sensor_noise * noise
    image = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)

    semseg = semseg.reshape(h, w)
    inst = inst.reshape(h, w).astype(np.int16)
    return {
        "image": image.reshape(h, w, 3),
        "depth": depth.reshape(h, w),
        "normals": normals.astype(np.float32).reshape(h, w, 3),
        "semseg": semseg,
        "parts": parts.reshape(h, w),
        "saliency": saliency.reshape(h, w),
        "edge": compute_edges(semseg, depth.reshape(h, w), inst),
        "instance": inst,
    }
