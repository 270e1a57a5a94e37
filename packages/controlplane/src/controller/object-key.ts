/**
 * The key of a namespaced object in caches and work queues: `namespace/name`, as in Kubernetes.
 * Neither part can contain a `/` (the store validates names), so the key splits back unambiguously.
 */
import type { ObjectKey } from "../store/resource-store.js";

/** `namespace/name` of a stored object (the store gives every object a namespace). */
export function objectKey(object: { metadata: { namespace?: string | undefined; name: string } }): string {
  return `${object.metadata.namespace ?? ""}/${object.metadata.name}`;
}

/** The namespace and name a key names; throws on a string that is not `namespace/name`. */
export function parseObjectKey(key: string): ObjectKey {
  const slash = key.indexOf("/");
  if (slash <= 0 || slash === key.length - 1 || key.indexOf("/", slash + 1) !== -1) {
    throw new TypeError(`${JSON.stringify(key)} is not an object key of the form namespace/name`);
  }
  return { namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}
