/**
 * The sandboxes the E2B-compatible API created, with their access tokens derived again (their
 * nonce annotation under the control plane's secret): what the sandbox proxy checks E2B's presigned
 * file URLs against (proxy/signed-file-lookup.ts), since those URLs name no sandbox; and which
 * sandboxes are E2B's, whose every port the proxy reaches. A token is derived once per record (an
 * HMAC per sandbox per URL adds up at thousands of sandboxes) and again when the record, its nonce
 * or the secret changes.
 */
import type { Sandbox } from "@fast-sandbox/api";
import { e2bTrafficAccessToken, envdAccessToken } from "./envd-access-token.js";
import { TOKEN_NONCE_ANNOTATION } from "./e2b-sandbox-view.js";

export class SigningSandboxes {
  /** Keyed by the record itself: an informer replaces a record on change, and a dropped one goes with its entry. */
  private readonly derived = new WeakMap<Sandbox, { nonce: string; secret: Buffer; token: string }>();
  private readonly traffic = new WeakMap<Sandbox, { nonce: string; secret: Buffer; hash: string; token: string }>();

  /**
   * @param sandboxes every sandbox the proxy may route to (an informer's cache)
   * @param secret the control plane's token secret; undefined while it is not known (Kubernetes: the Secret is read later)
   */
  constructor(
    private readonly sandboxes: () => Iterable<Sandbox>,
    private readonly secret: () => Buffer | undefined,
  ) {}

  /** Every sandbox whose token can be derived, with its token. */
  *list(): Generator<{ sandbox: Sandbox; token: string }> {
    for (const sandbox of this.sandboxes()) {
      const token = this.tokenOf(sandbox);
      if (token) yield { sandbox, token };
    }
  }

  /** The sandbox's token, if the E2B-compatible API created it and the secret is known. */
  tokenOf(sandbox: Sandbox): string | undefined {
    const nonce = sandbox.metadata.annotations?.[TOKEN_NONCE_ANNOTATION];
    const secret = this.secret();
    if (!nonce || !secret) return undefined;
    const known = this.derived.get(sandbox);
    if (known?.nonce === nonce && known.secret === secret) return known.token;
    const token = envdAccessToken(secret, nonce);
    this.derived.set(sandbox, { nonce, secret, token });
    return token;
  }

  /** The sandbox's traffic token (e2bTrafficAccessToken), derived once per record, nonce, token hash and secret. */
  trafficTokenOf(sandbox: Sandbox): string | undefined {
    const nonce = sandbox.metadata.annotations?.[TOKEN_NONCE_ANNOTATION];
    const hash = sandbox.status?.accessTokenHash;
    const secret = this.secret();
    if (!nonce || !hash || !secret) return undefined;
    const known = this.traffic.get(sandbox);
    if (known?.nonce === nonce && known.hash === hash && known.secret === secret) return known.token;
    const token = e2bTrafficAccessToken(secret, nonce, hash);
    this.traffic.set(sandbox, { nonce, secret, hash, token });
    return token;
  }
}

/** Whether the E2B-compatible API created the sandbox (E2B's sandboxes reach every port through the proxy). */
export function createdThroughE2b(sandbox: Sandbox): boolean {
  return Boolean(sandbox.metadata.annotations?.[TOKEN_NONCE_ANNOTATION]);
}
