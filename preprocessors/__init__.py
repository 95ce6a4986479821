"""Media preprocessing for the VACE server: decode, resample, resize, build masks and conditioning, encode.

The modules at this level are pure array code (NumPy, OpenCV, PyAV, Pillow) and load no torch; the models
live in `annotators/` (depth, pose, safety, prompt expansion) and `interpolation/` (RIFE, FILM). Nothing here
knows about HTTP, jobs, the diffusers pipeline or the server (tests/preprocessors/test_import_rules.py).
"""
