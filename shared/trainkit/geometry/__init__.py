"""Geometry of boxes and windows, in numpy: one IoU, the window a sample decodes (crop, flip, an
object's box), tiles and their targets, and a tiled image's detections merged back. The lowest
layer: the tasks, the loader and inference all lean on it."""
