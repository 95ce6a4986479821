"""Model-backed annotators (depth, pose), a safety checker and prompt expansion.

Unlike the rest of ``preprocessors`` these modules run torch models. Each loads from a local folder only
(``load_*(folder, device)``) and works on uint8 numpy frames (F, H, W, 3). `catalog.py` describes every
model once (folder, source, tiny stand-in, loader); the worker reaches them through `registry.py` (lazy
loading, caching, tiny mode); `download.py` fetches the real weights. Import the submodule you need
(importing this package loads no model library).
"""
