/**
 * A real OCI registry for tests: Debian's `docker-registry` (the CNCF distribution server 2.8) on
 * a free loopback port, with htpasswd (bcrypt) auth, storage and config in a temporary directory.
 * Images get into it with `skopeo copy` from the base image's OCI archive. Its access log (one
 * line per request, kept in `logPath`) is how tests count what clients really fetched.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { BASE_IMAGE, REPO_ROOT, removeNamespace } from "./containerd.js";

export interface TestRegistryOptions {
  /** The one user htpasswd knows. @default "fsb-test" */
  username?: string;
  /** @default random */
  password?: string;
}

export interface RegistryRequest {
  method: string;
  path: string;
  status: number;
  userAgent: string;
}

/** An image pushed to the test registry. */
export interface PushedImage {
  /** `<host>/<repository>:<tag>` */
  reference: string;
  manifestDigest: string;
  configDigest: string;
  /** Layer digests, base first. */
  layerDigests: string[];
}

export interface TestRegistry {
  /** `127.0.0.1:<port>`, the registry part of image references. */
  host: string;
  username: string;
  password: string;
  logPath: string;
  /** Pushes the base image as `<host>/<repository>:<tag>`. */
  pushBaseImage(repository: string, tag: string): Promise<PushedImage>;
  /**
   * Pushes the base image plus one layer holding the file `/fsb-image` with `marker` in it: an
   * image no containerd namespace has yet (its top layer and config are new), whose content a
   * sandbox can show.
   */
  pushVariant(repository: string, tag: string, marker: string): Promise<PushedImage>;
  /** Pushes an OCI index under `tag` naming manifests already in the repository, one per platform. */
  pushIndex(repository: string, tag: string, entries: { manifestDigest: string; architecture: string }[]): Promise<string>;
  /** Unlinks a blob from a repository (the registry then answers 404 BLOB_UNKNOWN for it there). */
  deleteBlob(repository: string, digest: string): Promise<void>;
  /** Requests from the access log so far (authentication challenges included). */
  requests(): RegistryRequest[];
  stop(): Promise<void>;
}

/** The base image's OCI archive, as scripts/build-base-image.sh caches it (built if missing). */
export function baseImageArchive(): string {
  const busybox = process.env.FSB_BUSYBOX ?? "/bin/busybox";
  const digest = createHash("sha256").update(readFileSync(busybox)).digest("hex").slice(0, 16);
  const cacheDir = process.env.FSB_IMAGE_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "fast-sandbox", "images");
  const archive = join(cacheDir, `base-${digest}-latest.oci.tar`);
  if (!existsSync(archive)) {
    // The script builds the archive on its way to importing it; a throwaway namespace takes the import.
    const namespace = `fsb-build-${randomBytes(3).toString("hex")}`;
    try {
      execFileSync("bash", [join(REPO_ROOT, "scripts/build-base-image.sh"), BASE_IMAGE, namespace], { stdio: ["ignore", "inherit", "inherit"] });
    } finally {
      removeNamespace(namespace);
    }
  }
  return archive;
}

async function freeLoopbackPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (typeof address !== "object" || address === null) throw new Error("no port");
  return address.port;
}

export async function startTestRegistry(options: TestRegistryOptions = {}): Promise<TestRegistry> {
  const username = options.username ?? "fsb-test";
  const password = options.password ?? randomBytes(12).toString("base64url");
  const dir = mkdtempSync(join(tmpdir(), "fsb-registry-"));
  const logPath = join(dir, "registry.log");
  execFileSync("htpasswd", ["-Bbc", join(dir, "htpasswd"), username, password], { stdio: "ignore" });

  let child: ChildProcess | undefined;
  let host = "";
  // A port found free may be taken before the registry binds it: try a few.
  for (let attempt = 0; attempt < 5 && !child; attempt++) {
    const port = await freeLoopbackPort();
    host = `127.0.0.1:${port}`;
    writeFileSync(
      join(dir, "config.yml"),
      [
        "version: 0.1",
        "log:",
        "  level: info",
        "  formatter: text",
        "storage:",
        "  filesystem:",
        `    rootdirectory: ${join(dir, "storage")}`,
        "  delete:",
        "    enabled: true",
        "http:",
        `  addr: ${host}`,
        `  secret: ${randomBytes(16).toString("hex")}`,
        "auth:",
        "  htpasswd:",
        "    realm: fsb-test-registry",
        `    path: ${join(dir, "htpasswd")}`,
        "",
      ].join("\n"),
    );
    // The log file itself is the registry's stdout and stderr, not a pipe this process drains: a test
    // blocked in a synchronous call (execFileSync of a push) would otherwise stop the registry once
    // the pipe is full, and the push would wait on it for ever.
    const log = openSync(logPath, "a");
    const started = spawn("docker-registry", ["serve", join(dir, "config.yml")], { stdio: ["ignore", log, log] });
    closeSync(log);
    const exited = new Promise<void>((resolve) => started.once("exit", () => resolve()));
    if (await serving(host, exited, 10_000)) child = started;
    else started.kill("SIGKILL");
  }
  if (!child) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`docker-registry did not start; see its log above (apt-get install -y docker-registry)`);
  }
  const registryProcess = child;
  const authorization = `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;

  const push = async (source: string, repository: string, tag: string): Promise<PushedImage> => {
    const reference = `${host}/${repository}:${tag}`;
    execFileSync("skopeo", ["copy", "--quiet", "--dest-creds", `${username}:${password}`, "--dest-tls-verify=false", source, `docker://${reference}`], {
      stdio: ["ignore", "ignore", "inherit"],
      timeout: 60_000,
    });
    const response = await fetch(`http://${host}/v2/${repository}/manifests/${tag}`, {
      headers: { authorization, accept: "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json" },
    });
    if (!response.ok) throw new Error(`pushed ${reference}, but the registry answers ${response.status} for it`);
    const manifest = (await response.json()) as { config: { digest: string }; layers: { digest: string }[] };
    return {
      reference,
      manifestDigest: response.headers.get("docker-content-digest") ?? "",
      configDigest: manifest.config.digest,
      layerDigests: manifest.layers.map((layer) => layer.digest),
    };
  };

  return {
    host,
    username,
    password,
    logPath,
    pushBaseImage: (repository, tag) => push(`oci-archive:${baseImageArchive()}:latest`, repository, tag),
    async pushVariant(repository, tag, marker) {
      const work = mkdtempSync(join(dir, "variant-"));
      try {
        const layout = join(work, "layout");
        const bundle = join(work, "bundle");
        mkdirSync(layout);
        execFileSync("tar", ["-xf", baseImageArchive(), "-C", layout]);
        execFileSync("umoci", ["unpack", "--image", `${layout}:latest`, bundle], { stdio: "ignore" });
        writeFileSync(join(bundle, "rootfs", "fsb-image"), `${marker}\n`);
        execFileSync("umoci", ["repack", "--image", `${layout}:variant`, bundle], { stdio: "ignore" });
        return await push(`oci:${layout}:variant`, repository, tag);
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    },
    async pushIndex(repository, tag, entries) {
      const manifests = [];
      for (const entry of entries) {
        const head = await fetch(`http://${host}/v2/${repository}/manifests/${entry.manifestDigest}`, {
          method: "HEAD",
          headers: { authorization, accept: "application/vnd.oci.image.manifest.v1+json" },
        });
        if (!head.ok) throw new Error(`manifest ${entry.manifestDigest} is not in ${repository} (${head.status})`);
        manifests.push({
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: entry.manifestDigest,
          size: Number(head.headers.get("content-length")),
          platform: { os: "linux", architecture: entry.architecture },
        });
      }
      const body = JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests });
      const response = await fetch(`http://${host}/v2/${repository}/manifests/${tag}`, {
        method: "PUT",
        headers: { authorization, "content-type": "application/vnd.oci.image.index.v1+json" },
        body,
      });
      if (response.status !== 201) throw new Error(`the registry refused the index: ${response.status} ${await response.text()}`);
      return `sha256:${createHash("sha256").update(body).digest("hex")}`;
    },
    async deleteBlob(repository, digest) {
      const response = await fetch(`http://${host}/v2/${repository}/blobs/${digest}`, { method: "DELETE", headers: { authorization } });
      if (response.status !== 202) throw new Error(`the registry did not delete ${digest}: ${response.status} ${await response.text()}`);
    },
    requests() {
      const requests: RegistryRequest[] = [];
      for (const line of readFileSync(logPath, "utf8").split("\n")) {
        // The access log's combined format: 127.0.0.1 - - [date] "GET /v2/… HTTP/1.1" 200 1234 "referer" "user agent"
        const match = /^\S+ - \S+ \[[^\]]+\] "(\w+) (\S+) HTTP\/[\d.]+" (\d{3}) \S+ "[^"]*" "([^"]*)"/.exec(line);
        if (match) requests.push({ method: match[1] ?? "", path: match[2] ?? "", status: Number(match[3]), userAgent: match[4] ?? "" });
      }
      return requests;
    },
    async stop() {
      if (registryProcess.exitCode === null && registryProcess.signalCode === null) {
        const exited = new Promise((resolve) => registryProcess.once("exit", resolve));
        registryProcess.kill("SIGTERM");
        const timer = setTimeout(() => registryProcess.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls `GET /v2/` until the registry answers (401: it wants credentials) or it exits or the time is up. */
async function serving(host: string, exited: Promise<void>, timeoutMs: number): Promise<boolean> {
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = Date.now() + timeoutMs;
  while (!gone && Date.now() < deadline) {
    try {
      const response = await fetch(`http://${host}/v2/`, { signal: AbortSignal.timeout(1000) });
      await response.body?.cancel();
      if (response.status === 401 || response.status === 200) return true;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}
