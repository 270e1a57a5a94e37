module fast-sandbox.io/envd

go 1.24.0

require (
	connectrpc.com/connect v1.19.1
	github.com/creack/pty v1.1.24
	github.com/fsnotify/fsnotify v1.9.0
	google.golang.org/protobuf v1.36.12
)

require golang.org/x/sys v0.13.0 // indirect
