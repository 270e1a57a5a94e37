/** `fsb token` and `fsb port-forward`: reaching a sandbox's ports through the sandbox proxy. */
import { FailedPreconditionError } from "@fast-sandbox/api";
import { accessTokenFor, saveAccessToken } from "../access-tokens.js";
import { connect, type GlobalOptions } from "../connection.js";
import { forwardPort, parsePortMapping, tunnelTarget } from "../port-forward.js";
import { stopSignalled } from "../stop-signals.js";

/** Gives the sandbox a new access token and prints it alone on stdout (`TOKEN=$(fsb token NAME)`); the old one stops working. */
export async function token(name: string, options: GlobalOptions & { namespace?: string }): Promise<void> {
  const { client, namespace, dataDir } = await connect(options);
  const { accessToken } = await client.sandboxes.rotateAccessToken(name, { namespace });
  const saved = dataDir ? saveAccessToken(dataDir, namespace, name, accessToken) : undefined;
  process.stdout.write(`${accessToken}\n`);
  process.stderr.write(`new access token of sandbox ${namespace}/${name}; the previous one no longer works${saved ? ` (saved in ${saved})` : ""}\n`);
}

export interface PortForwardOptions extends GlobalOptions {
  namespace?: string;
  address: string;
  token?: string;
}

/** Forwards a local port to a port of the sandbox until interrupted (Ctrl-C). */
export async function portForward(name: string, mapping: string, options: PortForwardOptions): Promise<void> {
  const { localPort, remotePort } = parsePortMapping(mapping);
  const { client, namespace, dataDir } = await connect(options);
  // A sandbox that is not there is "not found" (exit 1); one whose token is missing, bad usage (exit 2), as for cp and exec -it.
  const sandbox = await client.sandboxes.get(name, { namespace });
  const accessToken = accessTokenFor(namespace, name, { token: options.token, dataDir });
  const exposed = sandbox.spec.exposedPorts ?? [];
  const endpoint = sandbox.status?.endpoints?.[exposed.indexOf(remotePort)];
  if (!exposed.includes(remotePort)) {
    throw new FailedPreconditionError(
      `sandbox ${namespace}/${name} does not expose port ${remotePort} (${exposed.length > 0 ? `it exposes ${exposed.join(", ")}` : "it exposes none"}; ports are declared at create: fsb run -p PORT)`,
    );
  }
  if (!endpoint) throw new FailedPreconditionError(`sandbox ${namespace}/${name} has no endpoint yet (phase ${sandbox.status?.phase ?? "Pending"})`);
  const forwarder = await forwardPort({
    address: options.address,
    localPort,
    target: tunnelTarget(endpoint),
    accessToken,
    onError: (error) => process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`),
  });
  process.stdout.write(`Forwarding from ${options.address}:${forwarder.port} -> ${namespace}/${name}:${remotePort} (through ${endpoint})\n`);
  // Once one came, neither is listened for: another ends the process even if closing hangs.
  await stopSignalled();
  await forwarder.close();
}
