# GPU image: CUDA + PyTorch from the official image, the server on top. Weights are mounted, never baked in.
FROM pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/weights/.hf-cache

WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY pipelines ./pipelines
COPY preprocessors ./preprocessors
# torch comes from the base image (its version satisfies pyproject's range, so pip keeps it).
# DWPose runs on onnxruntime: the GPU build replaces the CPU one (both provide the same module, so the CPU
# package would shadow it and pose detection would fall back to the CPU with a warning).
# The [postgres,s3] extras: the same image runs API replicas and `vace worker` boxes past one machine.
# torchao (--fp8) comes with the project; its 0.18 release is built for torch >= 2.11. If it does not import
# with the base image's torch, it is removed so that diffusers (which imports it when present) still loads,
# and the worker reports FP8 as unavailable ("package torchao is not installed") instead of failing.
RUN pip install '.[postgres,s3]' \
 && pip uninstall -y onnxruntime \
 && pip install "onnxruntime-gpu>=1.20,<2" \
 && (python -c "from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow; \
from diffusers import WanVACEPipeline" || pip uninstall -y torchao)

VOLUME ["/weights", "/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s CMD \
    python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
ENTRYPOINT ["vace", "serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
CMD ["--model", "/weights/Wan2.1-VACE-14B-diffusers"]
