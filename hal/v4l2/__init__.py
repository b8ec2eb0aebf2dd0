"""Laptop camera backend: a V4L2 webcam through PyAV (for simulated buttons on laptops)."""

from pinkbutton.hal.v4l2.camera import V4l2Camera

__all__ = ["V4l2Camera"]
