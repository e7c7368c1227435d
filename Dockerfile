# syntax=docker/dockerfile:1
# trainwatch: watchdog + Prometheus exporter for ML training runs.
#
#   docker build -t trainwatch .
#   docker run -d --name trainwatch -p 9465:9465 -v /path/to/runs:/runs trainwatch
#
# Every run is a sub-directory of /runs. trainwatch writes .anomaly_type/.HALT into
# them, so the mount must be writable by uid 1000 (the image's `node` user), or pass
# `--user $(id -u):$(id -g)`. Flags after the image name replace the default
# `--root /runs`; see `docker run --rm trainwatch --help` and docs/deploy.md.
# `docker run --rm trainwatch demo` shows a simulated trainer diverge and get halted.
# test/packaging.test.ts replays the steps below without Docker and checks this file.

# ---- build: compile the TypeScript (dev dependencies stay in this stage) ----
FROM node:24-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npx tsc -p tsconfig.json

# ---- runtime: production dependencies, compiled JS, rules and dashboards ----
FROM node:24-slim
# tini as PID 1: forwards SIGTERM to node and reaps zombies, so no `docker run --init` is needed.
# python3 runs the simulated trainer of `docker run --rm trainwatch demo`.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini python3 \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` runs tsc, which is a dev dependency; dist/ comes from the build stage.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist/src ./dist/src
COPY bin ./bin
COPY scripts/sim_trainer.py ./scripts/
COPY alerts ./alerts
COPY grafana ./grafana
# Served read-only at /docs/<name>: the alert rules' runbook_url links point at /docs/runbook.
COPY docs ./docs
# A fresh named volume takes the owner of the image's directory: make /runs writable for `node`.
RUN mkdir -p /runs && chown node:node /runs
USER node
EXPOSE 9465
VOLUME /runs
# No curl in the slim image: node's own fetch. /healthz answers 200 as soon as the server listens.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9465/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/bin/trainwatch.js"]
CMD ["--root", "/runs"]
