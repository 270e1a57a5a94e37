// Fake kubelet: a test-only node agent. It registers a Node, keeps its Lease
// and status fresh, watches the Pods bound to it and runs their containers as
// local processes through an explicit image -> command mapping. Each Pod gets
// its own loopback IP (127.0.0.N). See README.md for what it does not emulate.
//
//   node --import tsx fake-kubelet.ts --state-dir DIR --node NAME --server URL
//     --ca CA --cert CERT --key KEY --image-map images.json [--apiserver-port N]
//     [--cpu 8] [--memory 32Gi] [--max-pods 110]
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import http from "node:http";
import https from "node:https";
import path from "node:path";
import { parseArgs } from "node:util";
import { KubeClient, KubeError, type KObj, type WatchEvent } from "./kube-client.js";

const { values: opts } = parseArgs({
  options: {
    "state-dir": { type: "string" },
    node: { type: "string", default: "fsb-node-0" },
    server: { type: "string" },
    ca: { type: "string" },
    cert: { type: "string" },
    key: { type: "string" },
    token: { type: "string" },
    "image-map": { type: "string" },
    "apiserver-port": { type: "string" },
    cpu: { type: "string", default: "8" },
    memory: { type: "string", default: "32Gi" },
    "max-pods": { type: "string", default: "110" },
    "kubelet-version": { type: "string" },
  },
});

function required(name: keyof typeof opts): string {
  const v = opts[name];
  if (typeof v !== "string" || !v) throw new Error(`fake-kubelet: --${name} is required`);
  return v;
}

const NODE = required("node");
const STATE = required("state-dir");
const IMAGE_MAP_FILE = path.resolve(required("image-map"));
const SERVER = required("server");
const APISERVER_PORT = opts["apiserver-port"] ?? new URL(SERVER).port;
const KUBELET_DIR = path.join(STATE, "kubelet", NODE);
const PODS_DIR = path.join(KUBELET_DIR, "pods");
// Pod IPs are allocated machine-wide (two clusters on one machine must not hand out the
// same 127.0.0.N): one dir per IP, naming the state dir that owns it.
const IPS_DIR = process.env.FSB_IP_POOL_DIR ?? path.join(os.tmpdir(), "fsb-loopback-ips");
const VERSION = opts["kubelet-version"] ?? "v0.0.0-fsb-fake-kubelet";

const client = new KubeClient({
  server: SERVER,
  ca: required("ca"),
  cert: opts.cert,
  key: opts.key,
  token: opts.token,
});

const log = (...a: unknown[]): void => console.log(new Date().toISOString(), `[${NODE}]`, ...a);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const now = (): string => new Date().toISOString().replace(/\.\d+Z$/, "Z");
const nowMicro = (): string => new Date().toISOString().replace(/Z$/, "000Z");

// ------------------------------------------------------------------ image map

interface ImageEntry {
  /** The image's ENTRYPOINT: replaced by a container's `command`. Relative paths resolve against the map file's dir. */
  command: string[];
  /** The image's CMD: replaced by a container's `args`. */
  args?: string[];
  /** Default working dir, relative to `baseDir` (which is also the default). */
  workingDir?: string;
  env?: Record<string, string>;
}
interface ImageMap {
  /** Directory that relative paths in commands/workingDir resolve against; relative to the map file. */
  baseDir?: string;
  images: Record<string, ImageEntry>;
}

function loadImageMap(): {
  baseDir: string;
  images: Record<string, ImageEntry>;
} {
  const raw = JSON.parse(readFileSync(IMAGE_MAP_FILE, "utf8")) as ImageMap;
  return {
    baseDir: path.resolve(path.dirname(IMAGE_MAP_FILE), raw.baseDir ?? "."),
    images: raw.images ?? {},
  };
}

function lookupImage(image: string): { baseDir: string; entry: ImageEntry } | undefined {
  const map = loadImageMap(); // re-read on each use: tests may edit it
  const entry = map.images[image] ?? map.images[image.replace(/:[^/:]+$/, "")];
  return entry ? { baseDir: map.baseDir, entry } : undefined;
}

// ------------------------------------------------------------------ IPs

function allocateIP(uid: string): string {
  mkdirSync(IPS_DIR, { recursive: true });
  for (let b = 0; b < 256; b++) {
    for (let c = b === 0 ? 2 : 1; c < 255; c++) {
      const ip = `127.0.${b}.${c}`;
      const dir = path.join(IPS_DIR, ip);
      for (let attempt = 0; attempt < 2; attempt++) {
        try {
          mkdirSync(dir);
          writeFileSync(path.join(dir, "owner"), JSON.stringify({ stateDir: STATE, node: NODE, uid }));
          return ip;
        } catch {
          // Taken. Reclaim it when its owner's state dir is gone (a run that crashed).
          let owner: { stateDir?: string } = {};
          try {
            owner = JSON.parse(readFileSync(path.join(dir, "owner"), "utf8")) as { stateDir?: string };
          } catch {
            /* being written, or a stale empty dir */
          }
          if (owner.stateDir && !existsSync(owner.stateDir)) rmSync(dir, { recursive: true, force: true });
          else break;
        }
      }
    }
  }
  throw new Error("no free loopback IP");
}

function releaseIP(ip: string | undefined, uid: string): void {
  if (!ip || ip === "127.0.0.1") return;
  const dir = path.join(IPS_DIR, ip);
  try {
    const owner = JSON.parse(readFileSync(path.join(dir, "owner"), "utf8")) as {
      stateDir?: string;
      uid?: string;
    };
    if (owner.stateDir !== STATE || owner.uid !== uid) return; // not ours (any more)
  } catch {
    return;
  }
  rmSync(dir, { recursive: true, force: true });
}

// ------------------------------------------------------------------ node

async function registerNode(): Promise<void> {
  const node = {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name: NODE,
      labels: {
        "kubernetes.io/hostname": NODE,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": process.arch === "x64" ? "amd64" : process.arch,
        "fast-sandbox.io/fake-kubelet": "true",
      },
    },
    spec: {},
    status: nodeStatus(),
  };
  for (;;) {
    try {
      await client.post("/api/v1/nodes", node);
      log("registered node");
      return;
    } catch (err) {
      if (err instanceof KubeError && err.status === 409) {
        await client.mergePatch(`/api/v1/nodes/${NODE}/status`, {
          status: nodeStatus(),
        });
        log("node existed; status updated");
        return;
      }
      log("node registration failed, retrying:", (err as Error).message);
      await sleep(1000);
    }
  }
}

function nodeStatus(): KObj {
  const t = now();
  const cond = (type: string, status: string, reason: string, message: string): KObj => ({
    type,
    status,
    reason,
    message,
    lastHeartbeatTime: t,
    lastTransitionTime: startedAt,
  });
  const capacity = {
    cpu: opts.cpu,
    memory: opts.memory,
    pods: opts["max-pods"],
    "ephemeral-storage": "100Gi",
  };
  return {
    capacity,
    allocatable: capacity,
    conditions: [
      cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "fake kubelet"),
      cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "fake kubelet"),
      cond("PIDPressure", "False", "KubeletHasSufficientPID", "fake kubelet"),
      cond("Ready", "True", "KubeletReady", "fake kubelet is posting ready status"),
    ],
    addresses: [
      { type: "InternalIP", address: "127.0.0.1" },
      { type: "Hostname", address: NODE },
    ],
    daemonEndpoints: { kubeletEndpoint: { Port: 0 } },
    nodeInfo: {
      machineID: NODE,
      systemUUID: NODE,
      bootID: bootID,
      kernelVersion: "",
      osImage: "fast-sandbox fake kubelet",
      containerRuntimeVersion: "fsb-local-process://0",
      kubeletVersion: VERSION,
      kubeProxyVersion: "",
      operatingSystem: "linux",
      architecture: process.arch === "x64" ? "amd64" : process.arch,
    },
  };
}
const startedAt = now();
const bootID = `${process.pid}-${Date.now()}`;

async function renewLease(): Promise<void> {
  const p = `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${NODE}`;
  const spec = {
    holderIdentity: NODE,
    leaseDurationSeconds: 40,
    renewTime: nowMicro(),
  };
  try {
    await client.mergePatch(p, { spec });
  } catch (err) {
    if (err instanceof KubeError && err.status === 404) {
      const nodeObj = await client.get(`/api/v1/nodes/${NODE}`);
      await client.post("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: {
          name: NODE,
          namespace: "kube-node-lease",
          ownerReferences: [
            {
              apiVersion: "v1",
              kind: "Node",
              name: NODE,
              uid: nodeObj.metadata.uid,
            },
          ],
        },
        spec,
      });
    } else throw err;
  }
}

async function heartbeatLoop(signal: AbortSignal): Promise<void> {
  let n = 0;
  while (!signal.aborted) {
    try {
      await renewLease();
      if (n % 3 === 0)
        await client.mergePatch(`/api/v1/nodes/${NODE}/status`, {
          status: nodeStatus(),
        });
    } catch (err) {
      if (err instanceof KubeError && err.status === 404 && (err.message.includes("nodes") || err.message.includes("node"))) {
        await registerNode().catch(() => undefined);
      }
      log("heartbeat failed:", (err as Error).message);
    }
    n++;
    await sleep(10_000);
  }
}

async function event(pod: KObj, type: "Normal" | "Warning", reason: string, message: string, fieldPath?: string): Promise<void> {
  const ns = pod.metadata.namespace;
  try {
    await client.post(`/api/v1/namespaces/${ns}/events`, {
      apiVersion: "v1",
      kind: "Event",
      metadata: { generateName: `${pod.metadata.name}.`, namespace: ns },
      involvedObject: {
        apiVersion: "v1",
        kind: "Pod",
        name: pod.metadata.name,
        namespace: ns,
        uid: pod.metadata.uid,
        fieldPath,
      },
      reason,
      message,
      type,
      source: { component: "kubelet", host: NODE },
      reportingComponent: "kubelet",
      reportingInstance: NODE,
      firstTimestamp: now(),
      lastTimestamp: now(),
      count: 1,
    });
  } catch (err) {
    log("event failed:", (err as Error).message);
  }
}

// ------------------------------------------------------------------ pods

type ContainerState =
  | { waiting: { reason: string; message?: string } }
  | { running: { startedAt: string } }
  | {
      terminated: {
        exitCode: number;
        signal?: number;
        reason: string;
        message?: string;
        startedAt: string;
        finishedAt: string;
      };
    };

interface Probe {
  spec: KObj;
  successes: number;
  failures: number;
  result: boolean;
  timer?: NodeJS.Timeout;
}

class Container {
  proc?: ChildProcess;
  state: ContainerState = { waiting: { reason: "ContainerCreating" } };
  lastState: ContainerState | Record<string, never> = {};
  restartCount = 0;
  ready = false;
  started = false;
  startedAtMs = 0;
  exitWaiters: (() => void)[] = [];
  /** True from runContainer() until the run ends (process exit, or failing to start). */
  active = false;
  probes: { readiness?: Probe; liveness?: Probe; startup?: Probe } = {};
  stopping = false;
  backoffTimer?: NodeJS.Timeout;
  id = "";

  constructor(
    readonly pod: PodRunner,
    readonly spec: KObj,
    readonly init: boolean,
  ) {}

  get name(): string {
    return this.spec.name as string;
  }

  status(): KObj {
    return {
      name: this.name,
      image: this.spec.image,
      imageID: `fsb-local://${this.spec.image}`,
      ...(this.id ? { containerID: this.id } : {}),
      ready: this.ready,
      started: this.started,
      restartCount: this.restartCount,
      state: this.state,
      lastState: this.lastState,
    };
  }

  exited(): Promise<void> {
    if (!this.active) return Promise.resolve();
    return new Promise((r) => this.exitWaiters.push(r));
  }

  /** The run ended: wake whoever waits on exited(). */
  finish(): void {
    this.active = false;
    for (const w of this.exitWaiters.splice(0)) w();
  }

  clearProbes(): void {
    for (const p of Object.values(this.probes)) if (p?.timer) clearTimeout(p.timer);
    this.probes = {};
  }
}

const pods = new Map<string, PodRunner>();
/** Set on a Pod (its value the message), the Pod is evicted: its containers stopped, the Pod left Failed (Evicted). */
const EVICT_ANNOTATION = "fake-kubelet.fast-sandbox.io/evict";

class PodRunner {
  pod: KObj;
  ip = "";
  dir: string;
  containers: Container[] = [];
  initContainers: Container[] = [];
  phase = "Pending";
  initialized = false;
  terminating = false;
  finished = false;
  startTime = now();
  statusDirty = false;
  statusInFlight = false;
  failedMessage = "";
  failedReason = "";

  constructor(pod: KObj) {
    this.pod = pod;
    const m = pod.metadata;
    this.dir = path.join(PODS_DIR, `${m.namespace}_${m.name}_${m.uid}`);
    this.initContainers = (pod.spec.initContainers ?? []).map((c: KObj) => new Container(this, c, true));
    this.containers = (pod.spec.containers ?? []).map((c: KObj) => new Container(this, c, false));
  }

  get key(): string {
    return `${this.pod.metadata.namespace}/${this.pod.metadata.name}`;
  }

  async start(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    this.ip = this.pod.spec.hostNetwork ? "127.0.0.1" : allocateIP(this.pod.metadata.uid);
    writeFileSync(
      path.join(this.dir, "pod.json"),
      JSON.stringify({
        ip: this.ip,
        key: this.key,
        uid: this.pod.metadata.uid,
      }),
    );
    log(`pod ${this.key} assigned ${this.ip}`);
    this.updateStatus();
    try {
      await this.prepareVolumes();
    } catch (err) {
      const msg = `volume setup failed: ${(err as Error).message}`;
      log(`pod ${this.key}: ${msg}`);
      for (const c of [...this.initContainers, ...this.containers]) c.state = { waiting: { reason: "ContainerCreating", message: msg } };
      void event(this.pod, "Warning", "FailedMount", msg);
      this.updateStatus();
      // Retry later unless the pod is going away.
      setTimeout(() => {
        if (!this.terminating) void this.start();
      }, 5000);
      return;
    }
    for (const c of this.initContainers) {
      if (this.terminating) return;
      const ok = await this.runInitContainer(c);
      if (!ok) return;
    }
    this.initialized = true;
    if (this.terminating) return;
    for (const c of this.containers) this.runContainer(c);
    this.updateStatus();
  }

  private async runInitContainer(c: Container): Promise<boolean> {
    for (;;) {
      this.runContainer(c);
      await c.exited();
      const t = "terminated" in c.state ? c.state.terminated : undefined;
      if (t && t.exitCode === 0) return true;
      if (this.terminating) return false;
      if ("waiting" in c.state) {
        // Never started: unmapped image stays visible; a config error is retried.
        if (c.state.waiting.reason === "ErrImageNeverPull") return false;
        await sleep(5000);
        continue;
      }
      if (this.pod.spec.restartPolicy === "Never") {
        this.phase = "Failed";
        this.finished = true;
        this.updateStatus();
        return false;
      }
      // runContainer schedules nothing for init containers; retry with backoff here.
      c.restartCount++;
      const delay = backoff(c.restartCount);
      c.lastState = c.state;
      c.state = {
        waiting: {
          reason: "CrashLoopBackOff",
          message: `back-off ${delay / 1000}s restarting failed container`,
        },
      };
      this.updateStatus();
      await sleep(delay);
      if (this.terminating) return false;
    }
  }

  // ---------------------------------------------------------------- volumes

  volumeDir(name: string): string {
    return path.join(this.dir, "volumes", name);
  }

  private async prepareVolumes(): Promise<void> {
    const ns = this.pod.metadata.namespace;
    for (const v of (this.pod.spec.volumes ?? []) as KObj[]) {
      const dir = this.volumeDir(v.name);
      if (v.hostPath) continue; // resolved to the host path itself
      mkdirSync(dir, { recursive: true });
      if (v.emptyDir) continue;
      const files: Record<string, string | Buffer> = {};
      if (v.configMap) Object.assign(files, await this.configMapFiles(ns, v.configMap));
      if (v.secret) Object.assign(files, await this.secretFiles(ns, v.secret));
      if (v.downwardAPI) Object.assign(files, this.downwardFiles(v.downwardAPI.items ?? []));
      if (v.projected) {
        for (const s of (v.projected.sources ?? []) as KObj[]) {
          if (s.configMap) Object.assign(files, await this.configMapFiles(ns, s.configMap));
          if (s.secret)
            Object.assign(
              files,
              await this.secretFiles(ns, {
                ...s.secret,
                secretName: s.secret.name,
              }),
            );
          if (s.downwardAPI) Object.assign(files, this.downwardFiles(s.downwardAPI.items ?? []));
          if (s.serviceAccountToken) files[s.serviceAccountToken.path] = await this.token(s.serviceAccountToken);
        }
      }
      for (const [rel, content] of Object.entries(files)) {
        const f = path.join(dir, rel);
        mkdirSync(path.dirname(f), { recursive: true });
        writeFileSync(f, content);
      }
    }
  }

  private async configMapFiles(ns: string, ref: KObj): Promise<Record<string, string | Buffer>> {
    let cm: KObj;
    try {
      cm = await client.get(`/api/v1/namespaces/${ns}/configmaps/${ref.name}`);
    } catch (err) {
      if (ref.optional && err instanceof KubeError && err.status === 404) return {};
      throw err;
    }
    const all: Record<string, string | Buffer> = { ...(cm.data ?? {}) };
    for (const [k, v] of Object.entries((cm.binaryData ?? {}) as Record<string, string>)) all[k] = Buffer.from(v, "base64");
    return pickItems(all, ref.items);
  }

  private async secretFiles(ns: string, ref: KObj): Promise<Record<string, string | Buffer>> {
    let s: KObj;
    try {
      s = await client.get(`/api/v1/namespaces/${ns}/secrets/${ref.secretName}`);
    } catch (err) {
      if (ref.optional && err instanceof KubeError && err.status === 404) return {};
      throw err;
    }
    const all: Record<string, string | Buffer> = {};
    for (const [k, v] of Object.entries((s.data ?? {}) as Record<string, string>)) all[k] = Buffer.from(v, "base64");
    return pickItems(all, ref.items);
  }

  private downwardFiles(items: KObj[]): Record<string, string> {
    const out: Record<string, string> = {};
    for (const it of items) {
      if (it.fieldRef) out[it.path] = this.fieldRef(it.fieldRef.fieldPath);
      else if (it.resourceFieldRef) out[it.path] = this.resourceFieldRef(it.resourceFieldRef);
    }
    return out;
  }

  private async token(spec: KObj): Promise<string> {
    const m = this.pod.metadata;
    const sa = this.pod.spec.serviceAccountName ?? "default";
    const res = await client.post(`/api/v1/namespaces/${m.namespace}/serviceaccounts/${sa}/token`, {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenRequest",
      spec: {
        audiences: spec.audience ? [spec.audience] : null,
        expirationSeconds: spec.expirationSeconds ?? 3607,
        boundObjectRef: {
          apiVersion: "v1",
          kind: "Pod",
          name: m.name,
          uid: m.uid,
        },
      },
    });
    return res.status.token as string;
  }

  // ---------------------------------------------------------------- env

  fieldRef(fieldPath: string): string {
    const p = this.pod;
    const mLabel = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
    if (mLabel) return (p.metadata[mLabel[1]!] ?? {})[mLabel[2]!] ?? "";
    switch (fieldPath) {
      case "metadata.name":
        return p.metadata.name;
      case "metadata.namespace":
        return p.metadata.namespace;
      case "metadata.uid":
        return p.metadata.uid;
      case "metadata.labels":
      case "metadata.annotations":
        return Object.entries((p.metadata[fieldPath.split(".")[1]!] ?? {}) as Record<string, string>)
          .map(([k, v]) => `${k}="${v}"`)
          .join("\n");
      case "spec.nodeName":
        return NODE;
      case "spec.serviceAccountName":
        return p.spec.serviceAccountName ?? "default";
      case "status.podIP":
      case "status.podIPs":
        return this.ip;
      case "status.hostIP":
      case "status.hostIPs":
        return "127.0.0.1";
      default:
        throw new Error(`unsupported fieldRef ${fieldPath}`);
    }
  }

  resourceFieldRef(ref: KObj, container?: KObj): string {
    const c = container && !ref.containerName ? container : ((this.pod.spec.containers as KObj[]).find((x) => x.name === ref.containerName) ?? container ?? {});
    const [kind, res] = (ref.resource as string).split(".") as [string, string];
    const raw: string | undefined = c.resources?.[kind]?.[res] ?? (kind === "requests" ? c.resources?.limits?.[res] : undefined);
    const divisor = parseQuantity(ref.divisor ?? "1");
    if (raw === undefined) {
      // Without a limit, the node's allocatable is used, like the real kubelet.
      const alloc = res === "cpu" ? opts.cpu : res === "memory" ? opts.memory : "0";
      return String(Math.ceil(parseQuantity(alloc) / divisor));
    }
    return String(Math.ceil(parseQuantity(raw) / divisor));
  }

  async envFor(c: KObj): Promise<Record<string, string>> {
    const ns = this.pod.metadata.namespace;
    const env: Record<string, string> = {};
    const expand = (s: string): string => expandVars(s, env);
    for (const from of (c.envFrom ?? []) as KObj[]) {
      const prefix = from.prefix ?? "";
      if (from.configMapRef) {
        const files = await this.configMapFiles(ns, from.configMapRef);
        for (const [k, v] of Object.entries(files)) env[prefix + k] = v.toString();
      }
      if (from.secretRef) {
        const files = await this.secretFiles(ns, {
          ...from.secretRef,
          secretName: from.secretRef.name,
        });
        for (const [k, v] of Object.entries(files)) env[prefix + k] = v.toString();
      }
    }
    for (const e of (c.env ?? []) as KObj[]) {
      if (e.value !== undefined) env[e.name] = expand(e.value);
      else if (e.valueFrom?.fieldRef) env[e.name] = this.fieldRef(e.valueFrom.fieldRef.fieldPath);
      else if (e.valueFrom?.resourceFieldRef) env[e.name] = this.resourceFieldRef(e.valueFrom.resourceFieldRef, c);
      else if (e.valueFrom?.configMapKeyRef) {
        const r = e.valueFrom.configMapKeyRef;
        const files = await this.configMapFiles(ns, {
          name: r.name,
          optional: r.optional,
        });
        if (files[r.key] !== undefined) env[e.name] = files[r.key]!.toString();
        else if (!r.optional) throw new Error(`configmap ${r.name} has no key ${r.key}`);
      } else if (e.valueFrom?.secretKeyRef) {
        const r = e.valueFrom.secretKeyRef;
        const files = await this.secretFiles(ns, {
          secretName: r.name,
          optional: r.optional,
        });
        if (files[r.key] !== undefined) env[e.name] = files[r.key]!.toString();
        else if (!r.optional) throw new Error(`secret ${r.name} has no key ${r.key}`);
      } else env[e.name] = "";
    }
    return env;
  }

  // ---------------------------------------------------------------- containers

  runContainer(c: Container): void {
    c.active = true;
    void this.runContainerAsync(c).then(
      (spawned) => {
        if (!spawned) c.finish();
      },
      (err: Error) => {
        log(`pod ${this.key} container ${c.name}: ${err.message}`);
        c.state = {
          waiting: {
            reason: "CreateContainerConfigError",
            message: err.message,
          },
        };
        void event(this.pod, "Warning", "Failed", `Error: ${err.message}`, `spec.containers{${c.name}}`);
        this.updateStatus();
        c.finish();
        // Like the kubelet, try again later (the missing ConfigMap/Secret may appear).
        if (!c.init) {
          c.backoffTimer = setTimeout(() => {
            c.backoffTimer = undefined;
            if (!this.terminating) this.runContainer(c);
          }, 5000);
        }
      },
    );
  }

  /** Resolves true when a process was spawned (its exit calls c.finish()). */
  private async runContainerAsync(c: Container): Promise<boolean> {
    if (this.terminating) return false;
    const image: string = c.spec.image;
    const found = lookupImage(image);
    if (!found) {
      const message = `image "${image}" is not mapped to a local command in ${IMAGE_MAP_FILE} (fake kubelet runs only mapped images)`;
      c.state = { waiting: { reason: "ErrImageNeverPull", message } };
      log(`pod ${this.key}: ${message}`);
      void event(this.pod, "Warning", "ErrImageNeverPull", message, `spec.containers{${c.name}}`);
      this.updateStatus();
      return false; // stays waiting; the pod never becomes ready
    }
    const { baseDir, entry } = found;
    const podEnv = await this.envFor(c.spec);
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
      HOME: process.env.HOME ?? "/root",
      HOSTNAME: this.pod.spec.hostname ?? this.pod.metadata.name,
      POD_IP: this.ip,
      POD_NAME: this.pod.metadata.name,
      POD_NAMESPACE: this.pod.metadata.namespace,
      NODE_NAME: NODE,
      KUBERNETES_SERVICE_HOST: "127.0.0.1",
      KUBERNETES_SERVICE_PORT: String(APISERVER_PORT),
      KUBERNETES_SERVICE_PORT_HTTPS: String(APISERVER_PORT),
      FSB_FAKE_KUBELET: "1",
      FSB_VOLUME_MOUNTS: JSON.stringify(this.mountsFor(c.spec)),
      ...(entry.env ?? {}),
      ...podEnv,
    };
    const expand = (s: string): string => expandVars(s, env);
    // Relative file paths in the mapping resolve against its baseDir.
    const fromMap = (a: string): string => (!path.isAbsolute(a) && existsSync(path.join(baseDir, a)) ? path.join(baseDir, a) : a);
    const entrypoint = entry.command.map(fromMap);
    const argv: string[] = c.spec.command
      ? [...(c.spec.command as string[]).map(expand), ...((c.spec.args ?? []) as string[]).map(expand)]
      : [...entrypoint, ...(c.spec.args ? (c.spec.args as string[]).map(expand) : (entry.args ?? []).map(fromMap))];
    let cwd = baseDir;
    if (c.spec.workingDir) {
      cwd = this.translatePath(c.spec, c.spec.workingDir);
      // No image filesystem: a workingDir that is neither under a volume nor on the host lives in the pod dir.
      if (!existsSync(cwd)) {
        cwd = path.join(this.dir, "rootfs", c.spec.workingDir);
        mkdirSync(cwd, { recursive: true });
      }
    } else if (entry.workingDir) cwd = path.resolve(baseDir, entry.workingDir);
    const logFile = path.join(this.dir, `${c.name}.log`);
    const out = createWriteStream(logFile, { flags: "a" });
    await new Promise((r) => out.once("open", r));
    if (this.terminating) {
      out.end();
      return false;
    }
    const [cmd, ...args] = argv;
    const proc = spawn(cmd!, args, {
      cwd,
      env,
      detached: true,
      stdio: ["ignore", out, out],
    });
    c.proc = proc;
    c.stopping = false;
    c.id = `fsb-local://${proc.pid ?? 0}`;
    const startedAt = now();
    c.startedAtMs = Date.now();
    if (proc.pid) writeFileSync(path.join(this.dir, `${c.name}.pgid`), String(proc.pid));
    c.state = { running: { startedAt } };
    c.started = !c.spec.startupProbe;
    c.ready = !c.init && !c.spec.readinessProbe && c.started;
    log(`pod ${this.key} container ${c.name} started pid ${proc.pid}: ${argv.join(" ")}`);
    void event(this.pod, "Normal", "Started", `Started container ${c.name} (pid ${proc.pid})`, `spec.containers{${c.name}}`);
    this.updateStatus();
    if (!c.init) this.startProbes(c);

    let spawnError: Error | undefined;
    proc.on("error", (err) => {
      spawnError = err;
    });
    proc.on("close", (code, signal) => {
      out.end();
      rmSync(path.join(this.dir, `${c.name}.pgid`), { force: true });
      // Kill whatever the process left in its group.
      if (proc.pid) {
        try {
          process.kill(-proc.pid, "SIGKILL");
        } catch {
          /* gone */
        }
      }
      c.clearProbes();
      c.proc = undefined;
      c.ready = false;
      const exitCode = code ?? (signal ? 128 + (signalNumber(signal) ?? 0) : 1);
      c.state = {
        terminated: {
          exitCode: spawnError ? 128 : exitCode,
          ...(signal ? { signal: signalNumber(signal) ?? 0 } : {}),
          reason: spawnError ? "StartError" : exitCode === 0 ? "Completed" : "Error",
          ...(spawnError ? { message: spawnError.message } : {}),
          startedAt,
          finishedAt: now(),
        },
      };
      log(`pod ${this.key} container ${c.name} exited code=${code} signal=${signal}`);
      if (!c.init) this.afterExit(c, exitCode);
      this.updateStatus();
      c.finish();
    });
    return true;
  }

  /** Maps a mountPath-relative path to the host dir of that volume, when under a mount. */
  translatePath(cspec: KObj, p: string): string {
    const mounts = this.mountsFor(cspec);
    const best = Object.keys(mounts)
      .filter((m) => p === m || p.startsWith(m.endsWith("/") ? m : `${m}/`))
      .sort((a, b) => b.length - a.length)[0];
    return best ? path.join(mounts[best]!, p.slice(best.length)) : p;
  }

  mountsFor(cspec: KObj): Record<string, string> {
    const out: Record<string, string> = {};
    for (const m of (cspec.volumeMounts ?? []) as KObj[]) {
      const v = ((this.pod.spec.volumes ?? []) as KObj[]).find((x) => x.name === m.name);
      if (!v) continue;
      const base = v.hostPath ? v.hostPath.path : this.volumeDir(v.name);
      out[m.mountPath] = m.subPath ? path.join(base, m.subPath) : base;
    }
    return out;
  }

  private afterExit(c: Container, exitCode: number): void {
    if (this.terminating || c.stopping) return;
    const policy = this.pod.spec.restartPolicy ?? "Always";
    const restart = policy === "Always" || (policy === "OnFailure" && exitCode !== 0);
    if (restart) {
      c.lastState = c.state;
      c.restartCount++;
      const delay = backoff(c.restartCount);
      c.state = {
        waiting: {
          reason: "CrashLoopBackOff",
          message: `back-off ${delay / 1000}s restarting failed container=${c.name} pod=${this.pod.metadata.name}`,
        },
      };
      if (exitCode !== 0) void event(this.pod, "Warning", "BackOff", `Back-off restarting failed container ${c.name}`, `spec.containers{${c.name}}`);
      c.backoffTimer = setTimeout(() => {
        c.backoffTimer = undefined;
        if (!this.terminating) this.runContainer(c);
      }, delay);
      return;
    }
    // No restart: the pod is done once every container terminated.
    const states = this.containers.map((x) => x.state);
    if (states.every((s) => "terminated" in s)) {
      this.finished = true;
      this.phase = states.every((s) => "terminated" in s && s.terminated.exitCode === 0) ? "Succeeded" : "Failed";
      releaseIP(this.ip, this.pod.metadata.uid);
    }
  }

  // ---------------------------------------------------------------- probes

  private startProbes(c: Container): void {
    const kinds = ["startup", "readiness", "liveness"] as const;
    for (const kind of kinds) {
      const spec = c.spec[`${kind}Probe`] as KObj | undefined;
      if (!spec) continue;
      const probe: Probe = { spec, successes: 0, failures: 0, result: false };
      c.probes[kind] = probe;
      const period = (spec.periodSeconds ?? 10) * 1000;
      const tick = async (): Promise<void> => {
        if (!c.proc || this.terminating || c.probes[kind] !== probe) return;
        if (kind !== "startup" && !c.started) {
          probe.timer = setTimeout(() => void tick(), Math.min(period, 1000));
          return;
        }
        const { ok, message } = await this.probeOnce(c, spec);
        if (!c.proc || c.probes[kind] !== probe) return;
        if (ok) {
          probe.failures = 0;
          probe.successes++;
          if (probe.successes >= (kind === "readiness" ? (spec.successThreshold ?? 1) : 1)) probe.result = true;
        } else {
          probe.successes = 0;
          probe.failures++;
          if (probe.failures >= (spec.failureThreshold ?? 3)) probe.result = false;
          void event(this.pod, "Warning", "Unhealthy", `${kind[0]!.toUpperCase()}${kind.slice(1)} probe failed: ${message}`, `spec.containers{${c.name}}`);
        }
        if (kind === "startup") {
          if (probe.result) {
            c.started = true;
            c.ready = !c.spec.readinessProbe;
            this.updateStatus();
            delete c.probes.startup;
            return;
          }
          if (probe.failures >= (spec.failureThreshold ?? 3)) {
            await this.killContainer(c, "startup probe failed", false);
            return;
          }
        } else if (kind === "readiness") {
          if (c.ready !== probe.result) {
            c.ready = probe.result;
            this.updateStatus();
          }
        } else if (kind === "liveness" && probe.failures >= (spec.failureThreshold ?? 3)) {
          void event(this.pod, "Normal", "Killing", `Container ${c.name} failed liveness probe, will be restarted`, `spec.containers{${c.name}}`);
          await this.killContainer(c, "liveness probe failed", false);
          return;
        }
        probe.timer = setTimeout(() => void tick(), period);
      };
      probe.timer = setTimeout(() => void tick(), (spec.initialDelaySeconds ?? 0) * 1000);
    }
  }

  private async probeOnce(c: Container, spec: KObj): Promise<{ ok: boolean; message: string }> {
    const timeout = (spec.timeoutSeconds ?? 1) * 1000;
    const port = (p: number | string): number => {
      if (typeof p === "number") return p;
      const named = ((c.spec.ports ?? []) as KObj[]).find((x) => x.name === p);
      return named ? Number(named.containerPort) : Number(p);
    };
    try {
      if (spec.httpGet) {
        const g = spec.httpGet;
        const mod = (g.scheme ?? "HTTP") === "HTTPS" ? https : http;
        const headers: Record<string, string> = {
          "user-agent": "kube-probe/fsb",
        };
        for (const h of (g.httpHeaders ?? []) as KObj[]) headers[h.name] = h.value;
        const status = await new Promise<number>((resolve, reject) => {
          const req = mod.get(
            {
              host: g.host ?? this.ip,
              port: port(g.port),
              path: g.path ?? "/",
              headers,
              timeout,
              rejectUnauthorized: false,
            },
            (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            },
          );
          req.on("timeout", () => req.destroy(new Error("timeout")));
          req.on("error", reject);
        });
        return {
          ok: status >= 200 && status < 400,
          message: `HTTP probe failed with statuscode: ${status}`,
        };
      }
      if (spec.tcpSocket) {
        await new Promise<void>((resolve, reject) => {
          const s = net.connect({
            host: spec.tcpSocket.host ?? this.ip,
            port: port(spec.tcpSocket.port),
            timeout,
          });
          s.on("connect", () => {
            s.destroy();
            resolve();
          });
          s.on("timeout", () => s.destroy(new Error("timeout")));
          s.on("error", reject);
        });
        return { ok: true, message: "" };
      }
      if (spec.exec) {
        // Runs the command on the host with the container's env and working dir.
        const argv = (spec.exec.command ?? []) as string[];
        const env = {
          ...process.env,
          POD_IP: this.ip,
          ...(await this.envFor(c.spec)),
        };
        const code = await new Promise<number>((resolve) => {
          const p = spawn(argv[0]!, argv.slice(1), {
            env,
            stdio: "ignore",
            timeout,
            cwd: this.dir,
          });
          p.on("error", () => resolve(127));
          p.on("close", (code2) => resolve(code2 ?? 1));
        });
        return { ok: code === 0, message: `command exited with ${code}` };
      }
      return {
        ok: false,
        message: "unsupported probe type (fake kubelet supports httpGet, tcpSocket, exec)",
      };
    } catch (err) {
      return { ok: false, message: (err as Error).message };
    }
  }

  // ---------------------------------------------------------------- stopping

  /** SIGTERM the container's process group; SIGKILL after the grace period. */
  async killContainer(c: Container, why: string, final: boolean, graceSeconds?: number): Promise<void> {
    if (c.backoffTimer) {
      clearTimeout(c.backoffTimer);
      c.backoffTimer = undefined;
    }
    const proc = c.proc;
    if (!proc?.pid) return;
    c.stopping = final;
    c.clearProbes();
    const grace = graceSeconds ?? this.pod.spec.terminationGracePeriodSeconds ?? 30;
    log(`pod ${this.key} container ${c.name}: stopping (${why}), grace ${grace}s`);
    const exited = c.exited();
    try {
      process.kill(-proc.pid, "SIGTERM");
    } catch {
      /* gone */
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-proc.pid!, "SIGKILL");
      } catch {
        /* gone */
      }
    }, grace * 1000);
    await exited;
    clearTimeout(timer);
  }

  /**
   * Eviction, as a kubelet under node pressure does it: every container is stopped (no restart),
   * and the Pod object stays, in phase Failed with reason Evicted, for good — until someone deletes it.
   */
  async evict(message: string): Promise<void> {
    if (this.terminating || this.finished) return;
    this.finished = true;
    this.phase = "Failed";
    this.failedReason = "Evicted";
    this.failedMessage = message;
    log(`pod ${this.key} evicted: ${message}`);
    await Promise.all([...this.initContainers, ...this.containers].map((c) => this.killContainer(c, "eviction", true, 0)));
    for (const c of [...this.initContainers, ...this.containers]) if (c.backoffTimer) clearTimeout(c.backoffTimer);
    void event(this.pod, "Warning", "Evicted", message);
    this.updateStatus();
  }

  /** Graceful deletion: stop every container, then remove the Pod object. */
  async terminate(graceSeconds: number | undefined, deleteFromApi: boolean): Promise<void> {
    if (this.terminating) return;
    this.terminating = true;
    this.updateStatus(); // Ready=False while terminating
    await Promise.all([...this.initContainers, ...this.containers].map((c) => this.killContainer(c, "pod deletion", true, graceSeconds)));
    for (const c of [...this.initContainers, ...this.containers]) if (c.backoffTimer) clearTimeout(c.backoffTimer);
    releaseIP(this.ip, this.pod.metadata.uid);
    if (deleteFromApi) {
      const m = this.pod.metadata;
      try {
        await client.delete(`/api/v1/namespaces/${m.namespace}/pods/${m.name}`, {
          apiVersion: "v1",
          kind: "DeleteOptions",
          gracePeriodSeconds: 0,
          preconditions: { uid: m.uid },
        });
        log(`pod ${this.key} deleted`);
      } catch (err) {
        if (!(err instanceof KubeError && (err.status === 404 || err.status === 409))) log(`pod ${this.key} delete failed: ${(err as Error).message}`);
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
    pods.delete(this.pod.metadata.uid);
  }

  // ---------------------------------------------------------------- status

  updateStatus(): void {
    this.statusDirty = true;
    if (this.statusInFlight) return;
    void this.flushStatus();
  }

  private async flushStatus(): Promise<void> {
    this.statusInFlight = true;
    try {
      while (this.statusDirty) {
        this.statusDirty = false;
        const m = this.pod.metadata;
        if (!pods.has(m.uid) && this.terminating) break;
        try {
          await client.mergePatch(`/api/v1/namespaces/${m.namespace}/pods/${m.name}/status`, {
            metadata: { uid: m.uid },
            status: this.status(),
          });
        } catch (err) {
          if (err instanceof KubeError && (err.status === 404 || err.status === 409)) break;
          log(`pod ${this.key} status update failed: ${(err as Error).message}`);
          await sleep(1000);
          this.statusDirty = true;
        }
      }
    } finally {
      this.statusInFlight = false;
    }
  }

  status(): KObj {
    const all = this.containers;
    const allReady = all.length > 0 && all.every((c) => c.ready);
    const anyRunning = all.some((c) => "running" in c.state);
    let phase = this.phase;
    if (!this.finished) {
      if (anyRunning || (this.initialized && all.some((c) => c.restartCount > 0))) phase = "Running";
      else phase = "Pending";
    }
    const t = now();
    const prev = new Map<string, KObj>(((this.pod.status?.conditions ?? []) as KObj[]).map((c) => [c.type, c]));
    const cond = (type: string, ok: boolean, reason?: string): KObj => {
      const status = ok ? "True" : "False";
      const old = prev.get(type);
      const c: KObj = {
        type,
        status,
        lastProbeTime: null,
        lastTransitionTime: old && old.status === status ? old.lastTransitionTime : t,
      };
      if (!ok && reason) c.reason = reason;
      prev.set(type, c);
      return c;
    };
    const conditions = [
      cond("PodReadyToStartContainers", this.ip !== ""),
      cond("Initialized", this.initialized, "ContainersNotInitialized"),
      cond("Ready", allReady && !this.terminating, "ContainersNotReady"),
      cond("ContainersReady", allReady, "ContainersNotReady"),
      cond("PodScheduled", true),
    ];
    const s: KObj = {
      observedGeneration: this.pod.metadata.generation,
      phase,
      conditions,
      hostIP: "127.0.0.1",
      hostIPs: [{ ip: "127.0.0.1" }],
      podIP: this.ip || undefined,
      podIPs: this.ip ? [{ ip: this.ip }] : undefined,
      startTime: this.startTime,
      containerStatuses: this.containers.map((c) => c.status()),
    };
    if (this.initContainers.length) s.initContainerStatuses = this.initContainers.map((c) => c.status());
    if (this.failedReason) {
      s.reason = this.failedReason;
      s.message = this.failedMessage;
    }
    return s;
  }
}

// ------------------------------------------------------------------ helpers

function backoff(restarts: number): number {
  return Math.min(1000 * 2 ** Math.max(0, restarts - 1), 30_000);
}

function pickItems(all: Record<string, string | Buffer>, items?: KObj[]): Record<string, string | Buffer> {
  if (!items) return all;
  const out: Record<string, string | Buffer> = {};
  for (const it of items) if (all[it.key] !== undefined) out[it.path] = all[it.key]!;
  return out;
}

function expandVars(s: string, env: Record<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name: string | undefined) =>
    m === "$$" ? "$" : name !== undefined && env[name] !== undefined ? env[name] : m,
  );
}

function parseQuantity(q: string): number {
  const m = /^([0-9.]+)([a-zA-Z]*)$/.exec(String(q));
  if (!m) return Number(q);
  const n = Number(m[1]);
  const mult: Record<string, number> = {
    "": 1,
    m: 1e-3,
    k: 1e3,
    M: 1e6,
    G: 1e9,
    T: 1e12,
    Ki: 1024,
    Mi: 1024 ** 2,
    Gi: 1024 ** 3,
    Ti: 1024 ** 4,
  };
  return n * (mult[m[2]!] ?? 1);
}

function signalNumber(sig: NodeJS.Signals): number | undefined {
  const table: Record<string, number> = {
    SIGHUP: 1,
    SIGINT: 2,
    SIGQUIT: 3,
    SIGKILL: 9,
    SIGTERM: 15,
    SIGABRT: 6,
    SIGSEGV: 11,
  };
  return table[sig];
}

// ------------------------------------------------------------------ pod watch

function onPod(type: string, pod: KObj): void {
  const uid = pod.metadata.uid as string;
  let r = pods.get(uid);
  if (type === "DELETED") {
    if (r) void r.terminate(0, false);
    return;
  }
  if (!r) {
    if (pod.metadata.deletionTimestamp) {
      // Deleted before we started it (or after a kubelet restart): nothing runs; confirm deletion.
      const tmp = new PodRunner(pod);
      pods.set(uid, tmp);
      void tmp.terminate(0, true);
      return;
    }
    if (pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed") return; // finished earlier
    r = new PodRunner(pod);
    pods.set(uid, r);
    void r.start().catch((err: Error) => log(`pod ${r!.key} start failed: ${err.message}`));
    return;
  }
  r.pod = pod;
  const eviction = pod.metadata.annotations?.[EVICT_ANNOTATION];
  if (eviction && !pod.metadata.deletionTimestamp) void r.evict(eviction);
  if (pod.metadata.deletionTimestamp && !r.terminating) {
    void r.terminate(pod.metadata.deletionGracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30, true);
  }
}

async function podLoop(signal: AbortSignal): Promise<void> {
  const base = `/api/v1/pods?fieldSelector=${encodeURIComponent(`spec.nodeName=${NODE}`)}`;
  while (!signal.aborted) {
    try {
      const list = await client.get(base);
      const seen = new Set<string>();
      for (const p of list.items as KObj[]) {
        seen.add(p.metadata.uid);
        onPod("ADDED", p);
      }
      for (const [uid, r] of pods) if (!seen.has(uid)) void r.terminate(0, false);
      let rv = list.metadata.resourceVersion as string;
      for (;;) {
        let gone = false;
        await client.watch(
          `${base}&watch=1&allowWatchBookmarks=true&timeoutSeconds=240&resourceVersion=${rv}`,
          (e: WatchEvent) => {
            if (e.type === "ERROR") {
              gone = true;
              return;
            }
            if (e.object?.metadata?.resourceVersion) rv = e.object.metadata.resourceVersion;
            if (e.type === "BOOKMARK") return;
            onPod(e.type, e.object);
          },
          signal,
        );
        if (gone || signal.aborted) break;
      }
    } catch (err) {
      if (signal.aborted) return;
      log("pod watch failed, relisting:", (err as Error).message);
      await sleep(1000);
    }
  }
}

// ------------------------------------------------------------------ main

async function shutdown(ac: AbortController): Promise<void> {
  log("shutting down: stopping pod processes");
  ac.abort();
  await Promise.all(
    [...pods.values()].map(async (r) => {
      r.terminating = true;
      await Promise.all(
        [...r.initContainers, ...r.containers].map((c) =>
          r.killContainer(c, "kubelet shutdown", true, Math.min(5, r.pod.spec.terminationGracePeriodSeconds ?? 5)),
        ),
      );
      releaseIP(r.ip, r.pod.metadata.uid);
    }),
  );
  client.close();
  process.exit(0);
}

async function main(): Promise<void> {
  mkdirSync(PODS_DIR, { recursive: true });
  if (!existsSync(IMAGE_MAP_FILE)) throw new Error(`image map ${IMAGE_MAP_FILE} not found`);
  // Leftovers of an earlier run of this kubelet (crash): kill their processes.
  try {
    for (const d of readdirSync(PODS_DIR)) {
      const dir = path.join(PODS_DIR, d);
      for (const f of readdirSync(dir)) {
        if (!f.endsWith(".pgid")) continue;
        try {
          process.kill(-Number(readFileSync(path.join(dir, f), "utf8")), "SIGKILL");
        } catch {
          /* gone */
        }
      }
      try {
        const { ip, uid } = JSON.parse(readFileSync(path.join(dir, "pod.json"), "utf8")) as { ip: string; uid: string };
        releaseIP(ip, uid);
      } catch {
        /* none */
      }
      rmSync(dir, { recursive: true, force: true });
    }
  } catch {
    /* first run */
  }
  const ac = new AbortController();
  process.on("SIGTERM", () => void shutdown(ac));
  process.on("SIGINT", () => void shutdown(ac));
  await registerNode();
  void heartbeatLoop(ac.signal);
  await podLoop(ac.signal);
}

main().catch((err: Error) => {
  log("fatal:", err.stack ?? err.message);
  process.exit(1);
});
