import { ValidationError } from "@fast-sandbox/api";

/** The kinds `fsb get` and `fsb delete` take, kubectl-style: `fsb get pool NAME`, `fsb delete sandbox NAME`. */
export type ResourceKind = "sandbox" | "pool";

/** Words that name a kind (singular, plural, short and the API kind), compared case-insensitively. */
const KIND_WORDS: ReadonlyMap<string, ResourceKind> = new Map([
  ["sandbox", "sandbox"],
  ["sandboxes", "sandbox"],
  ["sb", "sandbox"],
  ["pool", "pool"],
  ["pools", "pool"],
  ["sandboxpool", "pool"],
  ["sandboxpools", "pool"],
]);

/** The kind a word names, if it names one. */
export function resourceKind(word: string): ResourceKind | undefined {
  return KIND_WORDS.get(word.toLowerCase());
}

/**
 * Splits `[KIND] NAME…`: a first word that names a kind is the kind (so `fsb delete pool web`
 * deletes the pool web; a sandbox called "pool" is `fsb delete sandbox pool` or `fsb rm pool`);
 * without one, every word is a sandbox name. `names` may be empty only after a kind word.
 */
export function parseResourceArgs(args: readonly string[]): { kind: ResourceKind; names: string[] } {
  const [first, ...rest] = args;
  if (first === undefined) throw new ValidationError("NAME", "name a sandbox, or a kind and names, e.g. 'pool NAME'");
  const kind = resourceKind(first);
  return kind === undefined ? { kind: "sandbox", names: [...args] } : { kind, names: rest };
}
