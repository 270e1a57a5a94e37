/**
 * Bridges push-style callbacks to a pull-style async iterable (for server streams). It never drops
 * items; a producer that can pause (a pipe) asks `whenBelow(n)` when `size` grows too large and
 * pauses until the consumer has caught up, which passes the consumer's pace back to the producer.
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiter: (() => void) | undefined;
  private done = false;
  private failure: unknown;
  private readonly drainWaiters: { below: number; resolve: () => void }[] = [];

  /** Items pushed and not yet consumed. */
  get size(): number {
    return this.items.length;
  }

  /** Resolves once fewer than `below` items wait (at once if that holds already, or when the queue ends). */
  whenBelow(below: number): Promise<void> {
    if (this.items.length < below || this.done) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push({ below, resolve }));
  }

  private notifyDrained(): void {
    for (let i = this.drainWaiters.length - 1; i >= 0; i--) {
      const waiter = this.drainWaiters[i];
      if (waiter && (this.items.length < waiter.below || this.done)) {
        this.drainWaiters.splice(i, 1);
        waiter.resolve();
      }
    }
  }

  push(item: T): void {
    if (this.done) return;
    this.items.push(item);
    this.wake();
  }

  end(error?: unknown): void {
    if (this.done) return;
    this.done = true;
    this.failure = error;
    this.notifyDrained();
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      const item = this.items.shift();
      if (item !== undefined) {
        if (this.drainWaiters.length > 0) this.notifyDrained();
        yield item;
        continue;
      }
      if (this.done) {
        // Rethrows exactly what the producer failed with (usually an FsbError).
        // eslint-disable-next-line @typescript-eslint/only-throw-error
        if (this.failure !== undefined) throw this.failure;
        return;
      }
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }
}
