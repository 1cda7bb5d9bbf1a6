import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { startHttpServer } from '../../shared/http.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';

/**
 * Closing the HTTP server (graceful shutdown) must end even when a client keeps a body upload
 * open: Node stops timing requests out once the server closes, so without its own deadline the
 * close, and the flush that waits behind it, would never finish.
 */

describe('HTTP server close', () => {
  it('ends despite a stalled upload, cutting it after the request timeout', async () => {
    const http = await startHttpServer({
      host: '127.0.0.1',
      port: 0,
      routes: [
        {
          method: 'POST',
          path: '/v1/upload',
          handler: async (req, res) => {
            for await (const chunk of req) void chunk;
            res.writeHead(200, { 'content-type': 'application/json' });
            res.end('{}');
          },
        },
      ],
      log: silentLogger(),
      metrics: new MetricsRegistry(),
      readiness: () => ({ ready: true, checks: {} }),
      requestTimeoutMs: 300,
    });
    // A client that announces 1,000 bytes and sends 10, then nothing.
    const socket = connect(http.port, '127.0.0.1');
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    const gone = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.write('POST /v1/upload HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n0123456789');
    await new Promise((r) => setTimeout(r, 50));
    await http.close();
    await gone;
    expect(socket.destroyed).toBe(true);
  });
});
