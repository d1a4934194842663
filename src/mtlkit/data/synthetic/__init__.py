"""Procedural ray-cast multi-task scenes (presets ``synthetic-nyud`` and ``synthetic-pascal``).

A pinhole camera in a box room (floor, four walls, a ceiling in half the rooms) looks at 2-6 objects
(spheres, yawed or axis-aligned boxes, cylinders, cones) standing on the floor. Materials (stripes, checker,
value noise or plain, random hues) are drawn independently of the class; lighting is ambient plus one
directional light with hard shadows; the image gets auto-exposure and Gaussian sensor noise. Every label
comes from the same ray hits:

- semseg: :data:`CLASS_NAMES` = 0 floor, 1 wall, 2 ceiling, 3 sphere, 4 box, 5 cylinder, 6 cone.
- parts: :data:`PART_NAMES` = 0 background (room), 1 top, 2 side, 3 bottom (object faces by world normal
  n_z > 0.7 / between / < -0.7; bottom faces are rare).
- saliency: 1 on objects, 0 on the room.
- depth: z-depth along the optical axis in metres (not ray length).
- normals: unit, camera frame (x right, y down, z forward), facing the camera.
- edge: 1-pixel boundaries where the class changes or where two objects overlap with a relative depth jump
  over :data:`EDGE_DEPTH_JUMP` (2%); marked on the nearer (occluding) pixel.
- 255 (0 for depth, all-zero for normals) where a ray escapes over the walls of a room without a ceiling.

``render_scene(scene, size)`` renders an explicit :class:`Scene`; ``sample_scene(rng)`` draws a random one.
"""

from mtlkit.data._registry import DATASETS
from mtlkit.data.synthetic._dataset import (
    ALL_TASKS,
    DEFAULT_SIZES,
    PRESETS,
    SyntheticDataset,
    build_synthetic,
    make_builder,
)
from mtlkit.data.synthetic._generate import GENERATOR_VERSION, default_cache_dir
from mtlkit.data.synthetic._preview import preview
from mtlkit.data.synthetic._render import (
    EDGE_DEPTH_JUMP,
    camera_basis,
    camera_rays,
    compute_edges,
    render_scene,
)
from mtlkit.data.synthetic._scene import (
    CLASS_NAMES,
    NUM_CLASSES,
    NUM_PARTS,
    OBJECT_CLASSES,
    PART_NAMES,
    Camera,
    Light,
    Material,
    Room,
    Scene,
    SceneObject,
    sample_scene,
)

for _name in PRESETS:
    DATASETS.register(_name, make_builder(_name))

__all__ = [
    "ALL_TASKS",
    "CLASS_NAMES",
    "DEFAULT_SIZES",
    "EDGE_DEPTH_JUMP",
    "GENERATOR_VERSION",
    "NUM_CLASSES",
    "NUM_PARTS",
    "OBJECT_CLASSES",
    "PART_NAMES",
    "PRESETS",
    "Camera",
    "Light",
    "Material",
    "Room",
    "Scene",
    "SceneObject",
    "SyntheticDataset",
    "build_synthetic",
    "camera_basis",
    "camera_rays",
    "compute_edges",
    "default_cache_dir",
    "preview",
    "render_scene",
    "sample_scene",
]
