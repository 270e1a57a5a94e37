// Package server puts the daemon's routes on one port, HTTP/1.1 and cleartext HTTP/2 (h2c, prior
// knowledge) alike: the process.Process and filesystem.Filesystem Connect services (Connect JSON
// and binary, gRPC, gRPC-Web), GET /health, GET|POST /files, GET /envs and POST /init.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"

	"fast-sandbox.io/envd"
	"fast-sandbox.io/envd/gen/filesystem/filesystemconnect"
	"fast-sandbox.io/envd/gen/process/processconnect"
	"fast-sandbox.io/envd/internal/auth"
	"fast-sandbox.io/envd/internal/files"
	"fast-sandbox.io/envd/internal/filesystem"
	"fast-sandbox.io/envd/internal/paths"
	"fast-sandbox.io/envd/internal/process"
	"fast-sandbox.io/envd/internal/state"
	"fast-sandbox.io/envd/internal/streams"
	"fast-sandbox.io/envd/internal/users"
)

// DefaultListen is E2B's envd port on every address.
const DefaultListen = "0.0.0.0:49983"

// maxRPCMessageBytes bounds one RPC message (SendInput data, for instance).
const maxRPCMessageBytes = 16 << 20

// Options configure a daemon.
type Options struct {
	// Users are read below this root. @default "/"
	Root string
	// ProtectedDirs are never touched through the API. @default none
	ProtectedDirs []string
	// MaxUploadBytes bounds a /files upload. @default files.DefaultMaxUploadBytes (1 GiB)
	MaxUploadBytes int64
	// SandboxEnv is what every process's environment starts from. @default the daemon's own, FSB_ENVD_* left out
	SandboxEnv []string
	// DefaultUser acts for requests that name no user while /init set none: a name, auth.AutoDefaultUser
	// (E2B's `user` when the image has it, else the daemon's own), or "" for the daemon's own. @default ""
	DefaultUser string
	// DefaultGroup is DefaultUser's only group (a name or a number), as in an image's `USER name:group`;
	// "" gives it its own groups (auth.Authenticator.FallbackGroup). @default ""
	DefaultGroup string
	// ServeInsideCallers serves every route to callers inside the sandbox's own network (the
	// loopback, its own addresses) too, which otherwise get only /health and GET /envs
	// (inside_callers.go): for a daemon run outside a sandbox, or by tests. @default false
	ServeInsideCallers bool
	// Interfaces lists this network namespace's addresses. @default net.InterfaceAddrs
	Interfaces func() ([]net.Addr, error)
	// StreamSendTimeout is how long a watch event waits for a client that stopped reading before its
	// stream ends, and how long a process waits for a client whose output backlog is full
	// (ProcessBacklogBytes) before that client's stream ends. @default streams.DefaultSendTimeout (15 s)
	StreamSendTimeout time.Duration
	// ProcessBacklogBytes is how much of a process's output is queued for a client that does not
	// read it yet (E2B's SDKs read a background command's output only once it is waited for) before
	// the process waits for that client. @default process.DefaultBacklogBytes (16 MiB)
	ProcessBacklogBytes int
	// PolledWatcherIdleTimeout removes a polled watcher (CreateWatcher) that GetWatcherEvents has
	// not polled for this long, freeing its inotify instance. @default filesystem.DefaultWatcherIdleTimeout (10 min)
	PolledWatcherIdleTimeout time.Duration
	// MaxPolledWatchers bounds the polled watchers kept at once; past it CreateWatcher answers
	// resource_exhausted. @default filesystem.DefaultMaxPolledWatchers (256)
	MaxPolledWatchers int
	// Clock is the time polled watchers expire by (tests move it). @default time.Now
	Clock func() time.Time
}

// Daemon is the daemon's HTTP handler and what it holds.
type Daemon struct {
	State     *state.State
	Processes *process.Manager
	handler   http.Handler
	// connContext classifies each connection (inside or outside the sandbox) once, when accepted.
	connContext func(context.Context, net.Conn) context.Context
}

// New wires the services.
func New(options Options) *Daemon {
	st := state.New()
	authenticator := auth.New(users.Directory{Root: options.Root}, st)
	authenticator.Fallback = options.DefaultUser
	authenticator.FallbackGroup = options.DefaultGroup
	guard := paths.NewGuard(options.ProtectedDirs...)
	sandboxEnv := options.SandboxEnv
	if sandboxEnv == nil {
		for _, entry := range os.Environ() {
			if !strings.HasPrefix(entry, "FSB_ENVD_") {
				sandboxEnv = append(sandboxEnv, entry)
			}
		}
	}
	processes := process.NewManager()
	interceptors := connect.WithInterceptors(&tokenInterceptor{auth: authenticator})
	limits := connect.WithReadMaxBytes(maxRPCMessageBytes)

	mux := http.NewServeMux()
	processPrefix, processHandler := processconnect.NewProcessHandler(&process.Service{Processes: processes, Auth: authenticator, State: st, SandboxEnv: sandboxEnv, Backlog: process.Backlog{Bytes: options.ProcessBacklogBytes, Wait: options.StreamSendTimeout}}, interceptors, limits)
	filesystemPrefix, filesystemHandler := filesystemconnect.NewFilesystemHandler(&filesystem.Service{Auth: authenticator, State: st, Guard: guard, Watchers: filesystem.NewWatchers(options.PolledWatcherIdleTimeout, options.MaxPolledWatchers, options.Clock)}, interceptors, limits)
	mux.Handle(processPrefix, processHandler)
	mux.Handle(filesystemPrefix, streams.WithSendTimeout(filesystemHandler, options.StreamSendTimeout))
	mux.Handle("/files", &files.Handler{Auth: authenticator, State: st, Guard: guard, MaxUploadBytes: options.MaxUploadBytes})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Fsb-Envd-Version", envd.Version)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /envs", func(w http.ResponseWriter, r *http.Request) {
		if !authenticator.TokenValid(r.Header) {
			files.WriteError(w, http.StatusUnauthorized, "missing or wrong X-Access-Token")
			return
		}
		environment := map[string]string{}
		for _, entry := range sandboxEnv {
			if name, value, found := strings.Cut(entry, "="); found && name != "" {
				environment[name] = value
			}
		}
		maps.Copy(environment, st.EnvVars())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(environment)
	})
	mux.HandleFunc("POST /init", func(w http.ResponseWriter, r *http.Request) {
		if !authenticator.TokenValid(r.Header) {
			files.WriteError(w, http.StatusUnauthorized, "an access token is set: /init must carry it in X-Access-Token")
			return
		}
		var init state.Init
		decoder := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		// An empty body changes nothing.
		if err := decoder.Decode(&init); err != nil && !errors.Is(err, io.EOF) {
			files.WriteError(w, http.StatusBadRequest, fmt.Sprintf("the body must be JSON {envVars?, defaultUser?, defaultWorkdir?, accessToken?}: %v", err))
			return
		}
		if init.DefaultUser != nil && *init.DefaultUser != "" {
			if _, err := authenticator.Users.Lookup(*init.DefaultUser); err != nil {
				files.WriteError(w, http.StatusBadRequest, fmt.Sprintf("defaultUser: %v", err))
				return
			}
		}
		st.Apply(init)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		files.WriteError(w, http.StatusNotFound, fmt.Sprintf("%s %s: no such route (there are /health, /files, /envs, /init, /process.Process/*, /filesystem.Filesystem/*)", r.Method, r.URL.Path))
	})
	var handler http.Handler = mux
	var connContext func(context.Context, net.Conn) context.Context
	if !options.ServeInsideCallers {
		interfaces := options.Interfaces
		if interfaces == nil {
			interfaces = net.InterfaceAddrs
		}
		handler = refuseInsideCallers(mux, interfaces, []string{processPrefix, filesystemPrefix})
		connContext = withCallerClass(interfaces)
	}
	return &Daemon{State: st, Processes: processes, handler: withCORS(handler, authenticator, []string{processPrefix, filesystemPrefix}), connContext: connContext}
}

func (d *Daemon) ServeHTTP(w http.ResponseWriter, r *http.Request) { d.handler.ServeHTTP(w, r) }

// Serve serves on listener until ctx ends, HTTP/1.1 and h2c on the same port.
func (d *Daemon) Serve(ctx context.Context, listener net.Listener) error {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	server := &http.Server{Handler: d, Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second, ConnContext: d.connContext}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown)
	}()
	err := server.Serve(listener)
	if errors.Is(err, http.ErrServerClosed) {
		<-stopped
		return nil
	}
	return err
}

// tokenInterceptor refuses RPCs without the access token once /init has set one.
type tokenInterceptor struct{ auth *auth.Authenticator }

var errToken = errors.New("missing or wrong X-Access-Token: this sandbox's daemon requires its access token")

func (t *tokenInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, request connect.AnyRequest) (connect.AnyResponse, error) {
		if !t.auth.TokenValid(request.Header()) {
			return nil, connect.NewError(connect.CodeUnauthenticated, errToken)
		}
		return next(ctx, request)
	}
}

func (t *tokenInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (t *tokenInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if !t.auth.TokenValid(conn.RequestHeader()) {
			return connect.NewError(connect.CodeUnauthenticated, errToken)
		}
		return next(ctx, conn)
	}
}

// errBrowserWithoutToken refuses a browser's request to a daemon without an access token.
var errBrowserWithoutToken = errors.New("browsers may not call this sandbox's daemon directly while it has no access token (the request carries an Origin header): call it through the sandbox proxy, which does not forward Origin, or have /init set an access token first")

// withCORS lets browsers call the daemon (E2B's SDK runs in browsers too) — once it has an access
// token. Without one, nothing but the network guards it, and any web page a browser opens could
// drive it wherever the browser can reach sandbox addresses: a multipart POST /files, for one, is a
// "simple" request a page sends without asking first. Browsers mark every request of a page
// (preflights included) with Origin, which other clients do not send and the sandbox proxy strips:
// so a request that carries one is refused, preflight or not, until /init sets a token.
func withCORS(next http.Handler, authenticator *auth.Authenticator, rpcPrefixes []string) http.Handler {
	rpcErrors := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header := w.Header()
		// Readable by the page (Allow-Origin), so that its developer sees why it is refused.
		header.Set("Access-Control-Allow-Origin", "*")
		if len(r.Header.Values("Origin")) > 0 && authenticator.State.AccessToken() == "" {
			preflight := r.Method == http.MethodOptions
			if !preflight && isRPC(r.URL.Path, rpcPrefixes) && rpcErrors.IsSupported(r) {
				_ = rpcErrors.Write(w, r, connect.NewError(connect.CodePermissionDenied, errBrowserWithoutToken))
				return
			}
			files.WriteError(w, http.StatusForbidden, errBrowserWithoutToken.Error())
			return
		}
		header.Set("Access-Control-Expose-Headers", "Grpc-Status, Grpc-Message, Grpc-Status-Details-Bin, Connect-Content-Encoding, Connect-Accept-Encoding, Content-Encoding, Content-Length")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			header.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS")
			if requested := r.Header.Get("Access-Control-Request-Headers"); requested != "" {
				header.Set("Access-Control-Allow-Headers", requested)
			}
			header.Set("Access-Control-Max-Age", "7200")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
