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
	"time"

	"fast-sandbox.io/envd"
	"fast-sandbox.io/envd/internal/auth"
	"fast-sandbox.io/envd/internal/files"
	"fast-sandbox.io/envd/internal/filesystem"
	"fast-sandbox.io/envd/internal/quiesce"
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
	defaultUser := auth.AutoDefaultUser
	if text, set := os.LookupEnv("FSB_ENVD_DEFAULT_USER"); set {
		defaultUser = text
	}
	listen := flag.String("listen", defaultListen, "host:port to serve on, HTTP/1.1 and h2c (env FSB_ENVD_LISTEN)")
	user := flag.String("default-user", defaultUser, "user of requests that name none (until /init sets one): a name, \"auto\" (E2B's account `user` when the image has it, else the daemon's own), or empty for the daemon's own (env FSB_ENVD_DEFAULT_USER)")
	group := flag.String("default-group", os.Getenv("FSB_ENVD_DEFAULT_GROUP"), "the default user's only group, a name or a number, as the GROUP of an image's USER name:group; empty for the user's own groups (env FSB_ENVD_DEFAULT_GROUP)")
	maxUpload := flag.Int64("max-upload-bytes", defaultMaxUpload, "largest accepted /files upload, after gzip decoding (env FSB_ENVD_MAX_UPLOAD_BYTES)")
	protected := flag.String("protected-dir", "/.fast-sandbox", "directory the API never touches (the daemon's own files); empty for none")
	serveInside := flag.Bool("serve-inside-callers", os.Getenv("FSB_ENVD_SERVE_INSIDE_CALLERS") == "1", "serve every route to callers inside the sandbox's network (the loopback, its own addresses) too, which otherwise get only /health and GET /envs: for a daemon run outside a sandbox (env FSB_ENVD_SERVE_INSIDE_CALLERS=1)")
	watcherIdle := flag.Duration("watcher-idle-timeout", filesystem.DefaultWatcherIdleTimeout, "remove a polled watcher (CreateWatcher) that GetWatcherEvents has not polled for this long")
	printVersion := flag.Bool("version", false, "print the E2B envd version this daemon is compatible with and exit")
	stateDir := flag.String("state-dir", quiesce.DefaultStateDir, "where the daemon records its pid and state (envd.pid, envd.state) when that directory exists")
	control := flag.String("control", "", "instead of serving: ask the running daemon to quiesce (close every socket, for a checkpoint) or resume, and wait until it has")
	hostname := flag.String("hostname", "", "instead of serving: set the sandbox's hostname (needs CAP_SYS_ADMIN; with -control, before it)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see -help)", flag.Args())
	}
	if *printVersion {
		fmt.Println(envd.Version)
		return nil
	}
	if *control != "" || *hostname != "" {
		if *hostname != "" {
			if err := quiesce.SetHostname(*hostname); err != nil {
				return fmt.Errorf("set the hostname to %q: %w", *hostname, err)
			}
		}
		if *control != "" {
			return quiesce.Control(*stateDir, *control, 5*time.Second)
		}
		return nil
	}
	if *watcherIdle <= 0 {
		return fmt.Errorf("-watcher-idle-timeout %v: give a positive duration", *watcherIdle)
	}
	if *maxUpload <= 0 {
		return fmt.Errorf("-max-upload-bytes %d: give a positive number of bytes", *maxUpload)
	}
	var protectedDirs []string
	if *protected != "" {
		protectedDirs = append(protectedDirs, *protected)
	}
	daemon := server.New(server.Options{ProtectedDirs: protectedDirs, MaxUploadBytes: *maxUpload, DefaultUser: *user, DefaultGroup: *group, ServeInsideCallers: *serveInside, PolledWatcherIdleTimeout: *watcherIdle})
	// The signals are taken before the pid is recorded: the agent signals the pid it reads there, and
	// SIGUSR1 or SIGUSR2 arriving before signal.Notify would kill the daemon (their default action).
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	requests := make(chan os.Signal, 8)
	signal.Notify(requests, quiesce.QuiesceSignal, quiesce.ResumeSignal)
	recorder := quiesce.Recorder{Dir: quiesce.StateDirIfPresent(*stateDir)}
	if err := recorder.RecordPid(); err != nil {
		fmt.Fprintf(os.Stderr, "fsb-envd: cannot record the pid (checkpoints of this sandbox will fail): %v\n", err)
	}
	for {
		listener, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("cannot listen on %s: %w", *listen, err)
		}
		if err := recorder.RecordState(quiesce.Serving); err != nil {
			fmt.Fprintf(os.Stderr, "fsb-envd: cannot record the state: %v\n", err)
		}
		quiesced, err := serveUntilQuiesced(ctx, daemon, listener, requests)
		if err != nil || !quiesced {
			return err
		}
		watch := quiesce.NewHostnameWatch(nil)
		if err := recorder.RecordResumeWatch("hostname"); err != nil {
			fmt.Fprintf(os.Stderr, "fsb-envd: cannot record the resume watch: %v\n", err)
		}
		if err := recorder.RecordState(quiesce.Quiesced); err != nil {
			fmt.Fprintf(os.Stderr, "fsb-envd: cannot record the state: %v\n", err)
		}
		if !waitForResume(ctx, requests, watch) {
			return nil
		}
	}
}

// serveUntilQuiesced serves until ctx ends (false) or a quiesce request arrives (true).
func serveUntilQuiesced(ctx context.Context, daemon *server.Daemon, listener net.Listener, requests <-chan os.Signal) (bool, error) {
	quiesceNow := make(chan struct{})
	served := make(chan struct{})
	go func() {
		for {
			select {
			case request := <-requests:
				if request == quiesce.QuiesceSignal {
					close(quiesceNow)
					return
				}
			case <-served:
				return
			}
		}
	}()
	defer close(served)
	return daemon.ServeUntilQuiesced(ctx, listener, quiesceNow)
}

// waitForResume waits, holding no socket, for a resume request or a new hostname (a copy restored
// under its own name) (true), or the end of ctx (false).
func waitForResume(ctx context.Context, requests <-chan os.Signal, watch quiesce.HostnameWatch) bool {
	ticker := time.NewTicker(quiesce.HostnameWatchInterval)
	defer ticker.Stop()
	for {
		select {
		case request := <-requests:
			if request == quiesce.ResumeSignal {
				return true
			}
		case <-ticker.C:
			if watch.Changed() {
				return true
			}
		case <-ctx.Done():
			return false
		}
	}
}
