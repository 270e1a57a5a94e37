import { ValidationError } from "../errors.js";

const MEMORY_UNITS: Record<string, number> = {
  "": 1,
  K: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 1024,
  Mi: 1024 ** 2,
  Gi: 1024 ** 3,
  Ti: 1024 ** 4,
};

/** Kubernetes memory quantity (`256Mi`, `1G`, `1048576`) → bytes. */
export function parseMemoryBytes(quantity: string, field = "memory"): number {
  const match = /^([0-9]+)(Ki|Mi|Gi|Ti|K|M|G|T)?$/.exec(quantity);
  if (!match) throw new ValidationError(field, `${JSON.stringify(quantity)} is not a memory quantity (e.g. 256Mi, 1Gi)`);
  return Number(match[1]) * (MEMORY_UNITS[match[2] ?? ""] ?? 1);
}

/** Kubernetes CPU quantity (`500m`, `2`, `0.5`) → millicores. */
export function parseCpuMillis(quantity: string, field = "cpu"): number {
  const match = /^([0-9]+)m$/.exec(quantity);
  if (match) return Number(match[1]);
  if (/^[0-9]+(\.[0-9]+)?$/.test(quantity)) return Math.round(Number(quantity) * 1000);
  throw new ValidationError(field, `${JSON.stringify(quantity)} is not a CPU quantity (e.g. 500m, 2)`);
}

const SUFFIX_FACTORS: Record<string, number> = {
  Ki: 1024,
  Mi: 1024 ** 2,
  Gi: 1024 ** 3,
  Ti: 1024 ** 4,
  Pi: 1024 ** 5,
  Ei: 1024 ** 6,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
};

/**
 * Any quantity Kubernetes accepts (its whole grammar: `1.5Gi`, `500m`, `129e6`, `2`, `.5`), as its
 * value in base units (cores, bytes). For what only Kubernetes itself checks, such as a Pod
 * template's resources; `sandboxResources` keeps the narrower parseCpuMillis and parseMemoryBytes.
 */
export function parseQuantity(quantity: string, field = "quantity"): number {
  const match = /^([+-]?(?:\d+\.?\d*|\.\d+))(?:(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)|[eE]([+-]?\d+))?$/.exec(quantity);
  if (!match) throw new ValidationError(field, `${JSON.stringify(quantity)} is not a Kubernetes quantity (e.g. 500m, 2, 1.5Gi, 129e6)`);
  const factor = match[2] ? (SUFFIX_FACTORS[match[2]] ?? 1) : match[3] ? 10 ** Number(match[3]) : 1;
  return Number(match[1]) * factor;
}

/** `30s`, `5m`, `2h`, `1h30m`, `1d` → milliseconds; empty, unitless or zero (`0s`) is refused. */
export function parseDurationMs(text: string, field = "duration"): number {
  const re = /(\d+)(ms|s|m|h|d)/gy;
  const unitMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  let total = 0;
  let consumed = 0;
  for (let match = re.exec(text); match; match = re.exec(text)) {
    total += Number(match[1]) * (unitMs[match[2] ?? "s"] ?? 0);
    consumed = re.lastIndex;
  }
  if (text.length === 0 || consumed !== text.length) {
    throw new ValidationError(field, `${JSON.stringify(text)} is not a duration (e.g. 30s, 10m, 2h, 1h30m)`);
  }
  if (total <= 0) throw new ValidationError(field, `${JSON.stringify(text)} is zero; give a duration longer than that (e.g. 30s, 10m, 2h, 1h30m)`);
  return total;
}
