/**
 * Marks bridge ports as a sandbox network's: their device group (`ip link set dev PORT group N`),
 * which the bridge table's rules match (`meta iifgroup`, firewall-rules.ts) to drop whatever such a
 * port sends that its own port chain did not accept. The mark lives on the interface itself, so it
 * survives whatever happens to the nftables state (a `flush ruleset`, an agent restart): a port
 * whose guard is lost fails closed. Through iproute2, as a port; its failures are FsbError.
 */
import { execFile } from "node:child_process";
import { FsbError } from "@fast-sandbox/api/core";

export interface BridgePorts {
  /** Sets the device group of every interface (one `ip` process for all); rejects when any is not set. */
  mark(interfaces: readonly string[], group: number): Promise<void>;
}

/** An interface name as the kernel takes it (at most 15 bytes, no space or '/'). */
const INTERFACE_NAME = /^[A-Za-z0-9._-]{1,15}$/;

export class IpBridgePorts implements BridgePorts {
  constructor(private readonly binary = "ip") {}

  mark(interfaces: readonly string[], group: number): Promise<void> {
    if (interfaces.length === 0) return Promise.resolve();
    for (const name of interfaces) {
      if (!INTERFACE_NAME.test(name)) return Promise.reject(new FsbError("internal", `${JSON.stringify(name)} is not an interface name`));
    }
    // -force: every line is tried; the exit status says whether one failed, stderr which.
    const script = interfaces.map((name) => `link set dev ${name} group ${group}\n`).join("");
    return new Promise((resolve, reject) => {
      const child = execFile(this.binary, ["-force", "-batch", "-"], { timeout: 10_000, killSignal: "SIGKILL", encoding: "utf8" }, (error, _stdout, stderr) => {
        if (!error) return resolve();
        if ((error as NodeJS.ErrnoException).code === "ENOENT") {
          reject(
            new FsbError("failed_precondition", "ip (iproute2) is missing: sandbox networks need it (Debian: apt-get install iproute2)", { cause: error }),
          );
          return;
        }
        reject(
          new FsbError("internal", `could not mark bridge ports ${interfaces.join(", ")} (group ${group}): ${stderr.trim() || error.message}`, {
            cause: error,
          }),
        );
      });
      // An ip that is missing or exits early closes its end: the callback above tells why.
      child.stdin?.on("error", () => undefined);
      child.stdin?.end(script);
    });
  }
}
