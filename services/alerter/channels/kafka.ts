import type { z } from 'zod';
import { errorMessage } from '../../../shared/errors.ts';
import type { KafkaChannelSchema } from '../../../shared/config.ts';
import { TOPIC } from '../../../shared/names.ts';
import { BaseChannel, DeliveryError, type Delivery, type DeliveryResult } from './channel.ts';

/**
 * Publishes each notification to the alerts topic (`TOPIC.alerts`, keyed by incident id so an
 * incident's notifications stay in order). In distributed mode that is a Kafka topic; in embedded
 * mode the in-process bus.
 */
export class KafkaChannel extends BaseChannel<z.infer<typeof KafkaChannelSchema>> {
  readonly type = 'kafka' as const;

  async send(d: Delivery): Promise<DeliveryResult> {
    const bus = this.ctx.bus;
    if (!bus) throw new DeliveryError('delivery_rejected', 'the kafka channel needs the bus, and this alerter has none', { retriable: false });
    try {
      await bus.publish(TOPIC.alerts, [
        {
          key: d.message.incident.id,
          value: { id: d.id, incident_id: d.message.incident.id, channel: this.name, status: d.kind, time: (this.ctx.now ?? Date.now)(), payload: JSON.stringify(d.message) },
        },
      ]);
    } catch (err) {
      throw new DeliveryError('delivery_failed', `publish to the alerts topic failed: ${errorMessage(err)}`, { retriable: true, cause: err });
    }
    return { ref: '' };
  }
}
