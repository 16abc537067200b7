# One image for every getOperate service; compose.yaml picks the command (config, router, worker).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY cli ./cli
RUN pip install --no-cache-dir . && useradd --create-home getoperate
USER getoperate
ENV HTTP_HOST=0.0.0.0 GETOPERATE_DATA_DIR=/data
ENTRYPOINT ["getoperate"]
CMD ["--help"]
