/** The API group and version of the resources (Sandbox, SandboxPool), without their schemas. */
export const GROUP = "sandbox.fast.io";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;
