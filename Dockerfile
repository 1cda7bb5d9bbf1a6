# Runtrail service image: one image, the service chosen by the command (runtrail collector|...).
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY bin ./bin
COPY shared ./shared
COPY services ./services
COPY detectors ./detectors
COPY tsconfig.json ./
ENV NODE_ENV=production
USER node
ENTRYPOINT ["node", "bin/runtrail.mjs"]
