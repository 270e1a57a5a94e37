/**
 * Label keys and values as Kubernetes takes them (the Kubernetes mode stores them in objects of the
 * API server, which refuses others only at the write — after a fork's checkpoint, say): checked at
 * every entry point alike.
 * - key: `[prefix/]name`; name at most 63 letters, digits, '-', '_' and '.', beginning and ending
 *   with a letter or digit; prefix a DNS subdomain (lower case) of at most 253 characters;
 * - value: empty, or at most 63 characters of the name's kind.
 */
import { ValidationError } from "../errors.js";

const NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Throws ValidationError on `field["key"]` for the first label Kubernetes would refuse. */
export function checkLabels(labels: Record<string, string> | undefined, field: string): void {
  for (const [key, value] of Object.entries(labels ?? {})) {
    const at = `${field}[${JSON.stringify(key)}]`;
    const slash = key.lastIndexOf("/");
    const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
    const name = slash >= 0 ? key.slice(slash + 1) : key;
    if (!NAME.test(name) || (prefix !== undefined && (prefix.length > 253 || !SUBDOMAIN.test(prefix)))) {
      throw new ValidationError(
        at,
        "is not a label key: [prefix/]name, the name at most 63 letters, digits, '-', '_' and '.' beginning and ending with a letter or digit, the prefix a lower-case DNS subdomain (e.g. app, fast.io/team)",
      );
    }
    if (value !== "" && !NAME.test(value)) {
      throw new ValidationError(
        at,
        `${JSON.stringify(value)} is not a label value: empty, or at most 63 letters, digits, '-', '_' and '.' beginning and ending with a letter or digit`,
      );
    }
  }
}
