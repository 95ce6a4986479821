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
RUN pip install '.[postgres,s3]' \
 && pip uninstall -y onnxruntime \
 && pip install "onnxruntime-gpu>=1.20,<2"

VOLUME ["/weights", "/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s CMD \
    python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
ENTRYPOINT ["vace", "serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
CMD ["--model", "/weights/Wan2.1-VACE-14B-diffusers"]
