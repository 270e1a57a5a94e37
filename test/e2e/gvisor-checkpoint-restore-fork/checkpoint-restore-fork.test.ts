/** The checkpoint, restore and fork suite on the agents' default runsc: Debian 12's (20221219). */
import { checkpointRestoreForkSuite } from "./checkpoint-restore-fork.suite.js";

checkpointRestoreForkSuite({ label: "Debian 12's runsc", copyIdentityBy: "exec", inPlaceResumedBy: "signal", tcpTimeWait: "refused, the sandbox stopped" });
