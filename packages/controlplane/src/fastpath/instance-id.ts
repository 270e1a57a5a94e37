/**
 * The id of a new instance of a sandbox (`status.sandboxID`). The control plane chooses it before it
 * asks an agent for the sandbox, and records it first: the record names the instance before it
 * exists, so crash recovery can match an agent's sandboxes to records.
 *
 * It is a DNS label of lower-case letters and digits, so the sandbox proxy can route by the Host
 * label `<port>-<sandboxID>.<domain>` (E2B's proxy uses the same shape), and it says nothing about
 * the sandbox's name: the namespace and name travel next to it wherever both are needed. Which ids a
 * runtime accepts is the agent's business (containerd's rule lives in the agent's container-id.ts).
 */
import { randomBytes } from "node:crypto";

/** The characters of an instance id. */
const ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz";
/** Length of an instance id: 20 base-36 characters carry 103 random bits. */
export const INSTANCE_ID_LENGTH = 20;
/** Random bytes at or above this are dropped, so every character is equally likely (252 = 7 × 36). */
const UNBIASED_BYTE_LIMIT = 252;

/** 20 random lower-case letters and digits, e.g. `k3x9q0m2zt7c1w8r5bn4`. */
export function newInstanceId(): string {
  let id = "";
  while (id.length < INSTANCE_ID_LENGTH) {
    for (const byte of randomBytes(INSTANCE_ID_LENGTH * 2)) {
      if (byte >= UNBIASED_BYTE_LIMIT) continue;
      id += ALPHABET[byte % ALPHABET.length];
      if (id.length === INSTANCE_ID_LENGTH) break;
    }
  }
  return id;
}
