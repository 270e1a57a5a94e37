// fsb-envd is Fast Sandbox's in-sandbox daemon, wire-compatible with E2B's envd: E2B's SDKs run
// commands, PTYs and file transfers in a sandbox through it. The helper (process 1 of an Isolated
// sandbox) starts and supervises it; it writes nothing but its own failures, to stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"fast-sandbox.io/envd"
	"fast-sandbox.io/envd/internal/files"
	"fast-sandbox.io/envd/internal/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "fsb-envd: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	defaultMaxUpload := files.DefaultMaxUploadBytes
	if text := os.Getenv("FSB_ENVD_MAX_UPLOAD_BYTES"); text != "" {
		parsed, err := strconv.ParseInt(text, 10, 64)
		if err != nil || parsed <= 0 {
			return fmt.Errorf("FSB_ENVD_MAX_UPLOAD_BYTES=%q is not a positive number of bytes", text)
		}
		defaultMaxUpload = parsed
	}
	defaultListen := server.DefaultListen
	if text := os.Getenv("FSB_ENVD_LISTEN"); text != "" {
		defaultListen = text
	}
	listen := flag.String("listen", defaultListen, "host:port to serve on, HTTP/1.1 and h2c (env FSB_ENVD_LISTEN)")
	maxUpload := flag.Int64("max-upload-bytes", defaultMaxUpload, "largest accepted /files upload, after gzip decoding (env FSB_ENVD_MAX_UPLOAD_BYTES)")
	protected := flag.String("protected-dir", "/.fast-sandbox", "directory the API never touches (the daemon's own files); empty for none")
	printVersion := flag.Bool("version", false, "print the E2B envd version this daemon is compatible with and exit")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see -help)", flag.Args())
	}
	if *printVersion {
		fmt.Println(envd.Version)
		return nil
	}
	if *maxUpload <= 0 {
		return fmt.Errorf("-max-upload-bytes %d: give a positive number of bytes", *maxUpload)
	}
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", *listen, err)
	}
	var protectedDirs []string
	if *protected != "" {
		protectedDirs = append(protectedDirs, *protected)
	}
	daemon := server.New(server.Options{ProtectedDirs: protectedDirs, MaxUploadBytes: *maxUpload})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return daemon.Serve(ctx, listener)
}
