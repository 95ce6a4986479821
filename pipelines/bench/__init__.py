"""`vace bench` / `python -m pipelines.bench`: the full-size 14B VACE model, random weights, timed on a GPU.

Speed does not depend on weight values, so no checkpoint is needed: the transformer is built from the real
config (pipelines/configs.py) directly on the GPU in bf16. Phases run most valuable first under a time
budget; each is skipped when its estimate would pass the budget, and an exception (OOM included) is recorded
without stopping the next one. The JSON result is rewritten after every phase. `--tiny` runs the same code
on a toy-sized model on the CPU in seconds (tests/pipelines/test_bench.py).

The import chain needs only torch and diffusers (with transformers for the tiny text encoder that the
memory-plan phase's pipeline needs): the GPU machines run it from the source tree without installing the
project.
"""
