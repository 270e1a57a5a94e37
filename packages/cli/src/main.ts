import { Command, CommanderError, Option } from "@commander-js/extra-typings";
import { FsbError, ValidationError } from "@fast-sandbox/api";
import { up } from "./commands/up.js";
import { down } from "./commands/down.js";
import { exec, get, list, logs, remove, reset, run } from "./commands/sandboxes.js";
import { apply } from "./commands/apply.js";
import { agents } from "./commands/agents.js";
import { deletePools, getPool, pools } from "./commands/pools.js";
import { parseResourceArgs, resourceKind } from "./resource-args.js";
import { login, pull } from "./commands/images.js";
import { janitor } from "./commands/janitor.js";
import { OUTPUT_FORMATS } from "./output.js";
import { closeConnections } from "./connection.js";

/** Exit codes: 0 ok, 1 error, 2 bad usage; `exec` exits with the command's own code. */
const EXIT_ERROR = 1;
const EXIT_USAGE = 2;

const collect = (value: string, previous: string[]) => [...previous, value];
const outputOption = () => new Option("-o, --output <format>", "output format").choices(OUTPUT_FORMATS).default("table" as const);
const namespaceOption = () => new Option("-n, --namespace <namespace>", "namespace (default: default)");

function program(): Command {
  const fsb = new Command("fsb")
    .description("Fast Sandbox: isolated sandboxes for AI agents in milliseconds")
    .option("--data-dir <dir>", "state directory of 'fsb up' (env FSB_DATA_DIR; default /var/lib/fast-sandbox as root)")
    .option("--url <url>", "control plane URL (env FSB_URL; default: the one 'fsb up' runs)")
    .showHelpAfterError()
    .exitOverride();
  const globals = () => fsb.opts();

  fsb
    .command("up")
    .description("start the embedded Fast Sandbox (control plane + agents on this host's containerd)")
    .option("-d, --detach", "run in the background")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--port <port>", "port to listen on (env FSB_PORT)", process.env.FSB_PORT ?? "7070")
    .option("--image <image>", "default image of the default pool (env FSB_BASE_IMAGE)", process.env.FSB_BASE_IMAGE ?? "fast-sandbox.io/base:latest")
    .option("--containerd-namespace <ns>", "containerd namespace (env FSB_CONTAINERD_NAMESPACE)", process.env.FSB_CONTAINERD_NAMESPACE ?? "fast-sandbox")
    .option(
      "--containerd-socket <path>",
      "containerd socket (env FSB_CONTAINERD_SOCKET)",
      process.env.FSB_CONTAINERD_SOCKET ?? "/run/containerd/containerd.sock",
    )
    .option(
      "--cgroup-root <name>",
      "cgroup the agents and sandboxes live under; empty disables (env FSB_CGROUP_ROOT)",
      process.env.FSB_CGROUP_ROOT ?? "fast-sandbox",
    )
    .option("--no-janitor", "do not start the janitor (see 'fsb janitor')")
    .option("--janitor-interval <duration>", "time between the janitor's passes", "10s")
    .option("--janitor-protection <duration>", "the janitor leaves orphans younger than this alone", "2m")
    .option("--janitor-metrics <host:port>", "serve the janitor's Prometheus metrics there (loopback only)")
    .action((options) => up({ ...options, ...(globals().dataDir ? { dataDir: globals().dataDir } : {}) }));

  fsb
    .command("down")
    .description("stop the embedded Fast Sandbox (sandboxes keep running unless --delete-sandboxes)")
    .option("--delete-sandboxes", "delete every sandbox first")
    .action((options) => down({ ...globals(), ...options }));

  fsb
    .command("run")
    .description("create a sandbox running COMMAND (default: the image's command); prints its name last")
    .argument("[command...]", "command and arguments, after --")
    .option("--name <name>", "sandbox name (default: generated)")
    .addOption(namespaceOption())
    .option("--pool <pool>", "pool to place it in", "default")
    .option("--image <image>", "image (default: the pool's image)")
    .option("-p, --port <port>", "port the sandbox listens on (repeatable)", collect, [] as string[])
    .option("-e, --env <NAME=VALUE>", "environment variable (repeatable)", collect, [] as string[])
    .option("-w, --workdir <dir>", "working directory")
    .option("--expire <duration>", "delete it after this long, e.g. 30s, 10m, 2h")
    .option("--failure-policy <policy>", "when its agent is lost: Manual (becomes Lost) or AutoRecreate (recreated on another agent)")
    .option("--recovery-timeout <duration>", "how long its agent may be unreachable before the failure policy acts (default 30s)")
    .action((command, options) => run(command, { ...globals(), ...options }));

  fsb
    .command("reset")
    .description("replace a sandbox's instance with a new one (same name and spec, new sandbox id); waits until it runs")
    .argument("<name>")
    .addOption(namespaceOption())
    .action((name, options) => reset(name, { ...globals(), ...options }));

  fsb
    .command("ls")
    .alias("list")
    .description("list sandboxes")
    .addOption(namespaceOption())
    .option("-A, --all-namespaces", "list every namespace")
    .option("--pool <pool>", "only this pool")
    .addOption(outputOption())
    .action((options) => list({ ...globals(), ...options }));

  fsb
    .command("get")
    .description("show one sandbox (get NAME, get sandbox NAME) or pool (get pool NAME); a kind alone lists them")
    .argument("<kind-or-name>", "sandbox name, or a kind: sandbox, pool")
    .argument("[name]")
    .addOption(namespaceOption())
    .addOption(outputOption())
    .action(async (first, second, options, command) => {
      if (second !== undefined && resourceKind(first) === undefined) command.error(`error: ${JSON.stringify(first)} is not a kind; allowed: sandbox, pool`);
      const { kind, names } = parseResourceArgs(second === undefined ? [first] : [first, second]);
      const [name] = names;
      if (kind === "pool") await (name === undefined ? pools({ ...globals(), ...options }) : getPool(name, { ...globals(), ...options }));
      else await (name === undefined ? list({ ...globals(), ...options }) : get(name, { ...globals(), ...options }));
    });

  fsb
    .command("pools")
    .description("list pools: agents ready/total, desired agents, sandboxes, free slots")
    .addOption(namespaceOption())
    .option("-A, --all-namespaces", "list every namespace")
    .addOption(outputOption())
    .action((options) => pools({ ...globals(), ...options }));

  fsb
    .command("logs")
    .description("print a sandbox's output")
    .argument("<name>")
    .addOption(namespaceOption())
    .option("-f, --follow", "keep streaming until the sandbox exits")
    .action((name, options) => logs(name, { ...globals(), ...options }));

  fsb
    .command("exec")
    .description("run a command in a sandbox; exits with its exit code")
    .argument("<name>")
    .argument("[command...]", "command and arguments, after --")
    .addOption(namespaceOption())
    .option("-e, --env <NAME=VALUE>", "environment variable (repeatable)", collect, [] as string[])
    .option("-w, --workdir <dir>", "working directory")
    .action(async (name, command, options) => {
      process.exitCode = await exec(name, command, { ...globals(), ...options });
    });

  fsb
    .command("rm")
    .description("delete sandboxes (waits until container, task and snapshot are gone)")
    .argument("<names...>")
    .addOption(namespaceOption())
    .action((names, options) => remove(names, { ...globals(), ...options }));

  fsb
    .command("delete")
    .description("delete sandboxes (delete NAME…, delete sandbox NAME…) or pools without sandboxes (delete pool NAME…)")
    .argument("<args...>", "sandbox names, or a kind (sandbox, pool) and names")
    .addOption(namespaceOption())
    .action(async (args, options, command) => {
      const { kind, names } = parseResourceArgs(args);
      if (names.length === 0)
        command.error(`error: name the ${kind}s to delete, e.g. fsb delete ${kind} NAME (a sandbox called ${args[0] ?? ""}: fsb rm ${args[0] ?? ""})`);
      await (kind === "pool" ? deletePools(names, { ...globals(), ...options }) : remove(names, { ...globals(), ...options }));
    });

  fsb
    .command("apply")
    .description("create or update Sandbox and SandboxPool objects from a YAML file (multi-document; - for stdin)")
    .requiredOption("-f, --file <file>", "manifest file")
    .addOption(namespaceOption())
    .action((options) => apply({ ...globals(), ...options }));

  fsb
    .command("agents")
    .description("list the pools' agents")
    .addOption(namespaceOption())
    .option("--pool <pool>", "only this pool")
    .addOption(outputOption())
    .action((options) => agents({ ...globals(), ...options }));

  fsb
    .command("pull")
    .description("pull an image on every ready agent of a pool, showing progress; one line per agent at the end")
    .argument("<image>", "image reference, e.g. python:3.12 or ghcr.io/org/app@sha256:…")
    .addOption(namespaceOption())
    .option("--pool <pool>", "pool whose agents pull it", "default")
    .action((image, options) => pull(image, { ...globals(), ...options }));

  fsb
    .command("login")
    .description("save credentials for a registry (Docker's config.json format, in the data directory); agents use them at every pull")
    .argument("<registry>", "registry host, e.g. ghcr.io, docker.io or 127.0.0.1:5000")
    .option("-u, --username <user>", "user name")
    .option("--password-stdin", "read the password (or token) from stdin")
    .action((registry, options) => login(registry, { ...globals(), ...options }));

  fsb
    .command("janitor")
    .description(
      "remove what Fast Sandbox left behind: containers (task, snapshot, cgroup, files) whose agent or record is gone, " +
        "and the shim anchors of agents that are gone; never anything without the fast-sandbox.io/managed label",
    )
    .option("--interval <duration>", "time between passes", "10s")
    .option("--protection <duration>", "leave orphans younger than this alone (creates in flight); 0 for none", "2m")
    .option("--once", "run one pass, print what it removed, and exit (1 when the control plane cannot be asked)")
    .option("--metrics <host:port>", "serve Prometheus metrics at http://host:port/metrics (loopback only)")
    .option("--containerd-namespace <ns>", "containerd namespace (env FSB_CONTAINERD_NAMESPACE; default: the one of 'fsb up')")
    .option("--containerd-socket <path>", "containerd socket (env FSB_CONTAINERD_SOCKET; default: the one of 'fsb up')")
    .option("--cgroup-root <name>", "cgroup the agents live under (env FSB_CGROUP_ROOT; default: the one of 'fsb up')")
    .action((options) => janitor({ ...globals(), ...options }));

  return fsb;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv);
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version are not errors; everything else commander throws is bad usage.
      return error.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    const fsbError = FsbError.from(error);
    process.stderr.write(`error: ${fsbError.message}\n`);
    if (fsbError.code === "internal" && process.env.FSB_DEBUG) process.stderr.write(`${String((error as Error).stack)}\n`);
    return fsbError instanceof ValidationError && fsbError.field.startsWith("--") ? EXIT_USAGE : EXIT_ERROR;
  } finally {
    closeConnections();
  }
}

process.exitCode = await main(process.argv);
