/**
 * Image references as Docker and containerd read them (the grammar of distribution's `reference`
 * package): `[domain[:port]/]path[:tag][@digest]`. A first component with a `.` or a `:`, or
 * `localhost`, is a registry domain; anything else is on Docker Hub, and a single-component name
 * there is an official image under `library/`. No tag and no digest means `:latest`.
 *
 *   busybox                         → docker.io/library/busybox:latest
 *   python:3.12                     → docker.io/library/python:3.12
 *   ghcr.io/org/app@sha256:<64 hex> → ghcr.io/org/app@sha256:<64 hex>
 *   127.0.0.1:5000/team/app:v1      → 127.0.0.1:5000/team/app:v1
 */
import { ValidationError } from "../errors.js";

export const DOCKER_HUB_DOMAIN = "docker.io";

export interface ImageReference {
  /** Registry host, with its port when it has one (`docker.io`, `127.0.0.1:5000`, `[::1]:5000`). */
  domain: string;
  /** Repository path inside the registry (`library/busybox`, `team/app`). */
  path: string;
  /** The tag, if any (`latest` when the reference named neither tag nor digest). */
  tag?: string;
  /** `algorithm:hex`, if the reference pins one. */
  digest?: string;
  /** The normalized reference: `domain/path[:tag][@digest]`, the name containerd stores the image under. */
  name: string;
}

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_NAME = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*$/;
const IPV6_DOMAIN = /^\[[0-9a-fA-F:.]+\]$/;
const PORT = /^[0-9]{1,5}$/;
const TAG = /^\w[\w.-]{0,127}$/;
const DIGEST = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;
const NAME_MAX_LENGTH = 255;

/** Parses and normalizes an image reference; ValidationError (field `image`) says what is wrong. */
export function parseImageReference(reference: string, field = "image"): ImageReference {
  const invalid = (why: string) => new ValidationError(field, `${JSON.stringify(reference)} is not a valid image reference: ${why}`);
  if (reference.length === 0) throw invalid("it is empty");
  if (reference !== reference.trim()) throw invalid("it has leading or trailing spaces");

  let rest = reference;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw invalid("the digest must be sha256:<64 hex digits> (or sha512:<128>)");
  }

  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw invalid(`the tag ${JSON.stringify(tag)} may hold only letters, digits, '_', '.' and '-' (at most 128)`);
  }

  const components = rest.split("/");
  let domain = DOCKER_HUB_DOMAIN;
  const first = components[0] ?? "";
  if (components.length > 1 && (first.includes(".") || first.includes(":") || first === "localhost")) {
    domain = first;
    components.shift();
    checkDomain(domain, invalid);
    if (domain === "index.docker.io") domain = DOCKER_HUB_DOMAIN;
  }
  if (domain === DOCKER_HUB_DOMAIN && components.length === 1) components.unshift("library");
  for (const component of components) {
    if (component === "") throw invalid("the repository has an empty path component");
    if (!PATH_COMPONENT.test(component)) {
      throw invalid(
        component.toLowerCase() !== component
          ? "the repository name must be lower-case"
          : `the repository path component ${JSON.stringify(component)} may hold only lower-case letters, digits and single separators (. _ __ -)`,
      );
    }
  }
  const path = components.join("/");
  if (`${domain}/${path}`.length > NAME_MAX_LENGTH) throw invalid(`the repository name is longer than ${NAME_MAX_LENGTH} characters`);
  if (tag === undefined && digest === undefined) tag = "latest";
  const name = `${domain}/${path}${tag !== undefined ? `:${tag}` : ""}${digest !== undefined ? `@${digest}` : ""}`;
  return { domain, path, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}), name };
}

/** The normalized name of a reference (`busybox` → `docker.io/library/busybox:latest`), or the text itself when it does not parse. */
export function normalizeImageName(reference: string): string {
  try {
    return parseImageReference(reference).name;
  } catch {
    return reference;
  }
}

/** Docker Hub's other host names; credentials filed under any of them are Docker Hub's. */
const DOCKER_HUB_ALIASES = new Set(["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"]);

/**
 * The registry host a credentials entry or a `fsb login` argument names, in the form image
 * references use: `https://index.docker.io/v1/` → `docker.io`, `HTTP://127.0.0.1:5000/` → `127.0.0.1:5000`.
 */
export function normalizeRegistryHost(text: string): string {
  const host = text
    .trim()
    .replace(/^[a-z][a-z0-9+.-]*:\/\//i, "")
    .replace(/\/.*$/, "")
    .toLowerCase();
  return DOCKER_HUB_ALIASES.has(host) ? DOCKER_HUB_DOMAIN : host;
}

function checkDomain(domain: string, invalid: (why: string) => ValidationError): void {
  let host = domain;
  let port: string | undefined;
  if (domain.startsWith("[")) {
    const close = domain.indexOf("]");
    host = domain.slice(0, close + 1);
    const after = domain.slice(close + 1);
    if (after !== "") {
      if (!after.startsWith(":")) throw invalid(`the registry ${JSON.stringify(domain)} is not host[:port]`);
      port = after.slice(1);
    }
    if (!IPV6_DOMAIN.test(host)) throw invalid(`the registry ${JSON.stringify(domain)} is not host[:port]`);
  } else {
    const colon = domain.indexOf(":");
    if (colon >= 0) {
      host = domain.slice(0, colon);
      port = domain.slice(colon + 1);
    }
    if (!DOMAIN_NAME.test(host)) throw invalid(`the registry ${JSON.stringify(domain)} is not host[:port]`);
  }
  if (port !== undefined && (!PORT.test(port) || Number(port) < 1 || Number(port) > 65535)) {
    throw invalid(`the registry port ${JSON.stringify(port)} is not a number from 1 to 65535`);
  }
}
