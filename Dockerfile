# Leadstream: one image for `leadstream serve` and `leadstream worker`.
# compose.yaml runs it as two app instances and a worker behind nginx.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LEADSTREAM_DATA_DIR=/data

WORKDIR /src
# The repository root is the `leadstream` package (see pyproject.toml).
COPY . /src
RUN pip install ".[mongodb]" \
    && useradd --system --home-dir /data --create-home leadstream

USER leadstream
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"
CMD ["leadstream", "serve", "--host", "0.0.0.0", "--port", "8000"]
