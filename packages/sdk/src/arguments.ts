/**
 * @internal Checks of what callers pass, made at the SDK's edge before anything is sent: a value of
 * the wrong type (from JavaScript, or through an `as`) is a ValidationError naming the field and
 * saying what is allowed — not a request that fails to encode (an "internal" error) or a TypeError
 * from deep inside a transport.
 */
import { ValidationError } from "@fast-sandbox/api/core";

/** A value as a message shows it: strings quoted, others with their type. */
export function shown(value: unknown): string {
  switch (typeof value) {
    case "string":
      return JSON.stringify(value);
    case "number":
    case "bigint":
    case "boolean":
      return `${String(value)} (a ${typeof value})`;
    case "undefined":
      return "undefined";
    case "object":
      return value === null ? "null" : Array.isArray(value) ? "an array" : "an object";
    default:
      return `a ${typeof value}`;
  }
}

/** A string, when given at all. */
export function checkString(value: unknown, field: string): void {
  if (value !== undefined && typeof value !== "string") throw new ValidationError(field, `${shown(value)} is not a string`);
}

/** An array of strings, when given at all. */
export function checkStringList(value: unknown, field: string): void {
  if (value === undefined) return;
  if (!Array.isArray(value)) throw new ValidationError(field, `${shown(value)} is not a list; give an array of strings`);
  for (const [index, item] of value.entries()) {
    if (typeof item !== "string") throw new ValidationError(`${field}[${index}]`, `${shown(item)} is not a string; every element must be one (e.g. String(1))`);
  }
}

/** An object whose values are all strings (environment variables, labels), when given at all. */
export function checkStringMap(value: unknown, field: string): void {
  if (value === undefined) return;
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ValidationError(field, `${shown(value)} is not an object of names and string values, e.g. { A: "1" }`);
  }
  for (const [name, item] of Object.entries(value)) {
    if (typeof item !== "string") throw new ValidationError(`${field}.${name}`, `${shown(item)} is not a string; every value must be one (e.g. String(1))`);
  }
}

/** A control plane's base URL: http or https. */
export function checkControlPlaneUrl(url: string, field: string): void {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (!parsed || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) {
    throw new ValidationError(
      field,
      `${shown(url)} is not an http:// or https:// URL; give the control plane's address, e.g. http://127.0.0.1:7070 (what 'fsb up' prints)`,
    );
  }
}
