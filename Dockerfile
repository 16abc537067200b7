# One image for every getOperate service; compose.yaml picks the command (config, router, worker).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY cli ./cli
RUN pip install --no-cache-dir . && useradd --create-home --uid 1000 getoperate \
    && mkdir -p /data && chown getoperate:getoperate /data && chmod 700 /data
# /data exists, belongs to the service user and is private to it (it holds the config log: group
# env values, init scripts), so a fresh named volume mounted there (Compose copies the image's
# ownership and mode into it) is writable for the SQLite log and readable by nobody else.
USER getoperate
ENV HTTP_HOST=0.0.0.0 GETOPERATE_DATA_DIR=/data
ENTRYPOINT ["getoperate"]
CMD ["--help"]
