/**
 * The id of one instance of a sandbox (`status.sandboxID`, the agent API's `sandbox_id`): chosen by
 * the control plane, spoken by the agent in everything it reports. It is safe as one path segment
 * (the agent names a sandbox's host files after it) and says nothing about any runtime's own
 * identifiers: each runtime adapter of the agent maps it to those (containerd: container-id.ts).
 *
 * Lower-case letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most 128
 * characters.
 */
export const SANDBOX_ID_MAX_LENGTH = 128;

const SANDBOX_ID = /^[a-z0-9][a-z0-9._-]*$/;

export function isSandboxId(value: string): boolean {
  return value.length <= SANDBOX_ID_MAX_LENGTH && SANDBOX_ID.test(value);
}
