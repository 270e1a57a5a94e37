/**
 * Test fixture: a KubeConfig for an "API server" at `server` (a loopback test server, or an address
 * where none listens), authenticated with a dummy token. Test code only: excluded from the build.
 */
import { KubeConfig } from "@kubernetes/client-node";

export function testKubeConfig(server: string): KubeConfig {
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromOptions({
    // Plain HTTP on loopback: the client allows it only with skipTLSVerify.
    clusters: [{ name: "test", server, skipTLSVerify: true }],
    users: [{ name: "nobody", token: "x" }],
    contexts: [{ name: "test", cluster: "test", user: "nobody" }],
    currentContext: "test",
  });
  return kubeConfig;
}
