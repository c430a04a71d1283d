# syntax=docker/dockerfile:1
# batchline image, two variants from one file (the ModelServer manifests reference both):
#   docker build -t batchline:0.1.0 .                        CPU (default target)
#   docker build --target gpu -t batchline:0.1.0-gpu .       CUDA 12 + cuDNN 9 for the gpu pool
# Both run `node cli/main.ts` as uid 10001 on Node's own TypeScript type stripping; no
# build step. The models in models/ are baked in at /app/models (the working directory,
# so the default models.repository finds them). .dockerignore keeps node_modules and
# tests out of the context.

ARG NODE_IMAGE=node:24-slim
# onnxruntime-node's CUDA execution provider is built for CUDA 12 and cuDNN 9.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${NODE_IMAGE} AS node

# Production dependencies only. The `node` devDependency (the runtime the repo pins for
# development) is left out: the image's node runs the server. Install scripts are
# skipped: onnxruntime-node ships its CPU binaries in the package, and msgpackr's native
# part comes as a prebuilt optional package (or falls back to JavaScript).
FROM node AS deps
WORKDIR /app
ENV ONNXRUNTIME_NODE_INSTALL=skip
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# The CUDA provider libraries are too large for the npm package; onnxruntime-node's
# install script fetches the ones matching its version.
FROM deps AS deps-gpu
ENV ONNXRUNTIME_NODE_INSTALL=cuda12
RUN node node_modules/onnxruntime-node/script/install.js \
 && test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so

FROM ${CUDA_IMAGE} AS gpu
COPY --from=node /usr/local/bin/node /usr/local/bin/node
RUN groupadd --system --gid 10001 batchline \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin batchline
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps-gpu /app/node_modules ./node_modules
# Owned by root and not writable by the app: the pods also mount the root read-only.
COPY . .
USER 10001:10001
EXPOSE 4000 4001 9464
ENTRYPOINT ["node", "cli/main.ts"]
CMD ["worker", "--pool", "gpu"]

FROM node AS cpu
RUN groupadd --system --gid 10001 batchline \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin batchline
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules ./node_modules
COPY . .
USER 10001:10001
EXPOSE 4000 4001 9464
ENTRYPOINT ["node", "cli/main.ts"]
CMD ["serve"]
