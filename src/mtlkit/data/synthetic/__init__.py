"""Procedural ray-cast multi-task scenes (presets ``synthetic-nyud`` and ``synthetic-pascal``)."""
