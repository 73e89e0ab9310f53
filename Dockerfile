# consul-lb: the proxy, registrator and nginx emitter in one image.
FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:24-slim
ENV NODE_ENV=production
# bin/consul-lb starts dist/cli.js with the V8 options the proxy is measured with (see the script).
ENV PATH=/app/bin:$PATH
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY package.json ./
COPY config ./config
COPY scripts/docker-entrypoint.sh /usr/local/bin/consul-lb-entrypoint
# serve, nginx, doctor and dev drop to the image's unprivileged `node` user (8080 needs no privilege); the registrator
# keeps root for the Docker socket, as gliderlabs/registrator's image (scripts/docker-entrypoint.sh).
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/consul-lb-entrypoint"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--admin", "0.0.0.0:8081"]
