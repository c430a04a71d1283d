/** Stand-in for `k6/metrics`: samples are kept for the host to aggregate like k6 does. */
import { define, record, type MetricType } from '../runtime.ts';

class Metric {
  readonly name: string;
  constructor(name: string, type: MetricType, isTime = false) {
    this.name = name;
    define(name, { type, isTime });
  }
  add(value: number | boolean, tags: Record<string, string> = {}): void {
    record(this.name, Number(value), tags);
  }
}

export class Counter extends Metric {
  constructor(name: string) {
    super(name, 'counter');
  }
}
export class Gauge extends Metric {
  constructor(name: string) {
    super(name, 'gauge');
  }
}
export class Rate extends Metric {
  constructor(name: string) {
    super(name, 'rate');
  }
  override add(value: number | boolean, tags: Record<string, string> = {}): void {
    super.add(value ? 1 : 0, tags);
  }
}
export class Trend extends Metric {
  constructor(name: string, isTime = false) {
    super(name, 'trend', isTime);
  }
}

export default { Counter, Gauge, Rate, Trend };
