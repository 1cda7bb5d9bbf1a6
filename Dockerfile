# Runtrail service image: one image, the service chosen by the command (runtrail collector|...).
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
# npm install, not npm ci: chdb lists optional platform packages that are not published for every
# platform, which npm ci counts as missing from the lockfile.
RUN npm install --omit=dev --no-audit --no-fund
COPY bin ./bin
COPY shared ./shared
COPY services ./services
COPY detectors ./detectors
COPY tsconfig.json ./
ENV NODE_ENV=production
USER node
ENTRYPOINT ["node", "--max-semi-space-size=64", "bin/runtrail.mjs"]
