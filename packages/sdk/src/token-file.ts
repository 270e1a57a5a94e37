/**
 * An API token kept in a file that something else renews: a Kubernetes ServiceAccount's projected
 * token (`/var/run/secrets/kubernetes.io/serviceaccount/token`, rewritten by the kubelet before it
 * expires), or a Secret mounted as a file. Read when made — an unreadable or empty file is the
 * caller's error at once — and again at most once a refresh period (a minute, as client-go does)
 * when a call needs it; a read that fails then keeps the token read before.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { ValidationError } from "@fast-sandbox/api/core";

/** How long a token read from its file is used before the file is read again. */
export const TOKEN_FILE_REFRESH_MS = 60_000;

export class TokenFile {
  /** Absolute: a later change of the working directory does not change which file is read. */
  readonly path: string;
  #token: string;
  #readAt: number;

  /** `field` names the setting in errors: `tokenFile` or `FSB_TOKEN_FILE`. */
  constructor(
    path: string,
    private readonly field: string,
    private readonly now: () => number = Date.now,
  ) {
    this.path = resolve(path);
    this.#token = this.#read();
    this.#readAt = this.now();
  }

  /** The token, read again when the last read is a refresh period old (or the clock went back). */
  current(): string {
    const elapsed = this.now() - this.#readAt;
    if (elapsed >= TOKEN_FILE_REFRESH_MS || elapsed < 0) {
      this.#readAt = this.now();
      try {
        this.#token = this.#read();
      } catch {
        // Being rewritten, or gone for a moment: the token read before may still be good.
      }
    }
    return this.#token;
  }

  #read(): string {
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch (error) {
      throw new ValidationError(this.field, `${this.path} cannot be read: ${(error as Error).message}`);
    }
    const token = text.trim();
    if (!token) throw new ValidationError(this.field, `${this.path} is empty: it should hold the API token (e.g. a ServiceAccount's)`);
    return token;
  }
}
