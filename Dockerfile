# entgate's container image: `docker build -t entgate .` (docs/operations.md, "Containers").
# Two stages: the build (dev dependencies, tsc) and the runtime (production dependencies and
# the compiled JavaScript only, as a user that is not root).

FROM node:20-bookworm-slim AS build
WORKDIR /app
# Dependencies first, so that a change to the sources reuses this layer. --ignore-scripts:
# prepare (the build) runs below, once the sources are here.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY config ./config
COPY migrations ./migrations
RUN npm run build

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/var/lib/entgate
WORKDIR /app
# Production dependencies only; no lifecycle scripts (entgate's prepare needs the dev ones,
# and its dependencies need none).
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
    && npm cache clean --force
# The build and the one file the server reads from the package (served at /openapi.json).
# Owned by root: the service can read its code, not change it.
COPY --from=build /app/dist ./dist
COPY docs/openapi.yaml ./docs/openapi.yaml
# `entgate` on the PATH, for `docker exec <container> entgate vkey list` and the like. The
# embedded database's directory belongs to the service's user.
RUN ln -s /app/dist/src/cli/main.js /usr/local/bin/entgate \
    && mkdir -p /var/lib/entgate \
    && chown node:node /var/lib/entgate
# The embedded database (PGlite), when DATABASE_URL is not set. Unused with DATABASE_URL.
VOLUME ["/var/lib/entgate"]
USER node
EXPOSE 8080
# Readiness: the database answers and its schema is current. The image has no curl: node asks.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/readyz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))"]
# Exec form: node is PID 1 and gets SIGTERM itself (entgate drains, then exits 0; give it
# ENTGATE_SHUTDOWN_TIMEOUT_MS + 2 s: `docker stop -t 15`, compose's stop_grace_period).
CMD ["node", "dist/src/cli/main.js", "serve"]
