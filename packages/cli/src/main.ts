import { Command, CommanderError, Help, Option, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { ValidationError } from "@fast-sandbox/api";
import { parseResourceArgs, resourceKind } from "./resource-args.js";
import { OUTPUT_FORMATS, exitWhenReaderGoes } from "./output.js";
import { closeConnections } from "./connection.js";
import { separateCommandWords } from "./command-words.js";
import { printFailure, setCommandName } from "./failures.js";
import { KUBECTL_PLUGIN_NAME, programNameOf } from "./target.js";

/** Exit codes: 0 ok, 1 error, 2 bad usage; `exec` exits with the command's own code. */
const EXIT_ERROR = 1;
const EXIT_USAGE = 2;

// Commands are loaded when they run: `up`, `down`, `janitor` and `pull` need the control plane and
// the janitor, which take a second to import that `ls` or `kubectl fs exec` should not pay.
const sandboxCommands = () => import("./commands/sandboxes.js");
const statsCommands = () => import("./commands/stats.js");
const poolCommands = () => import("./commands/pools.js");
const imageCommands = () => import("./commands/images.js");
const checkpointCommands = () => import("./commands/checkpoints.js");

const collect = (value: string, previous: string[]) => [...previous, value];
const outputOption = () => new Option("-o, --output <format>", "output format").choices(OUTPUT_FORMATS).default("table" as const);
const NAMESPACE_DEFAULT = "default: in a cluster the kubeconfig context's, else default";
const namespaceOption = () => new Option("-n, --namespace <namespace>", `namespace (${NAMESPACE_DEFAULT})`);
/** The `--namespace` of the commands whose `-n` is another flag (checkpoint, fork), and of pause and resume. */
const longNamespaceOption = () => new Option("--namespace <namespace>", `namespace (${NAMESPACE_DEFAULT})`);
/**
 * `-n`/`--namespace` before the command (`kubectl fs -n team ls`, as kubectl's own flags go): the
 * namespace of every command, unless it names its own. Taken out of the command line by
 * `takeRootNamespace`, not by Commander, which would take it after the command too — where `-n` is
 * the checkpoint's name (checkpoint) or the number of copies (fork). Listed in the help alone.
 */
const rootNamespaceOption = new Option(
  "-n, --namespace <namespace>",
  `before the command: the namespace of the command (${NAMESPACE_DEFAULT}); the command's own -n/--namespace wins`,
);
const allNamespacesOption = () => new Option("-A, --all-namespaces", "every namespace");
/** The sandbox's access token, for commands that reach it through the sandbox proxy. */
const accessTokenOption = (usedBy?: string) =>
  new Option(
    "--token <token>",
    `the sandbox's access token${usedBy ? ` (${usedBy})` : ""} (env FSB_ACCESS_TOKEN; default: the one 'fsb run' or 'fsb token' saved)`,
  );

const TARGET_HELP = `
Which Fast Sandbox (the first rule that applies):
  --kubeconfig, --context or --fsb-namespace   the controller in a Kubernetes cluster
  --data-dir                                   the embedded one of that data directory
  run as kubectl fs (the kubectl-fs plugin)    the controller in a Kubernetes cluster
  --url or FSB_URL                             that URL (token: FSB_TOKEN, FSB_TOKEN_FILE or the data directory's)
  'fsb up' runs for the data directory         that one
  KUBECONFIG is set                            the controller in a Kubernetes cluster
  otherwise                                    the embedded one ('fsb up' starts it)
In a cluster: the kubeconfig is --kubeconfig, KUBECONFIG or ~/.kube/config, and -n defaults to its
context's namespace; the controller is --url/FSB_URL, else a ready endpoint of Service
fast-sandbox-controller in --fsb-namespace (its EndpointSlices, else its Pods); the token is
FSB_TOKEN (else the file FSB_TOKEN_FILE names: a Pod's ServiceAccount token), else Secret
fast-sandbox-api-token there, else (a user who may not read it) the kubeconfig user's own bearer
token, which the controller authorizes by that user's RBAC. Pod IPs are reachable only inside the
cluster network; from outside it:
  kubectl -n fast-sandbox-system port-forward svc/fast-sandbox-controller 7070:7070 &
  kubectl fs --url http://127.0.0.1:7070 ls
`;

function program(programName: string, root: { namespace?: string } = {}): Command {
  const fsb = new Command(programName === KUBECTL_PLUGIN_NAME ? "kubectl fs" : "fsb")
    .description("Fast Sandbox: isolated sandboxes for AI agents in milliseconds")
    .option("--data-dir <dir>", "state directory of 'fsb up' (env FSB_DATA_DIR; default /var/lib/fast-sandbox as root)")
    .option("--url <url>", "control plane URL (env FSB_URL; default: the one 'fsb up' runs, or in a cluster the controller behind its Service)")
    .option("--kubeconfig <file>", "kubeconfig of the cluster (default: KUBECONFIG, else ~/.kube/config)")
    .option("--context <name>", "kubeconfig context (default: its current context)")
    .option("--fsb-namespace <namespace>", "namespace of Fast Sandbox's controller in the cluster (env FSB_SYSTEM_NAMESPACE; default fast-sandbox-system)")
    .option(
      "--request-timeout <duration>",
      "how long a call may take, e.g. 30s, 5m, 0 for no limit (env FSB_REQUEST_TIMEOUT; default 60s; run, fork, checkpoint, pause, resume and rm wait until done)",
    )
    .addHelpText("after", TARGET_HELP)
    .showHelpAfterError()
    .exitOverride();
  fsb.configureHelp({
    visibleOptions(command) {
      const options = Help.prototype.visibleOptions.call(this, command);
      // Before -h, --help, the last one.
      return command === fsb ? [...options.slice(0, -1), rootNamespaceOption, ...options.slice(-1)] : options;
    },
  });
  fsb.hook("preAction", (_fsb, command) => refuseEmptyValues(command));
  // A command's own namespace flag, when given, is spread over these.
  const globals = () => ({ ...fsb.opts(), ...(root.namespace !== undefined ? { namespace: root.namespace } : {}), programName });

  fsb
    .command("up")
    .description("start the embedded Fast Sandbox (control plane + agents on this host's containerd)")
    .option("-d, --detach", "run in the background")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--port <port>", "port to listen on (env FSB_PORT)", process.env.FSB_PORT ?? "7070")
    .option(
      "--image <image>",
      "default image of the default pool, also of one that exists (env FSB_BASE_IMAGE; default fast-sandbox.io/base:latest for a new pool)",
      process.env.FSB_BASE_IMAGE,
    )
    .option(
      "--containerd-namespace <ns>",
      "containerd namespace (env FSB_CONTAINERD_NAMESPACE; default: where the data directory's last 'fsb up' ran, else fast-sandbox)",
      process.env.FSB_CONTAINERD_NAMESPACE,
    )
    .option(
      "--containerd-socket <path>",
      "containerd socket (env FSB_CONTAINERD_SOCKET; default: the data directory's last 'fsb up''s, else /run/containerd/containerd.sock)",
      process.env.FSB_CONTAINERD_SOCKET,
    )
    .option(
      "--cgroup-root <name>",
      "cgroup the agents and sandboxes live under, one per data directory; empty disables (env FSB_CGROUP_ROOT; default: the last 'fsb up''s in that namespace, else the containerd namespace's name)",
      process.env.FSB_CGROUP_ROOT,
    )
    .addOption(new Option("--print-containerd-namespace", "print the containerd namespace this 'fsb up' would run in, and exit (scripts/up.sh)").hideHelp())
    .option("--proxy-host <host>", "address the sandbox proxy listens on (env FSB_PROXY_HOST)", process.env.FSB_PROXY_HOST ?? "127.0.0.1")
    .option("--proxy-port <port>", "port of the sandbox proxy, ingress to the sandboxes' ports (env FSB_PROXY_PORT)", process.env.FSB_PROXY_PORT ?? "7072")
    .option(
      "--proxy-url <url>",
      "the proxy's address as clients reach it; endpoints are <port>-<sandboxID>.<its host> (env FSB_PROXY_URL; default http://localhost:<proxy port>)",
      process.env.FSB_PROXY_URL,
    )
    .option(
      "--e2b-port <port>",
      "port of the E2B-compatible API, on --host ('fsb e2b env' prints its URL) (env FSB_E2B_PORT)",
      process.env.FSB_E2B_PORT ?? "7073",
    )
    .option("--no-janitor", "do not start the janitor (see 'fsb janitor')")
    .option("--janitor-interval <duration>", "time between the janitor's passes", "10s")
    .option("--janitor-protection <duration>", "the janitor leaves orphans younger than this alone", "2m")
    .option("--janitor-metrics <host:port>", "serve the janitor's Prometheus metrics there (loopback only)")
    .action(async (options) => {
      if (options.printContainerdNamespace) {
        const { embeddedSettingsFor, resolveDataDir } = await import("./data-dir.js");
        process.stdout.write(`${embeddedSettingsFor(options, resolveDataDir(globals().dataDir), () => undefined).containerdNamespace}\n`);
        return;
      }
      const command = await import("./commands/up.js");
      // A foreground control plane without its Node.js flags runs again with them (control-plane-rerun.ts).
      if (!options.detach && !command.runsAsControlPlane()) {
        process.exitCode = await (await import("./control-plane-rerun.js")).rerunAsControlPlane();
        return;
      }
      if (!options.detach) (await import("./control-plane-rerun.js")).followRerunParent();
      await command.up({ ...options, ...(globals().dataDir ? { dataDir: globals().dataDir } : {}) });
    });

  fsb
    .command("down")
    .description("stop the embedded Fast Sandbox (sandboxes keep running unless --delete-sandboxes)")
    .option("--delete-sandboxes", "delete every sandbox first")
    .action(async (options) => (await import("./commands/down.js")).down({ ...globals(), ...options }));

  fsb
    .command("run")
    .description("create a sandbox running COMMAND (default: the image's command); prints its name last (-q: alone)")
    .argument("[command...]", "command and arguments (after --, or after the flags: its own flags follow its first word)")
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
    .option(
      "--egress <rule>",
      "where it may connect to, within its pool's egress policy (pools with network mode Isolated): deny-all, allow-all, or CIDR[:PORT[,PORT…]][/tcp|/udp] (repeatable: an allow list), e.g. --egress 10.0.0.0/8:443/tcp --egress 2001:db8::/32 (default: the pool's policy)",
      collect,
      [] as string[],
    )
    .option("--from-checkpoint <checkpoint>", "restore the sandbox from this checkpoint (gVisor pools): its pool, image, command, environment and state")
    .option("-q, --quiet", "print the sandbox's name alone (its access token to stderr when there is no data directory to save it in)")
    .action(async (command, options, self) => {
      const { fromCheckpoint } = options;
      if (fromCheckpoint === undefined) return (await sandboxCommands()).run(command, { ...globals(), ...options });
      const given = (flag: string) => self.getOptionValueSource(flag) === "cli";
      if (
        command.length > 0 ||
        options.image ||
        options.env.length > 0 ||
        options.workdir ||
        options.egress.length > 0 ||
        given("failurePolicy") ||
        given("recoveryTimeout")
      ) {
        throw new ValidationError(
          "--from-checkpoint",
          "a restored sandbox runs the checkpoint's processes, image and environment in the checkpoint's pool: leave out COMMAND, --image, -e, -w, --egress, --failure-policy and --recovery-timeout (--name, -n, -p, --expire and --pool apply; --pool names the checkpoint's pool, which wakes it when scaled to zero)",
        );
      }
      // --pool has a default for creates; a restore sends only one given (the checkpoint's otherwise).
      const { pool, ...rest } = options;
      return (await checkpointCommands()).runFromCheckpoint({ ...globals(), ...rest, fromCheckpoint, ...(given("pool") ? { pool } : {}) });
    });

  const checkpoint = fsb
    .command("checkpoint")
    .description(
      "save a running sandbox of a gVisor pool (memory, processes, files) as a checkpoint on its node; it runs on. " +
        "'fsb run --from-checkpoint C' restores it; 'checkpoint ls', 'checkpoint rm C…'",
    )
    .argument("<sandbox>")
    .option("-n, --name <checkpoint>", "the checkpoint's name (default: generated)")
    .addOption(longNamespaceOption())
    .action(async (sandbox, options) => (await checkpointCommands()).checkpoint(sandbox, { ...globals(), ...options }));
  // Commander gives `checkpoint`'s own options to it wherever they stand, also after `ls` and `rm`:
  // its --namespace is theirs, and its -n (the name of a checkpoint to save) is refused, not ignored.
  const checkpointNamespace = (own: string | undefined, subcommand: { name(): string; error(message: string): never }) => {
    const parent = checkpoint.opts();
    if (parent.name !== undefined) {
      subcommand.error(
        `error: -n/--name names the checkpoint 'fsb checkpoint SANDBOX' saves; 'checkpoint ${subcommand.name()}' takes the namespace as --namespace NAMESPACE`,
      );
    }
    const namespace = own ?? parent.namespace;
    return namespace !== undefined ? { namespace } : {};
  };
  checkpoint
    .command("ls")
    .alias("list")
    .description("list checkpoints")
    .addOption(longNamespaceOption())
    .addOption(allNamespacesOption())
    .addOption(outputOption())
    .action(async (options, self) => (await checkpointCommands()).list({ ...globals(), ...options, ...checkpointNamespace(options.namespace, self) }));
  checkpoint
    .command("rm")
    .description("delete checkpoints: their files on their node (sandboxes restored from them run on)")
    .argument("<names...>")
    .addOption(longNamespaceOption())
    .action(async (names, options, self) =>
      (await checkpointCommands()).remove(names, { ...globals(), ...options, ...checkpointNamespace(options.namespace, self) }),
    );

  fsb
    .command("fork")
    .description("make running copies of a running sandbox of a gVisor pool, from one checkpoint of it (own names, ids, addresses); prints each copy")
    .argument("<sandbox>")
    .requiredOption("-n, --count <copies>", "how many copies (1-32)")
    .option("--checkpoint <name>", "keep the checkpoint under this name (default: deleted once the copies run)")
    .addOption(longNamespaceOption())
    .option("-q, --quiet", "print the copies' names alone, one per line")
    .action(async (sandbox, options) => (await checkpointCommands()).fork(sandbox, { ...globals(), ...options }));

  fsb
    .command("pause")
    .description("pause a running sandbox of a gVisor pool: its memory, processes and files are saved on its node and nothing of it runs until 'fsb resume'")
    .argument("<sandbox>")
    .addOption(longNamespaceOption())
    .action(async (sandbox, options) => (await checkpointCommands()).pause(sandbox, { ...globals(), ...options }));

  fsb
    .command("resume")
    .description("resume a paused sandbox where it was (same name, id, hostname and access token; a new address)")
    .argument("<sandbox>")
    .addOption(longNamespaceOption())
    .option("--expire <duration>", "delete it this long after the resume, e.g. 30s, 10m, 2h (default: never)")
    .action(async (sandbox, options) => (await checkpointCommands()).resume(sandbox, { ...globals(), ...options }));

  fsb
    .command("token")
    .description("give a sandbox a new access token and print it (the X-Access-Token of its endpoints); the previous one stops working")
    .argument("<name>")
    .addOption(namespaceOption())
    .action(async (name, options) => (await import("./commands/access.js")).token(name, { ...globals(), ...options }));

  fsb
    .command("port-forward")
    .description("forward a local port to a port the sandbox exposes, through the sandbox proxy (raw TCP; until Ctrl-C)")
    .argument("<name>")
    .argument("<ports>", "LOCAL:REMOTE, :REMOTE (any free local port) or PORT")
    .addOption(namespaceOption())
    .option("--address <address>", "local address to listen on", "127.0.0.1")
    // No Commander default from FSB_ACCESS_TOKEN: a default is printed by --help and after a usage
    // error, which would show the token; accessTokenFor reads the variable where it is used.
    .addOption(accessTokenOption())
    .action(async (name, ports, options) => (await import("./commands/access.js")).portForward(name, ports, { ...globals(), ...options }));

  fsb
    .command("reset")
    .description("replace a sandbox's instance with a new one (same name and spec, new sandbox id); waits until it runs")
    .argument("<name>")
    .addOption(namespaceOption())
    .action(async (name, options) => (await sandboxCommands()).reset(name, { ...globals(), ...options }));

  fsb
    .command("ls")
    .alias("list")
    .description("list sandboxes")
    .addOption(namespaceOption())
    .addOption(allNamespacesOption())
    .option("--pool <pool>", "only this pool")
    .addOption(outputOption())
    .action(async (options) => (await sandboxCommands()).list({ ...globals(), ...options }));

  fsb
    .command("get")
    .description("show one sandbox (get NAME, get sandbox NAME) or pool (get pool NAME); a kind alone lists them")
    .argument("<kind-or-name>", "sandbox name, or a kind: sandbox, pool")
    .argument("[name]")
    .addOption(namespaceOption())
    .addOption(allNamespacesOption())
    .addOption(outputOption())
    .action(async (first, second, options, command) => {
      if (second !== undefined && resourceKind(first) === undefined) command.error(`error: ${JSON.stringify(first)} is not a kind; allowed: sandbox, pool`);
      const { kind, names } = parseResourceArgs(second === undefined ? [first] : [first, second]);
      const [name] = names;
      if (name !== undefined && options.allNamespaces) command.error("error: -A lists a kind in every namespace; a name needs one namespace (-n)");
      if (kind === "pool") {
        const { pools, getPool } = await poolCommands();
        await (name === undefined ? pools({ ...globals(), ...options }) : getPool(name, { ...globals(), ...options }));
      } else {
        const { list, get } = await sandboxCommands();
        await (name === undefined ? list({ ...globals(), ...options }) : get(name, { ...globals(), ...options }));
      }
    });

  fsb
    .command("pools")
    .description("list pools: agents ready/total, desired agents, sandboxes, free slots")
    .addOption(namespaceOption())
    .addOption(allNamespacesOption())
    .addOption(outputOption())
    .action(async (options) => (await poolCommands()).pools({ ...globals(), ...options }));

  fsb
    .command("stats")
    .description("show sandboxes' resource use now: CPU (over 100 ms), memory, processes, disk written")
    .argument("<name...>")
    .option("--history", "one sandbox's samples its agent took while it ran (every 5 s by default, the last hour's), oldest first")
    .addOption(namespaceOption())
    .addOption(outputOption())
    .action(async (names: string[], options) => (await statsCommands()).stats(names, { ...globals(), ...options }));

  fsb
    .command("logs")
    .description("print a sandbox's output")
    .argument("<name>")
    .addOption(namespaceOption())
    .option("-f, --follow", "keep streaming until the sandbox exits")
    .option("--tail <lines>", "only the last <lines> lines of what the log keeps (with -f, then what comes; 0: only that); default: all")
    .action(async (name, options) => (await sandboxCommands()).logs(name, { ...globals(), ...options }));

  fsb
    .command("exec")
    .description("run a command in a sandbox; exits with its exit code (-it: interactively, in a terminal)")
    .argument("<name>")
    .argument("[command...]", "command and arguments (after --, or after the flags: its own flags follow its first word)")
    .addOption(namespaceOption())
    .option("-e, --env <NAME=VALUE>", "environment variable (repeatable)", collect, [] as string[])
    .option("-w, --workdir <dir>", "working directory")
    .option("-u, --user <USER[:GROUP]>", "run as this user, a name or a number (as docker exec -u); default: the image's USER")
    .option("-i, --interactive", "pass stdin to the command")
    .option("-t, --tty", "run it in a terminal (raw keys, window size, colours): -it for an interactive program")
    .addOption(accessTokenOption("-i and -t"))
    .action(async (name, command, options) => {
      process.exitCode = await (await import("./commands/interactive.js")).exec(name, command, { ...globals(), ...options });
    });

  fsb
    .command("shell")
    .description("an interactive login shell in a sandbox (bash, else sh); exits with its exit code")
    .argument("<name>")
    .addOption(namespaceOption())
    .option("-e, --env <NAME=VALUE>", "environment variable (repeatable)", collect, [] as string[])
    .option("-w, --workdir <dir>", "working directory")
    .option("-u, --user <USER>", "log in as this user, a name or a number; default: the daemon's default user")
    .addOption(accessTokenOption())
    .action(async (name, options) => {
      process.exitCode = await (await import("./commands/interactive.js")).shell(name, { ...globals(), ...options });
    });

  fsb
    .command("cp")
    .description(
      "copy a file or a directory tree into a sandbox (cp LOCAL NAME:PATH) or out of it (cp NAME:PATH LOCAL), with files' permission bits; - is stdin or stdout",
    )
    .argument("<src>", "LOCAL or NAME:PATH")
    .argument("<dest>", "NAME:PATH or LOCAL (a directory, or a path ending with /, keeps the source's name)")
    .addOption(namespaceOption())
    .addOption(accessTokenOption())
    .action(async (source, destination, options) => (await import("./commands/copy.js")).copy(source, destination, { ...globals(), ...options }));

  fsb
    .command("rm")
    .description("delete sandboxes (waits until container, task and snapshot are gone)")
    .argument("<names...>")
    .addOption(namespaceOption())
    .action(async (names, options) => (await sandboxCommands()).remove(names, { ...globals(), ...options }));

  fsb
    .command("delete")
    .description("delete sandboxes (delete NAME…, delete sandbox NAME…) or pools without sandboxes (delete pool NAME…)")
    .argument("<args...>", "sandbox names, or a kind (sandbox, pool) and names")
    .addOption(namespaceOption())
    .action(async (args, options, command) => {
      const { kind, names } = parseResourceArgs(args);
      if (names.length === 0)
        command.error(`error: name the ${kind}s to delete, e.g. fsb delete ${kind} NAME (a sandbox called ${args[0] ?? ""}: fsb rm ${args[0] ?? ""})`);
      if (kind === "pool") await (await poolCommands()).deletePools(names, { ...globals(), ...options });
      else await (await sandboxCommands()).remove(names, { ...globals(), ...options });
    });

  fsb
    .command("apply")
    .description("create or update Sandbox and SandboxPool objects from a YAML file (multi-document; - for stdin)")
    .requiredOption("-f, --file <file>", "manifest file")
    .addOption(namespaceOption())
    .action(async (options) => (await import("./commands/apply.js")).apply({ ...globals(), ...options }));

  fsb
    .command("agents")
    .description("list the pools' agents")
    .addOption(namespaceOption())
    .option("--pool <pool>", "only this pool")
    .addOption(outputOption())
    .action(async (options) => (await import("./commands/agents.js")).agents({ ...globals(), ...options }));

  fsb
    .command("pull")
    .description("pull an image on every ready agent of a pool, showing progress; one line per agent at the end")
    .argument("<image>", "image reference, e.g. python:3.12 or ghcr.io/org/app@sha256:…")
    .addOption(namespaceOption())
    .option("--pool <pool>", "pool whose agents pull it", "default")
    .action(async (image, options) => (await imageCommands()).pull(image, { ...globals(), ...options }));

  fsb
    .command("login")
    .description("save credentials for a registry (Docker's config.json format, in the data directory); agents use them at every pull")
    .argument("<registry>", "registry host, e.g. ghcr.io, docker.io or 127.0.0.1:5000")
    .option("-u, --username <user>", "user name")
    .option("--password-stdin", "read the password (or token) from stdin")
    .action(async (registry, options) => (await imageCommands()).login(registry, { ...globals(), ...options }));

  const e2b = fsb.command("e2b").description("E2B compatibility: E2B's own SDKs (npm and PyPI e2b) against this Fast Sandbox");
  e2b
    .command("env")
    .description('issue an E2B API key and print the exports E2B\'s SDKs need (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY): eval "$(fsb e2b env)"')
    .action(async () => (await import("./commands/e2b.js")).env(globals()));
  e2b
    .command("revoke")
    .argument("<key>", "the API key to revoke (e2b_…); - reads it from stdin, out of the process list")
    .description("revoke an E2B API key: E2B's API refuses it from then on")
    .action(async (key: string) => (await import("./commands/e2b.js")).revoke(key, globals()));

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
    .action(async (options) => (await import("./commands/janitor.js")).janitor({ ...globals(), ...options }));

  return fsb;
}

/** Flags whose empty value means something (`up --cgroup-root ''`: no cgroup root). */
const EMPTY_ALLOWED = new Set(["--cgroup-root"]);
/** Flags whose empty value the command refuses itself, with its own words (connect: "give a namespace"). */
const EMPTY_CHECKED_BY_COMMAND = new Set(["--namespace", "--fsb-namespace"]);
/** What a flag's value is, where its placeholder does not read as a noun. */
const PLACEHOLDER_NOUNS: Record<string, string> = {
  copies: "number of copies",
  lines: "number of lines",
  dir: "directory",
  ns: "namespace",
  url: "URL",
  checkpoint: "checkpoint's name",
};
/** The field (as isArgument reads it) and what to give, of each positional argument that takes a name or a value; `[command...]` is not one (an empty argument of a command is its own). */
const ARGUMENTS: Record<string, { field: string; give: string }> = {
  name: { field: "NAME", give: "a name" },
  names: { field: "NAME", give: "names, none of them empty" },
  sandbox: { field: "SANDBOX", give: "a sandbox's name" },
  "kind-or-name": { field: "NAME", give: "a sandbox's name, or a kind: sandbox, pool" },
  args: { field: "NAME", give: "names, none of them empty (after a kind, sandbox or pool, or not)" },
  ports: { field: "LOCAL:REMOTE", give: "LOCAL:REMOTE, :REMOTE or PORT" },
  src: { field: "SRC", give: "LOCAL or NAME:PATH (- for stdin)" },
  dest: { field: "DEST", give: "NAME:PATH or LOCAL (- for stdout)" },
  image: { field: "IMAGE", give: "an image reference, e.g. python:3.12" },
  registry: { field: "REGISTRY", give: "a registry host, e.g. ghcr.io" },
  key: { field: "KEY", give: "an API key (e2b_…), or - to read it from stdin" },
};

/**
 * Refuses an empty value of a flag (`--pool ''`, `-w ''`, `--expire=`) or of a name (`rm ''`), bad
 * usage (exit 2) before anything is asked: an empty value would be taken as no flag at all (a
 * generated name, every pool's sandboxes), or be refused later in words that name no flag.
 */
function refuseEmptyValues(command: CommandUnknownOpts): void {
  for (let owner: CommandUnknownOpts | null = command; owner; owner = owner.parent) {
    for (const option of owner.options) {
      const flag = option.long ?? option.short ?? option.name();
      if (EMPTY_ALLOWED.has(flag) || EMPTY_CHECKED_BY_COMMAND.has(flag)) continue;
      const key = option.attributeName();
      const value: unknown = owner.getOptionValue(key);
      if (owner.getOptionValueSource(key) !== "cli" || !(value === "" || (Array.isArray(value) && value.includes("")))) continue;
      const placeholder = /<([^>]+)>/.exec(option.flags)?.[1] ?? "value";
      const noun = PLACEHOLDER_NOUNS[placeholder] ?? placeholder;
      const give = `${/^[aeio]/i.test(noun) ? "an" : "a"} ${noun}`;
      throw new ValidationError(flag, `is empty: give ${give}${option.mandatory ? "" : ", or leave the flag out"}`);
    }
  }
  command.registeredArguments.forEach((argument, index) => {
    const about = ARGUMENTS[argument.name()];
    const value: unknown = command.processedArgs[index];
    if (about && (value === "" || (Array.isArray(value) && value.includes("")))) throw new ValidationError(about.field, `is empty: give ${about.give}`);
  });
}

/** Whether a refused field is one of the command line's: a flag (`--port`, `-f`) or a positional argument (`SRC`, `LOCAL:REMOTE`). */
function isArgument(field: string): boolean {
  return /^--?[a-z]/.test(field) || /^[A-Z]+(:[A-Z]+)?$/.test(field);
}

/**
 * Takes `-n NAMESPACE`, `-nNAMESPACE`, `--namespace NAMESPACE` and `--namespace=NAMESPACE` out of the
 * root's flags, the ones before the command (the last one given wins); the values of the root's other
 * flags are skipped, not read as the command.
 */
function takeRootNamespace(root: Command, argv: string[]): { argv: string[]; namespace?: string } {
  const kept = argv.slice(0, 2);
  let namespace: string | undefined;
  let i = 2;
  for (; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    if (arg === "--" || arg === "-" || !arg.startsWith("-")) break;
    if (arg === "-n" || arg === "--namespace") {
      if (i + 1 >= argv.length) throw new ValidationError("--namespace", "give the namespace after -n/--namespace");
      namespace = argv[++i];
    } else if (arg.startsWith("--namespace=")) namespace = arg.slice("--namespace=".length);
    else if (/^-n[^-]/.test(arg)) namespace = arg.slice(2);
    else {
      kept.push(arg);
      const option = root.options.find((o) => o.long === arg || o.short === arg);
      if (option?.required && i + 1 < argv.length) kept.push(argv[++i] ?? "");
    }
  }
  return { argv: [...kept, ...argv.slice(i)], ...(namespace !== undefined ? { namespace } : {}) };
}

/** Runs the program; `programName` is what it runs as (`kubectl-fs` targets a cluster, see target.ts). */
export async function main(argv: string[], programName = programNameOf(argv[1])): Promise<number> {
  exitWhenReaderGoes();
  try {
    const root: { namespace?: string } = {};
    setCommandName(programName === KUBECTL_PLUGIN_NAME ? "kubectl fs" : "fsb");
    const fsb = program(programName, root);
    const taken = takeRootNamespace(fsb, argv);
    if (taken.namespace !== undefined) root.namespace = taken.namespace;
    await fsb.parseAsync(separateCommandWords(fsb, taken.argv));
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version are not errors; everything else commander throws is bad usage.
      return error.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    const fsbError = printFailure(error);
    return fsbError instanceof ValidationError && isArgument(fsbError.field) ? EXIT_USAGE : EXIT_ERROR;
  } finally {
    closeConnections();
  }
}

process.exitCode = await main(process.argv);
