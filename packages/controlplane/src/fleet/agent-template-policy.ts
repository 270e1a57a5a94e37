/**
 * What a pool's `spec.agentTemplate` may set (Kubernetes mode; the controller's
 * FSB_AGENT_TEMPLATE_POLICY and FSB_AGENT_TEMPLATE_IMAGES). The agent Pod is privileged, with the
 * node's containerd and host directories mounted (agent-pod.ts), and a pool's template is merged
 * over the deployment's (mergePodTemplates: containers by name). Taken as written, the template lets
 * whoever may write a SandboxPool run anything as root on any node: another image or command in the
 * agent container, containers and init containers of their own, hostPath volumes,
 * hostPID/hostNetwork, any ServiceAccount or node, exec probes (run in the privileged container),
 * env the agent or Node.js obeys (NODE_OPTIONS, FSB_*).
 *
 * - `unrestricted`: the template is taken as written (for operators who trust every pool author).
 * - `restricted` (the default): only what cannot raise privilege —
 *   - metadata.labels and metadata.annotations, except the controller's own (`fast-sandbox.io/…`,
 *     `sandbox.fast.io/…`: the pool, template-hash and agent-token labels are read back from Pods);
 *   - spec.nodeSelector, affinity, tolerations, topologySpreadConstraints, priorityClassName
 *     (where and in what order the agents are scheduled), and imagePullSecrets (the kubelet uses
 *     them only to pull the Pod's images, which this policy already limits: a private mirror's
 *     credentials);
 *   - of the container named `agent` only: resources, imagePullPolicy, probes that use httpGet,
 *     tcpSocket or grpc without `host` (an exec probe runs as root in the privileged container; a
 *     host makes the kubelet call another address, as PodSecurity's baseline refuses), env
 *     HTTP_PROXY, HTTPS_PROXY and NO_PROXY (upper or lower case) with a plain value (no valueFrom,
 *     which reads Secrets, and no `$(VAR)`, which would copy another variable — the agent's token —
 *     to the proxy), and an `image` FSB_AGENT_TEMPLATE_IMAGES lists exactly (e.g. a mirror).
 *   Everything else is refused, fields this list does not know (new ones of later Kubernetes
 *   versions) included: harmless ones (hostname, dnsConfig, terminationGracePeriodSeconds) are not
 *   needed by a pool, and a short list is one an operator can check.
 *
 * Only the pool's template is judged, never the deployment's (FSB_AGENT_TEMPLATE_FILE: the operator's,
 * trusted). A refused field is refused whatever its value, null included: the merge puts a pool's null
 * over the deployment's value (`automountServiceAccountToken: null` would bring the token back). An
 * allowed field that is null is unset. An allowed list or map of another shape (env written as a map)
 * is a ValidationError: no Pod is built from it. Pure: no I/O.
 */
import { AGENT_CONTAINER_NAME, PermissionDeniedError, ValidationError } from "@fast-sandbox/api";

/** The values FSB_AGENT_TEMPLATE_POLICY may take. */
export const AGENT_TEMPLATE_POLICY_MODES = ["restricted", "unrestricted"] as const;
export type AgentTemplatePolicyMode = (typeof AGENT_TEMPLATE_POLICY_MODES)[number];

export interface AgentTemplatePolicy {
  mode: AgentTemplatePolicyMode;
  /** The images the agent container of a pool's template may name (FSB_AGENT_TEMPLATE_IMAGES), exactly as written there. @default none */
  allowedImages?: readonly string[];
}

/** The controller's policy when FSB_AGENT_TEMPLATE_POLICY is unset. */
export const DEFAULT_AGENT_TEMPLATE_POLICY: AgentTemplatePolicy = { mode: "restricted", allowedImages: [] };

/** The agent container's env a restricted pool may set: where its outbound HTTP goes (image pulls). */
export const TEMPLATE_PROXY_ENV = ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"] as const;

/** A pool's agentTemplate sets something the deployment's policy does not allow; `field` is its path. */
export class AgentTemplateNotAllowedError extends PermissionDeniedError {
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.field = field;
  }
}

/** What a restricted pool may set, said in every refusal. */
export const RESTRICTED_TEMPLATE_ALLOWS =
  "a pool may set metadata.labels and metadata.annotations (not fast-sandbox.io/ or sandbox.fast.io/ ones), spec.nodeSelector, affinity, tolerations, " +
  "topologySpreadConstraints, priorityClassName and imagePullSecrets, and of the container named agent only resources, imagePullPolicy, " +
  "probes using httpGet, tcpSocket or grpc without host, env HTTP_PROXY, HTTPS_PROXY and NO_PROXY (upper or lower case) with a plain value, " +
  "and an image FSB_AGENT_TEMPLATE_IMAGES lists";

const UNRESTRICT = "set FSB_AGENT_TEMPLATE_POLICY=unrestricted on the controller to allow it";

/** Domains of label and annotation keys the controller keeps for itself. */
const RESERVED_KEY_DOMAINS = ["fast-sandbox.io", "sandbox.fast.io"];
const POD_SPEC_FIELDS = new Set(["nodeSelector", "affinity", "tolerations", "topologySpreadConstraints", "priorityClassName", "imagePullSecrets"]);
const AGENT_CONTAINER_FIELDS = new Set(["name", "resources", "imagePullPolicy"]);
const PROBES = new Set(["readinessProbe", "livenessProbe", "startupProbe"]);
const PROBE_TIMING = new Set([
  "initialDelaySeconds",
  "periodSeconds",
  "timeoutSeconds",
  "successThreshold",
  "failureThreshold",
  "terminationGracePeriodSeconds",
]);
/** What each probe handler may hold: never `host`. */
const PROBE_HANDLERS = new Map([
  ["httpGet", new Set(["path", "port", "scheme", "httpHeaders"])],
  ["tcpSocket", new Set(["port"])],
  ["grpc", new Set(["port", "service"])],
]);

/**
 * Throws AgentTemplateNotAllowedError (a PermissionDeniedError) naming the first field of the pool's
 * `template` (at `field`) that `policy` does not allow, or a ValidationError for an allowed field of
 * the wrong shape; returns when the template is allowed (always under `unrestricted`).
 */
export function checkAgentTemplatePolicy(template: unknown, policy: AgentTemplatePolicy, field = "spec.agentTemplate"): void {
  if (policy.mode === "unrestricted" || template === undefined || template === null) return;
  const check = new RestrictedCheck(policy);
  const root = check.map(template, field);
  for (const key of setKeys(root)) {
    if (key === "metadata") check.metadata(root.metadata, `${field}.metadata`);
    else if (key === "spec") check.spec(root.spec, `${field}.spec`);
    else check.refuse(`${field}.${key}`);
  }
}

/** The keys a map sets (undefined is not set; null is: see the header). */
function setKeys(map: Record<string, unknown>): string[] {
  return Object.keys(map).filter((key) => map[key] !== undefined);
}

function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Whether a label or annotation key is in one of the controller's domains (`<domain>/…` or a subdomain's). */
function isReservedKey(key: string): boolean {
  const slash = key.indexOf("/");
  if (slash < 0) return false;
  const domain = key.slice(0, slash).toLowerCase();
  return RESERVED_KEY_DOMAINS.some((reserved) => domain === reserved || domain.endsWith(`.${reserved}`));
}

class RestrictedCheck {
  constructor(private readonly policy: AgentTemplatePolicy) {}

  /** Refuses `field` (`detail` says what it is: a container's name, an image), saying what `allows` and how to allow it. */
  refuse(
    field: string,
    { detail, allows = RESTRICTED_TEMPLATE_ALLOWS, remedy = UNRESTRICT }: { detail?: string; allows?: string; remedy?: string } = {},
  ): never {
    const subject = detail === undefined ? field : `${field} ${detail}`;
    throw new AgentTemplateNotAllowedError(field, `${subject} is not allowed by the deployment's agent template policy (restricted): ${allows}; ${remedy}`);
  }

  /** The map at `field`; a ValidationError when it is something else. */
  map(value: unknown, field: string): Record<string, unknown> {
    if (!isMap(value)) throw new ValidationError(field, `must be a map, not ${JSON.stringify(value)}`);
    return value;
  }

  /** The maps of the list at `field` (none when null); a ValidationError when it or an entry is something else. */
  maps(value: unknown, field: string): Record<string, unknown>[] {
    if (value === null) return [];
    if (!Array.isArray(value)) throw new ValidationError(field, `must be a list, not ${JSON.stringify(value)}`);
    return value.map((item: unknown, index) => this.map(item, `${field}[${index}]`));
  }

  metadata(value: unknown, field: string): void {
    if (value === null) return;
    const metadata = this.map(value, field);
    for (const key of setKeys(metadata)) {
      if (key !== "labels" && key !== "annotations") this.refuse(`${field}.${key}`);
      if (metadata[key] === null) continue;
      for (const name of Object.keys(this.map(metadata[key], `${field}.${key}`))) {
        if (isReservedKey(name)) {
          this.refuse(`${field}.${key}[${JSON.stringify(name)}]`, {
            allows: "the fast-sandbox.io/ and sandbox.fast.io/ labels and annotations are the controller's (it reads them back from its agent Pods)",
          });
        }
      }
    }
  }

  spec(value: unknown, field: string): void {
    if (value === null) return;
    const spec = this.map(value, field);
    for (const key of setKeys(spec)) {
      if (POD_SPEC_FIELDS.has(key)) continue;
      if (key !== "containers") this.refuse(`${field}.${key}`);
      this.maps(spec.containers, `${field}.containers`).forEach((container, index) => {
        const at = `${field}.containers[${index}]`;
        // Only the agent's own container, by its name: another would be a container of the pool's choosing.
        if (container.name !== AGENT_CONTAINER_NAME)
          this.refuse(at, { detail: `(${container.name === undefined ? "no name" : `name ${JSON.stringify(container.name)}`})` });
        this.agentContainer(container, at);
      });
    }
  }

  agentContainer(container: Record<string, unknown>, field: string): void {
    for (const key of setKeys(container)) {
      const value = container[key];
      if (AGENT_CONTAINER_FIELDS.has(key)) continue;
      if (key === "image") this.image(value, `${field}.image`);
      else if (PROBES.has(key)) this.probe(value, `${field}.${key}`);
      else if (key === "env") this.env(value, `${field}.env`);
      else this.refuse(`${field}.${key}`);
    }
  }

  image(value: unknown, field: string): void {
    // Unset: the deployment's image.
    if (value === null) return;
    const allowed = this.policy.allowedImages ?? [];
    if (typeof value === "string" && allowed.includes(value)) return;
    this.refuse(field, {
      detail: JSON.stringify(value),
      allows: `the agent container may name only an image the controller's FSB_AGENT_TEMPLATE_IMAGES lists exactly (${allowed.length === 0 ? "it lists none" : `it lists ${allowed.join(", ")}`})`,
      remedy: "list it there, or set FSB_AGENT_TEMPLATE_POLICY=unrestricted on the controller to allow any image",
    });
  }

  probe(value: unknown, field: string): void {
    if (value === null) return;
    const probe = this.map(value, field);
    const allows = "a probe may use httpGet, tcpSocket or grpc (without host) and set its timing";
    for (const key of setKeys(probe)) {
      if (PROBE_TIMING.has(key)) continue;
      const handler = PROBE_HANDLERS.get(key);
      if (!handler) this.refuse(`${field}.${key}`, { allows });
      if (probe[key] === null) continue;
      for (const inner of setKeys(this.map(probe[key], `${field}.${key}`))) {
        if (!handler.has(inner)) this.refuse(`${field}.${key}.${inner}`, { allows });
      }
    }
  }

  env(value: unknown, field: string): void {
    const allows = "the agent container's env may set only HTTP_PROXY, HTTPS_PROXY and NO_PROXY (upper or lower case), each with a plain value";
    this.maps(value, field).forEach((variable, index) => {
      const at = `${field}[${index}]`;
      const { name } = variable;
      if (typeof name !== "string" || !(TEMPLATE_PROXY_ENV as readonly string[]).includes(name)) {
        this.refuse(at, { detail: `(${typeof name === "string" ? name : "no name"})`, allows });
      }
      for (const key of setKeys(variable)) {
        if (key !== "name" && key !== "value") this.refuse(`${at}.${key}`, { allows });
      }
      const text = variable.value;
      if (text === undefined || text === null) return;
      if (typeof text !== "string") throw new ValidationError(`${at}.value`, `must be a string, not ${JSON.stringify(text)}`);
      // Kubernetes expands $(NAME) from the variables before it: FSB_AGENT_TOKEN among them.
      if (text.includes("$(")) this.refuse(`${at}.value`, { allows: `${allows}: a $(VAR) reference would copy another variable into it` });
    });
  }
}
