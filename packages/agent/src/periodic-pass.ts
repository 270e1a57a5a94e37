/**
 * A pass over the agent's sandboxes run on a timer (their resource use sampled, their disk use held
 * to their limits): every `intervalMs` once started, never two at once — a pass due while one still
 * runs is skipped, not queued. The timer keeps no process alive.
 */
export class PeriodicPass {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly pass: () => Promise<void>,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.run(), this.intervalMs);
    this.timer.unref();
  }

  /** No pass starts after this; resolves once the one running (if any) has ended. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One pass now, resolved when it ends; while one runs already, nothing (resolved at once). */
  async run(): Promise<void> {
    if (this.running) return;
    this.running = this.pass().finally(() => (this.running = undefined));
    await this.running;
  }
}
