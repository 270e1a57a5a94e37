// Package envd holds what the rest of Fast Sandbox reads about the in-sandbox daemon: the E2B envd
// version it is compatible with, kept in version.json so the control plane reads the same file.
package envd

import (
	_ "embed"
	"encoding/json"
)

//go:embed version.json
var versionJSON []byte

// Version is the E2B envd version whose features fsb-envd implements. E2B's SDKs switch features on
// by it (recursive watch 0.1.4, the stdin flag 0.3.0, the daemon's default user 0.4.0, CloseStdin
// 0.5.2, octet-stream and gzip uploads 0.5.7), so it must not claim more than is implemented.
var Version = func() string {
	var parsed struct {
		EnvdVersion string `json:"envdVersion"`
	}
	if err := json.Unmarshal(versionJSON, &parsed); err != nil || parsed.EnvdVersion == "" {
		panic("packages/envd/version.json must hold {\"envdVersion\": \"x.y.z\"}")
	}
	return parsed.EnvdVersion
}()
