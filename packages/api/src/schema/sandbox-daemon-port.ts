/**
 * The port of the in-sandbox daemon (process and filesystem API, E2B's envd port). Every Isolated
 * sandbox serves it on its own address, so it is reachable through the sandbox proxy (and an
 * agent's relay) without being declared in `spec.exposedPorts`.
 */
export const SANDBOX_DAEMON_PORT = 49983;

/**
 * E2B's code interpreter port, served by the code interpreter image (images/code-interpreter): it
 * runs the code sent to it as the sandbox's user and checks no token of its own (the sandbox proxy
 * does), so, like the daemon's, a sandbox's peers never reach it.
 */
export const CODE_INTERPRETER_PORT = 49999;

/** The ports of a sandbox that run code for whoever reaches them: only through the sandbox proxy (and its token), never from a peer. */
export const CODE_RUNNING_PORTS: readonly number[] = [SANDBOX_DAEMON_PORT, CODE_INTERPRETER_PORT];
