# The wapipe image: one image, every service (`wapipe ingest`, `wapipe topics create`,
# and the processors as they land); the command picks the service.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY wapipe ./wapipe
COPY ingest ./ingest
COPY processors ./processors
COPY schemas ./schemas
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --uid 10001 --home-dir /var/lib/wapipe --create-home wapipe
USER wapipe
# The spool must outlive the container: mount a volume here (compose does).
ENV WAPIPE_SPOOL_DIR=/var/lib/wapipe/spool WAPIPE_HOME=/var/lib/wapipe
EXPOSE 8080
ENTRYPOINT ["wapipe"]
CMD ["--help"]
