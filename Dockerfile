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
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY config ./config
# The image's own unprivileged user; 8080 needs no privilege.
USER node
EXPOSE 8080 8081
ENTRYPOINT ["node", "/app/dist/cli.js"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--admin", "0.0.0.0:8081"]
