/**
 * Leader election on a Lease (the semantics of client-go's leaderelection, over a `LeaseClient`
 * port so the same code runs on the API server and on a fake):
 *
 * - every `retryPeriodMs` the candidate reads the Lease and, per lease-decision.ts, creates it when
 *   absent, takes it when released or expired (renewTime + leaseDurationSeconds before now, on the
 *   Clock port), renews it when it holds it, or waits;
 * - every write is conditional on the resourceVersion read: a 409 means another candidate wrote
 *   first, and the next read tells who holds it;
 * - a leader that has not renewed successfully within `renewDeadlineMs` of its last successful
 *   renewal's start steps down by itself — before the lease (renewed at that start) can expire
 *   for the others, since renewDeadlineMs < leaseDurationSeconds — and one that reads another
 *   holder steps down at once;
 * - `stop()` steps down, waits for what onStoppedLeading returned (the leader's work ending), then
 *   releases the lease (holderIdentity cleared) so a successor takes over on its next try.
 *
 * Another holder's lease expires leaseDurationSeconds after this candidate first read it as it is
 * (its resourceVersion), on this candidate's own clock — as client-go judges it — so the replicas'
 * clocks need not agree; a candidate that starts waits a whole lease duration for a holder it has
 * never seen renew. That read is timed when its answer arrives, not when it was sent: an API server
 * slow to answer may have read the lease just before answering, renewed by its holder a moment ago.
 * The expiry and the renew deadline are measured on the monotonic clock (Clock.monotonicMs), so a
 * step of the wall clock neither makes a follower take a held lease nor lets a leader lead past its
 * deadline.
 */
import { ConflictError } from "@fast-sandbox/api";
import { monotonicMs, systemClock, type Clock, type Timer } from "../controller/clock.js";
import { decideLease, releasedLease, type LeaseSpecRecord } from "./lease-decision.js";
import type { LeaderElector, LeadershipCallbacks } from "./leader-elector.js";

/** A Lease as read: its spec and the version a conditional write must carry. */
export interface ObservedLease {
  resourceVersion: string;
  spec: LeaseSpecRecord;
}

/** The one Lease the election is about. */
export interface LeaseClient {
  /** The lease, or undefined when it does not exist. */
  get(): Promise<ObservedLease | undefined>;
  /** Creates it; `ConflictError` when it exists already (another candidate created it first). */
  create(spec: LeaseSpecRecord): Promise<ObservedLease>;
  /** Replaces its spec; `ConflictError` when its resourceVersion is no longer `resourceVersion`. */
  replace(resourceVersion: string, spec: LeaseSpecRecord): Promise<ObservedLease>;
}

export interface ElectorLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}

export interface LeaseLeaderElectorOptions {
  lease: LeaseClient;
  /** This candidate's name in `holderIdentity`; unique among the replicas (e.g. the Pod name). */
  identity: string;
  /** @default 15 */
  leaseDurationSeconds?: number;
  /**
   * A leader that could not renew for this long steps down; below the lease duration.
   * @default 2/3 of the lease duration (10_000 for 15 s)
   */
  renewDeadlineMs?: number;
  /** Time between tries to acquire or renew; below the renew deadline. @default 1/5 of the renew deadline (2_000 for 15 s) */
  retryPeriodMs?: number;
  /** @default systemClock */
  clock?: Clock;
  /** @default silent */
  logger?: ElectorLogger;
}

const silentLogger: ElectorLogger = { info: () => undefined, warn: () => undefined };

export class LeaseLeaderElector implements LeaderElector {
  readonly identity: string;
  readonly #lease: LeaseClient;
  readonly #leaseDurationSeconds: number;
  readonly #renewDeadlineMs: number;
  readonly #retryPeriodMs: number;
  readonly #clock: Clock;
  readonly #logger: ElectorLogger;
  #callbacks: LeadershipCallbacks | undefined;
  #leadership: AbortController | undefined;
  #nextTry: Timer | undefined;
  #renewDeadline: Timer | undefined;
  #inFlight: Promise<void> | undefined;
  /** Counts tries: a try that outlived its time limit finds a newer number and changes nothing. */
  #attempt = 0;
  /** The lease's resourceVersion as last read, and when (this candidate's monotonic clock) it was first read so. */
  #observedVersion: string | undefined;
  #observedAtMs: number | undefined;
  /** The work of the last onStoppedLeading (a leadership lost earlier may still be winding down). */
  #stoppingWork: Promise<void> = Promise.resolve();
  #stopped = false;

  constructor(options: LeaseLeaderElectorOptions) {
    this.identity = options.identity;
    this.#lease = options.lease;
    this.#leaseDurationSeconds = options.leaseDurationSeconds ?? 15;
    // client-go's defaults (15 s, 10 s, 2 s) in proportion: a lease duration set alone brings timings
    // that fit it, where fixed ones would be refused below (any lease of 10 s or less).
    this.#renewDeadlineMs = options.renewDeadlineMs ?? Math.round((this.#leaseDurationSeconds * 2000) / 3);
    this.#retryPeriodMs = options.retryPeriodMs ?? Math.round(this.#renewDeadlineMs / 5);
    this.#clock = options.clock ?? systemClock;
    this.#logger = options.logger ?? silentLogger;
    if (!this.identity) throw new RangeError("LeaseLeaderElector: identity must not be empty");
    if (!Number.isInteger(this.#leaseDurationSeconds) || this.#leaseDurationSeconds < 1) {
      throw new RangeError(`LeaseLeaderElector: leaseDurationSeconds ${this.#leaseDurationSeconds} must be a whole number of seconds, at least 1`);
    }
    if (!(this.#renewDeadlineMs < this.#leaseDurationSeconds * 1000)) {
      throw new RangeError(`LeaseLeaderElector: renewDeadlineMs ${this.#renewDeadlineMs} must be below the lease duration (${this.#leaseDurationSeconds} s)`);
    }
    if (!(this.#retryPeriodMs > 0 && this.#retryPeriodMs < this.#renewDeadlineMs)) {
      throw new RangeError(`LeaseLeaderElector: retryPeriodMs ${this.#retryPeriodMs} must be positive and below renewDeadlineMs ${this.#renewDeadlineMs}`);
    }
  }

  run(callbacks: LeadershipCallbacks): void {
    if (this.#stopped) throw new Error("LeaderElector.run: stopped");
    if (this.#callbacks) throw new Error("LeaderElector.run: already running");
    this.#callbacks = callbacks;
    this.#scheduleTry(0);
  }

  isLeader(): boolean {
    return this.#leadership !== undefined && !this.#leadership.signal.aborted;
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#nextTry?.cancel();
    await this.#inFlight;
    await this.#stepDown("stopping");
    await this.#release();
  }

  #scheduleTry(delayMs: number): void {
    if (this.#stopped) return;
    this.#nextTry = this.#clock.setTimeout(() => {
      this.#inFlight = this.#tryWithTimeLimit().finally(() => {
        this.#inFlight = undefined;
        this.#scheduleTry(this.#retryPeriodMs);
      });
    }, delayMs);
  }

  /** A request that hangs must not stop the campaign: after renewDeadlineMs the next try starts. */
  async #tryWithTimeLimit(): Promise<void> {
    const attempt = ++this.#attempt;
    let timer: Timer | undefined;
    const timeLimit = new Promise<void>((resolve) => {
      timer = this.#clock.setTimeout(() => {
        if (attempt === this.#attempt) this.#attempt++;
        this.#logger.warn({ identity: this.identity }, `no answer about the lease within ${this.#renewDeadlineMs} ms`);
        resolve();
      }, this.#renewDeadlineMs);
    });
    try {
      await Promise.race([this.#tryAcquireOrRenew(attempt), timeLimit]);
    } finally {
      timer?.cancel();
    }
  }

  async #tryAcquireOrRenew(attempt: number): Promise<void> {
    // The time written into the lease (wall clock), and the start of this try on the monotonic clock.
    const startedAt = this.#clock.now();
    const startedAtMs = monotonicMs(this.#clock);
    try {
      const observed = await this.#lease.get();
      if (this.#stopped || attempt !== this.#attempt) return;
      if (this.#observedAtMs === undefined || observed?.resourceVersion !== this.#observedVersion) {
        this.#observedVersion = observed?.resourceVersion;
        // When the answer came, not when the request went: the server may have read the lease just
        // now, renewed since the request left (client-go records its observedTime after the Get too).
        this.#observedAtMs = monotonicMs(this.#clock);
      }
      const decision = decideLease(observed?.spec, {
        identity: this.identity,
        now: startedAt,
        leaseDurationSeconds: this.#leaseDurationSeconds,
        // Judged at the start of the try, as client-go does: never later than the lease can be valid.
        observedForMs: startedAtMs - this.#observedAtMs,
      });
      if (decision.action === "wait") {
        void this.#stepDown(`the lease is held by ${decision.holderIdentity}`);
        return;
      }
      if (observed) await this.#lease.replace(observed.resourceVersion, decision.spec);
      else await this.#lease.create(decision.spec);
    } catch (error) {
      if (error instanceof ConflictError) this.#logger.info({ identity: this.identity }, "another candidate wrote the lease first");
      else this.#logger.warn({ identity: this.identity, err: error }, "cannot read or write the lease");
      return;
    }
    if (attempt !== this.#attempt) return;
    // The lease now runs from startedAt, and so does this leadership's deadline.
    const remainingMs = startedAtMs + this.#renewDeadlineMs - monotonicMs(this.#clock);
    if (remainingMs <= 0) return;
    this.#renewDeadline?.cancel();
    this.#renewDeadline = this.#clock.setTimeout(() => void this.#stepDown(`the lease was not renewed within ${this.#renewDeadlineMs} ms`), remainingMs);
    if (!this.isLeader() && !this.#stopped) this.#startLeading();
  }

  #startLeading(): void {
    this.#leadership = new AbortController();
    this.#logger.info({ identity: this.identity }, "started leading");
    try {
      this.#callbacks?.onStartedLeading(this.#leadership.signal);
    } catch (error) {
      this.#logger.warn({ identity: this.identity, err: error }, "onStartedLeading threw");
    }
  }

  /** Steps down; resolves when the work onStoppedLeading returned is over (at once when not leading). */
  #stepDown(reason: string): Promise<void> {
    this.#renewDeadline?.cancel();
    this.#renewDeadline = undefined;
    if (!this.isLeader()) return this.#stoppingWork;
    this.#leadership?.abort();
    this.#logger.info({ identity: this.identity, reason }, "stopped leading");
    try {
      this.#stoppingWork = Promise.resolve(this.#callbacks?.onStoppedLeading()).catch((error: unknown) => {
        this.#logger.warn({ identity: this.identity, err: error }, "onStoppedLeading failed");
      });
    } catch (error) {
      this.#logger.warn({ identity: this.identity, err: error }, "onStoppedLeading threw");
    }
    return this.#stoppingWork;
  }

  /** Clears holderIdentity when this candidate holds the lease; best effort (it expires anyway). */
  async #release(): Promise<void> {
    try {
      const observed = await this.#lease.get();
      if (observed?.spec.holderIdentity !== this.identity) return;
      await this.#lease.replace(observed.resourceVersion, releasedLease(observed.spec, this.#clock.now()));
      this.#logger.info({ identity: this.identity }, "released the lease");
    } catch (error) {
      this.#logger.warn({ identity: this.identity, err: error }, "cannot release the lease; it expires after its duration");
    }
  }
}
