# optbench in a container. The default build is CPU-only; for NVIDIA GPUs pass the CUDA wheel index:
#   docker build -t optbench .
#   docker build -t optbench:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#   docker run --rm -v "$PWD/results:/work/results" optbench run --problem saddle --opt adam,sgd-momentum
#   docker run --rm --gpus all optbench:cuda run --problem rosenbrock --opt adam --device cuda
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg

# ffmpeg for MP4 animations (GIFs need only Pillow); the distribution's current build is fine
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

# torch first, from the chosen index, so the optbench install below keeps that build
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /opt/optbench
COPY pyproject.toml README.md ./
COPY optbench ./optbench
COPY problems ./problems
RUN pip install .

WORKDIR /work
ENTRYPOINT ["optbench"]
CMD ["--help"]
