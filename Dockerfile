# syntax=docker/dockerfile:1
# Ray Estate image: the official Ray image (same Ray and Python as the project) with the
# project installed. One image runs the Ray head/workers (RayService, RayJob, RayCluster),
# the RayJob submitter and the Streamlit UI.
#
#   docker build -t ghcr.io/<owner>/rayestate:$(git rev-parse HEAD) .
#
# Versions are pinned: the base image by tag (bump RAY_VERSION together with pyproject.toml),
# Python packages by docker/constraints.txt (generated from the tested environment with
# `python scripts/freeze_constraints.py`; a test checks it against pyproject.toml).
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311

# --- build: only the project's own wheel; no sources or build tools reach the runtime ---
FROM ${RAY_IMAGE} AS build
# Created by the image's user (WORKDIR alone would create it root-owned and pip could not build).
RUN mkdir -p /home/ray/src
WORKDIR /home/ray/src
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 rayestate ./rayestate
COPY --chown=1000:100 ray_jobs ./ray_jobs
COPY --chown=1000:100 serve_app ./serve_app
COPY --chown=1000:100 ui ./ui
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /home/ray/wheels .

# --- runtime -------------------------------------------------------------------------------
FROM ${RAY_IMAGE} AS runtime
COPY --chown=1000:100 docker/constraints.txt /home/ray/constraints.txt
COPY --from=build --chown=1000:100 /home/ray/wheels /home/ray/wheels
RUN pip install --no-cache-dir --constraint /home/ray/constraints.txt /home/ray/wheels/*.whl \
    && rm -rf /home/ray/wheels
# `streamlit run` needs the UI as a file path.
COPY --chown=0:0 ui /app/ui
# The base image's user: uid 1000 (ray), gid 100 (users). Kubernetes runs it with a
# read-only root filesystem and an emptyDir on /tmp.
USER 1000:100
WORKDIR /home/ray
ENV PYTHONUNBUFFERED=1
