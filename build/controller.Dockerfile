# The controller image (config/manager): the control plane's Kubernetes composition root with the
# fast-path API on port 7070. Built by scripts/build-images.sh from the repository root:
#   buildah bud --isolation chroot --build-arg BASE_IMAGE=... -f build/controller.Dockerfile .
# BASE_IMAGE: a Debian image with Node.js 20.19+ and npm (the official node:20-bookworm-slim or one
# built locally); the build needs the npm registry and a Debian mirror.
ARG BASE_IMAGE=docker.io/library/node:20-bookworm-slim

# Build stage: the same for the three images, so buildah --layers reuses it between them.
FROM ${BASE_IMAGE} AS build
# better-sqlite3 compiles when no prebuilt binary fits; gcc and libc6-dev also build the static helper.
RUN apt-get update \
  && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates python3 make g++ gcc libc6-dev \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Extra CA certificates for npm behind a TLS-inspecting proxy (scripts/build-images.sh --ca-file);
# an ARG, so it reaches this stage's RUN steps only.
ARG NODE_EXTRA_CA_CERTS
# Dependencies first: this layer is reused until a package.json or the lock file changes.
COPY package.json package-lock.json .npmrc ./
COPY packages/api/package.json packages/api/
COPY packages/agent/package.json packages/agent/
COPY packages/janitor/package.json packages/janitor/
COPY packages/controlplane/package.json packages/controlplane/
COPY packages/sdk/package.json packages/sdk/
COPY packages/cli/package.json packages/cli/
# Native modules compile against the base image's Node.js headers when it has them (node-gyp
# would otherwise download them).
RUN nodedir="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")" \
  && if [ -f "$nodedir/include/node/node.h" ]; then export npm_config_nodedir="$nodedir"; fi \
  && npm ci --no-audit --no-fund
COPY tsconfig.base.json tsconfig.json ./
COPY packages packages
COPY scripts/build-helper.sh scripts/
# One build for the three images, the same instructions in each Dockerfile, so that buildah --layers
# runs it once for all three: the static in-sandbox helper (the agent image's), the packages the
# controller needs (api, agent, janitor, sdk and controlplane: the others' too), the production
# dependencies. Sources are removed once built; so is the in-sandbox daemon's Go module but for its
# version (the controller's E2B API reports it), as the agent's final stage copies its binary from
# the build context to /opt/fast-sandbox/bin.
RUN bash scripts/build-helper.sh \
  && npx tsc -b packages/controlplane \
  && npm prune --omit=dev --no-audit --no-fund \
  && find packages -mindepth 2 -maxdepth 2 -name src -prune -exec rm -rf {} + \
  && find packages/envd -mindepth 1 -maxdepth 1 ! -name version.json -exec rm -rf {} +

FROM ${BASE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json /app/package.json
COPY --from=build /app/node_modules /app/node_modules
COPY --from=build /app/packages /app/packages
# The Deployment runs it as uid 1000 with a read-only root filesystem.
USER 1000:1000
EXPOSE 7070
# The Kubernetes mode's entry point (issue 7); the path follows where that composition root lands.
# The control plane's environment and Node.js flags (CONTROL_PLANE_ENV and CONTROL_PLANE_NODE_FLAGS in
# packages/controlplane/src/control-plane-process.ts).
ENV MALLOC_ARENA_MAX=2
ENTRYPOINT ["node", "--max-semi-space-size=4", "--enable-source-maps", "/app/packages/controlplane/dist/kubernetes/main.js"]
