"""Media preprocessing for the VACE server: decode, resample, resize, build masks and conditioning, encode.

Pure array code (NumPy, OpenCV, PyAV, Pillow). Nothing here knows about HTTP, jobs or torch.
"""
