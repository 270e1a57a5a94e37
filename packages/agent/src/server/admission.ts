import { NoCapacityError, UnavailableError, ValidationError } from "@fast-sandbox/api/core";
import type { RuntimeSandbox } from "../runtime/runtime.js";

/** How long a retirement lasts without the stop it announces. */
export const RETIREMENT_LAPSE_MS = 60_000;

/** What a create asks of the agent's admission. */
export interface AdmissionRequest {
  sandboxId: string;
  namespace: string;
  name: string;
  /** The agent's sandbox slots as the caller knows them (the pool's maxSandboxesPerPod); 0 means no limit. */
  slots: number;
  /** Ports the sandbox exposes; each is exclusive on this agent. */
  exposedPorts: readonly number[];
}

/** A create's claim on a slot and its ports, taken by `Admission.admit` before the create does anything. */
export interface Reservation {
  /** The create succeeded: the sandbox keeps its slot and ports until it is deleted. */
  confirm(): void;
  /** The create failed and left nothing behind: its slot and ports are free again. */
  release(): void;
}

interface Holding {
  sandboxId: string;
  /** namespace/name of the sandbox, for messages. */
  key: string;
  ports: readonly number[];
  /** When (in `Admission` marks) the sandbox's container was known to exist; undefined while its create is in flight. */
  existsSince: number | undefined;
}

/**
 * The agent's admission of creates: the one place that decides, atomically, whether a sandbox fits.
 * Control-plane replicas each keep their own registry and only propose a placement; two of them may
 * both believe the agent has its last slot (or a port) free, and the agent lets exactly one in.
 *
 * The agent holds every container it has (running or exited) and every create in flight: a slot is
 * taken synchronously by `admit`, before the create's first await, and given back only when the
 * create fails or the sandbox's delete has finished.
 */
export class Admission {
  private readonly holdings = new Map<string, Holding>();
  /** port → the holding exposing it. */
  private readonly portHolders = new Map<number, Holding>();
  /** Orders "the container exists" facts against listings of the runtime (see `mark`). */
  private marks = 0;
  private stopping = false;
  private retiring = false;
  /** Lifts the retirement when its stop does not come (retireIfIdle's lapseMs). */
  private lapse: NodeJS.Timeout | undefined;

  constructor(private readonly agentName: string) {}

  /** Sandboxes held: containers the agent has plus creates in flight. */
  get held(): number {
    return this.holdings.size;
  }

  /** Holds the sandboxes the runtime already has (at start: those a previous agent of this name created). */
  adopt(sandboxes: readonly RuntimeSandbox[]): void {
    const since = ++this.marks;
    for (const sandbox of sandboxes) {
      if (this.holdings.has(sandbox.sandboxId)) continue;
      // One with an address of its own (Isolated network) holds none of the agent's ports.
      const ports = sandbox.address ? [] : (sandbox.exposedPorts ?? []);
      this.hold({ sandboxId: sandbox.sandboxId, key: `${sandbox.namespace}/${sandbox.name}`, ports, existsSince: since });
    }
  }

  /**
   * Takes a slot and the ports for a create, or refuses it: NoCapacityError when the agent is full or
   * a port is exposed already, UnavailableError once the agent is stopping. Synchronous, so two
   * creates can never both take the last slot. A create of an id already held (a retry of a create
   * in flight or done) takes nothing more: the runtime answers it as before.
   */
  admit(request: AdmissionRequest): Reservation {
    if (!Number.isInteger(request.slots) || request.slots < 0) throw new ValidationError("slots", `${request.slots} must be 0 (no limit) or more`);
    request.exposedPorts.forEach((port, index) => {
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ValidationError(`exposedPorts[${index}]`, `${port} is not a port (1-65535)`);
    });
    if (this.stopping) throw new UnavailableError(`agent ${this.agentName} is stopping; place the sandbox on another agent`);
    if (this.retiring) throw new UnavailableError(`agent ${this.agentName} is retired (its pool is stopping it); place the sandbox on another agent`);
    if (this.holdings.has(request.sandboxId)) return this.retryOf(request);
    if (request.slots > 0 && this.holdings.size >= request.slots) {
      throw new NoCapacityError(`agent ${this.agentName} is full: ${this.holdings.size} of ${request.slots} slots in use`);
    }
    for (const port of request.exposedPorts) {
      const holder = this.portHolders.get(port);
      if (holder) throw new NoCapacityError(`port ${port} is already exposed by sandbox ${holder.key} on agent ${this.agentName}`);
    }
    const holding = this.hold({
      sandboxId: request.sandboxId,
      key: `${request.namespace}/${request.name}`,
      ports: [...new Set(request.exposedPorts)],
      existsSince: undefined,
    });
    let settled = false;
    return {
      confirm: () => {
        if (settled) return;
        settled = true;
        holding.existsSince = ++this.marks;
      },
      release: () => {
        if (settled) return;
        settled = true;
        this.unhold(holding);
      },
    };
  }

  /** The sandbox's delete has finished: its slot and ports are free. */
  deleted(sandboxId: string): void {
    const holding = this.holdings.get(sandboxId);
    if (holding) this.unhold(holding);
  }

  /** Take before listing the runtime, and pass to `reconcile` with the listing. */
  mark(): number {
    return ++this.marks;
  }

  /**
   * Forgets sandboxes whose containers are gone without a delete through this agent (the janitor
   * removed them): held since before `mark`, absent from the listing taken after it. Creates in
   * flight, and sandboxes that came to exist after `mark`, are kept whatever the listing says.
   */
  reconcile(listed: readonly RuntimeSandbox[], mark: number): void {
    const present = new Set(listed.map((sandbox) => sandbox.sandboxId));
    for (const holding of [...this.holdings.values()]) {
      if (holding.existsSince !== undefined && holding.existsSince < mark && !present.has(holding.sandboxId)) this.unhold(holding);
    }
  }

  /** From now on creates are refused with UnavailableError (the agent is going away), so callers place them elsewhere. */
  stop(): void {
    this.stopping = true;
  }

  /**
   * Retires the agent if it holds nothing (no sandbox, no create in flight): from then on creates are
   * refused with UnavailableError, until `unretire`. Synchronous like `admit`: a create admitted
   * just before makes it refuse, one that comes just after is refused. Retiring a retired agent
   * answers true again.
   */
  retireIfIdle(lapseMs = RETIREMENT_LAPSE_MS): boolean {
    if (this.holdings.size > 0) return false;
    this.retiring = true;
    // The stop that follows a retirement comes in seconds; without it (the control plane that asked
    // went away, its cancel was lost) the agent would refuse creates for ever.
    clearTimeout(this.lapse);
    this.lapse = setTimeout(() => this.unretire(), lapseMs);
    this.lapse.unref();
    return true;
  }

  /** Admits creates again after `retireIfIdle` (the agent was not stopped after all). */
  unretire(): void {
    clearTimeout(this.lapse);
    this.lapse = undefined;
    this.retiring = false;
  }

  /** Whether the agent is retired (what its status reports); it may be stopping for good as well. */
  get retired(): boolean {
    return this.retiring;
  }

  /** Whether creates are refused for good or for a retirement. */
  get refusing(): boolean {
    return this.stopping || this.retiring;
  }

  /** A create of an id already held: nothing more to take; a success after the first create failed holds it again. */
  private retryOf(request: AdmissionRequest): Reservation {
    return {
      confirm: () => {
        if (this.holdings.has(request.sandboxId)) return;
        this.hold({
          sandboxId: request.sandboxId,
          key: `${request.namespace}/${request.name}`,
          ports: [...new Set(request.exposedPorts)],
          existsSince: ++this.marks,
        });
      },
      release: () => undefined,
    };
  }

  private hold(holding: Holding): Holding {
    this.holdings.set(holding.sandboxId, holding);
    for (const port of holding.ports) if (!this.portHolders.has(port)) this.portHolders.set(port, holding);
    return holding;
  }

  private unhold(holding: Holding): void {
    if (this.holdings.get(holding.sandboxId) === holding) this.holdings.delete(holding.sandboxId);
    for (const port of holding.ports) if (this.portHolders.get(port) === holding) this.portHolders.delete(port);
  }
}
