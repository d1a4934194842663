"""Scene descriptions (plain dataclasses) and the random scene sampler.

World frame: metres, z up, floor at z = 0. The room spans ``[-sx/2, sx/2] x [-sy/2, sy/2] x [0, height]``.
Angles in a scene description are in degrees. Camera yaw 0 looks along +x, yaw 90 along +y;
negative pitch looks down. Objects stand on the floor at ``(x, y)`` (their footprint centre).
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np

#: semantic classes, index = label value
CLASS_NAMES = ("floor", "wall", "ceiling", "sphere", "box", "cylinder", "cone")
NUM_CLASSES = len(CLASS_NAMES)
ROOM_CLASSES = (0, 1, 2)
OBJECT_KINDS = ("sphere", "box", "cylinder", "cone")
#: semantic label of each object kind
OBJECT_CLASS = {kind: CLASS_NAMES.index(kind) for kind in OBJECT_KINDS}
OBJECT_CLASSES = tuple(OBJECT_CLASS.values())
#: object part labels (by the world-frame normal; the room is background)
PART_NAMES = ("background", "top", "side", "bottom")
NUM_PARTS = len(PART_NAMES)
#: a face is "top" when its world normal has n_z > PART_Z_THRESHOLD, "bottom" when n_z < -PART_Z_THRESHOLD
PART_Z_THRESHOLD = 0.7
PATTERNS = ("plain", "stripes", "checker", "noise")


@dataclass
class Material:
    """Procedural solid texture: ``color`` and ``color2`` (linear RGB in [0, 1]) mixed by ``pattern``.

    Patterns are evaluated on the 3-D hit point (object-local for objects, world for the room):
    ``stripes`` (period ``scale`` metres along ``direction``), ``checker`` (cells of ``scale``),
    ``noise`` (value noise of feature size ``scale``, lattice from ``seed``), ``plain`` (``color`` only).
    """

    pattern: str = "plain"
    color: tuple[float, float, float] = (0.6, 0.6, 0.6)
    color2: tuple[float, float, float] = (0.3, 0.3, 0.3)
    scale: float = 0.5
    direction: tuple[float, float, float] = (1.0, 0.0, 0.0)
    seed: int = 0


@dataclass
class Room:
    """Box room: floor ``size = (sx, sy)`` metres centred on the origin, walls ``height`` tall.

    Without a ceiling, rays that leave over the walls escape (labels ignored, depth 0).
    """

    size: tuple[float, float] = (6.0, 6.0)
    height: float = 3.0
    ceiling: bool = True
    floor: Material = field(default_factory=Material)
    walls: tuple[Material, Material, Material, Material] = field(
        default_factory=lambda: (Material(), Material(), Material(), Material())
    )  # x-, x+, y-, y+
    ceiling_material: Material = field(default_factory=Material)


@dataclass
class SceneObject:
    """An object standing on the floor.

    ``sphere``: ``radius`` (centre at z = radius). ``box``: ``half_size = (hx, hy)`` and ``height``, rotated
    by ``yaw`` about z. ``cylinder``: ``radius``, ``height``. ``cone``: base ``radius``, apex at ``height``.
    """

    kind: str
    x: float
    y: float
    radius: float = 0.5
    height: float = 1.0
    half_size: tuple[float, float] = (0.5, 0.5)
    yaw: float = 0.0
    material: Material = field(default_factory=Material)

    def footprint_radius(self) -> float:
        if self.kind == "box":
            return math.hypot(*self.half_size)
        return self.radius


@dataclass
class Camera:
    """Pinhole camera at ``position`` (world); ``yaw``, ``pitch``, horizontal view angle ``hfov`` in degrees.

    Camera frame (OpenCV): x right, y down, z forward along the optical axis. Square pixels.
    """

    position: tuple[float, float, float] = (0.0, 0.0, 1.5)
    yaw: float = 0.0
    pitch: float = 0.0
    hfov: float = 60.0


@dataclass
class Light:
    """Directional light from ``azimuth`` / ``elevation`` (degrees) plus ambient light."""

    azimuth: float = 45.0
    elevation: float = 60.0
    intensity: float = 0.8
    ambient: float = 0.3
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    shadows: bool = True

    def direction(self) -> np.ndarray:
        """Unit vector pointing from the scene towards the light."""
        az, el = math.radians(self.azimuth), math.radians(self.elevation)
        return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


@dataclass
class Scene:
    """Everything :func:`render_scene` needs; rendering is a pure function of the scene and the image size."""

    room: Room = field(default_factory=Room)
    camera: Camera = field(default_factory=Camera)
    objects: list[SceneObject] = field(default_factory=list)
    light: Light = field(default_factory=Light)
    sky: tuple[float, float, float] = (0.55, 0.7, 0.9)
    #: auto-exposure: scale the image so its mean intensity (in [0, 1]) is this (gain clamped to [0.5, 3]);
    #: None keeps the raw shading
    exposure: float | None = None
    #: std of the Gaussian sensor noise added to the image (in [0, 1] units), after exposure
    sensor_noise: float = 0.0
    #: seed of the sensor noise
    seed: int = 0


#: ranges of the random scene sampler (part of the cache key: change a value and the cache is rebuilt)
SCENE_CONFIG: dict[str, object] = {
    "room_size": (4.0, 8.0),
    "wall_height": (2.5, 3.2),
    "ceiling_prob": 0.5,
    "num_objects": (2, 6),
    "camera_height": (0.8, 2.0),
    "camera_pitch": (-40.0, -10.0),
    "camera_yaw_jitter": 45.0,
    "camera_hfov": (50.0, 70.0),
    "camera_margin": 0.4,
    "object_distance": (1.2, 5.0),
    "object_gap": 0.1,
    "sphere_radius": (0.2, 0.55),
    "box_half": (0.15, 0.6),
    "box_height": (0.3, 1.3),
    "axis_aligned_box_prob": 0.3,
    "cylinder_radius": (0.15, 0.5),
    "cylinder_height": (0.3, 1.5),
    "cone_radius": (0.2, 0.6),
    "cone_height_ratio": (1.0, 2.5),
    "texture_scale": (0.1, 0.8),
    "light_elevation": (35.0, 80.0),
    "light_intensity": (0.5, 0.9),
    "ambient": (0.15, 0.45),
    "exposure": (0.35, 0.55),
    "sensor_noise": (0.005, 0.03),
}


def _uniform(rng: np.random.Generator, key: str) -> float:
    lo, hi = SCENE_CONFIG[key]  # type: ignore[misc]
    return lo + (hi - lo) * float(rng.random())


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    """Colour from uniform draws in [0, 1): any hue, saturation 0.15-0.9, value 0.3-0.95."""
    return colorsys.hsv_to_rgb(h, 0.15 + 0.75 * s, 0.3 + 0.65 * v)


def sample_material(rng: np.random.Generator) -> Material:
    """A random material, from the same distribution for every class (appearance never tells the label)."""
    u = rng.random(9).tolist()
    color = _hsv(u[0], u[1], u[2])
    if u[3] < 0.5:  # a shade of the same hue
        shade = 0.35 + 0.4 * u[4]
        color2 = (color[0] * shade, color[1] * shade, color[2] * shade)
    else:
        color2 = _hsv(u[4], u[5], u[6])
    dx, dy, dz = rng.normal(size=3).tolist()
    norm = math.sqrt(dx * dx + dy * dy + dz * dz) + 1e-12
    lo, hi = SCENE_CONFIG["texture_scale"]  # type: ignore[misc]
    return Material(
        pattern=PATTERNS[int(u[7] * len(PATTERNS))],
        color=color,
        color2=color2,
        scale=lo + (hi - lo) * u[8],
        direction=(dx / norm, dy / norm, dz / norm),
        seed=int(rng.integers(2**31)),
    )


def _sample_shape(rng: np.random.Generator, kind: str, x: float, y: float) -> SceneObject:
    """An object of random size and yaw (plain material) at (x, y)."""
    if kind == "sphere":
        return SceneObject(kind, x, y, radius=_uniform(rng, "sphere_radius"))
    if kind == "box":
        yaw = 0.0 if rng.random() < SCENE_CONFIG["axis_aligned_box_prob"] else 90.0 * float(rng.random())
        half = (_uniform(rng, "box_half"), _uniform(rng, "box_half"))
        return SceneObject(kind, x, y, half_size=half, height=_uniform(rng, "box_height"), yaw=yaw)
    if kind == "cylinder":
        r = _uniform(rng, "cylinder_radius")
        return SceneObject(kind, x, y, radius=r, height=_uniform(rng, "cylinder_height"))
    r = _uniform(rng, "cone_radius")
    return SceneObject(kind, x, y, radius=r, height=r * _uniform(rng, "cone_height_ratio"))


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random room, camera, light and 2-6 objects placed on the floor in front of the camera."""
    sx, sy = _uniform(rng, "room_size"), _uniform(rng, "room_size")
    room = Room(
        size=(sx, sy),
        height=_uniform(rng, "wall_height"),
        ceiling=bool(rng.uniform() < SCENE_CONFIG["ceiling_prob"]),
        floor=sample_material(rng),
        walls=tuple(sample_material(rng) for _ in range(4)),  # type: ignore[arg-type]
        ceiling_material=sample_material(rng),
    )
    m = float(SCENE_CONFIG["camera_margin"])  # type: ignore[arg-type]
    cx, cy = float(rng.uniform(-sx / 2 + m, sx / 2 - m)), float(rng.uniform(-sy / 2 + m, sy / 2 - m))
    # look roughly towards the room centre, so most of the view is the room's interior
    toward = math.degrees(math.atan2(-cy, -cx)) if math.hypot(cx, cy) > 0.3 else float(rng.uniform(0, 360))
    jitter = float(SCENE_CONFIG["camera_yaw_jitter"])  # type: ignore[arg-type]
    camera = Camera(
        position=(cx, cy, _uniform(rng, "camera_height")),
        yaw=toward + float(rng.uniform(-jitter, jitter)),
        pitch=_uniform(rng, "camera_pitch"),
        hfov=_uniform(rng, "camera_hfov"),
    )
    lo, hi = SCENE_CONFIG["num_objects"]  # type: ignore[misc]
    n_objects = int(rng.integers(lo, hi + 1))
    gap = float(SCENE_CONFIG["object_gap"])  # type: ignore[arg-type]
    objects: list[SceneObject] = []
    for _ in range(n_objects):
        kind = OBJECT_KINDS[int(rng.integers(len(OBJECT_KINDS)))]
        for _attempt in range(30):
            dist = _uniform(rng, "object_distance")
            ang = math.radians(camera.yaw + (0.9 * float(rng.random()) - 0.45) * camera.hfov)
            x, y = cx + dist * math.cos(ang), cy + dist * math.sin(ang)
            obj = _sample_shape(rng, kind, x, y)
            r = obj.footprint_radius()
            inside = abs(x) + r + gap < sx / 2 and abs(y) + r + gap < sy / 2
            clear_cam = math.hypot(x - cx, y - cy) > r + 0.5
            clear = all(math.hypot(x - o.x, y - o.y) > r + o.footprint_radius() + gap for o in objects)
            if inside and clear_cam and clear:
                obj.material = sample_material(rng)
                objects.append(obj)
                break
    light = Light(
        azimuth=float(rng.uniform(0, 360)),
        elevation=_uniform(rng, "light_elevation"),
        intensity=_uniform(rng, "light_intensity"),
        ambient=_uniform(rng, "ambient"),
        color=tuple(float(c) for c in 1.0 - rng.uniform(0, 0.15, size=3)),  # type: ignore[arg-type]
    )
    return Scene(
        room=room,
        camera=camera,
        objects=objects,
        light=light,
        sky=_hsv(*rng.random(3).tolist()),
        exposure=_uniform(rng, "exposure"),
        sensor_noise=_uniform(rng, "sensor_noise"),
        seed=int(rng.integers(2**31)),
    )
