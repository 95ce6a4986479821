"""Frame interpolation (FILM, RIFE) behind one API: `Interpolator.interpolate(frames, factor)`."""
