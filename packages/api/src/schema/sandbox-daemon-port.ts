/**
 * The port of the in-sandbox daemon (process and filesystem API, E2B's envd port). Every Isolated
 * sandbox serves it on its own address, so it is reachable through the sandbox proxy (and an
 * agent's relay) without being declared in `spec.exposedPorts`.
 */
export const SANDBOX_DAEMON_PORT = 49983;
