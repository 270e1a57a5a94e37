package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"connectrpc.com/connect"

	"fast-sandbox.io/envd/internal/files"
)

// The daemon acts as any user of the sandbox, root included, and checks no token of its own unless
// /init set one (E2B's contract). So it answers nothing but /health and GET /envs to a caller
// inside the sandbox's own network — a connection from the loopback or from one of the sandbox's
// own addresses — where an unprivileged process of the sandbox would otherwise act as root through
// it. GET /envs only reads the environment the sandbox's processes get anyway, and E2B's
// code-interpreter template calls it from inside (its server's GET localhost:49983/envs, which
// must succeed).
// Its callers are outside: the sandbox proxy (which checks the sandbox's access token) and the
// agent, from the host's side of the sandbox's bridge. A process without CAP_NET_ADMIN cannot make
// a connection that comes from elsewhere: one bound to a foreign address (IP_FREEBIND) never
// receives the answer to its SYN, which is routed out of the sandbox.

// errInsideCaller says why a caller inside the sandbox is refused and what it can do instead.
var errInsideCaller = errors.New("the in-sandbox daemon serves callers outside the sandbox only (the sandbox proxy, with the sandbox's access token); from inside the sandbox (the loopback or the sandbox's own address) only GET /health and GET /envs answer")

// interfaceAddresses lists the addresses of the network namespace's interfaces.
type interfaceAddresses func() ([]net.Addr, error)

// callerInsideKey is the context key of a connection's classification (ConnContext).
type callerInsideKey struct{}

// callerInside reports whether remote (a connection's remote host:port) is an address of this
// network namespace: a loopback address, or one of its interfaces'. When it cannot tell (an
// address it cannot parse, the interfaces unreadable) it says inside: refused.
func callerInside(remote string, addresses interfaceAddresses) bool {
	addrPort, err := netip.ParseAddrPort(remote)
	if err != nil {
		return true
	}
	ip := addrPort.Addr().Unmap().WithZone("")
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	list, err := addresses()
	if err != nil {
		return true
	}
	for _, address := range list {
		network, ok := address.(*net.IPNet)
		if !ok {
			continue
		}
		if own, ok := netip.AddrFromSlice(network.IP); ok && own.Unmap() == ip {
			return true
		}
	}
	return false
}

// withCallerClass is an http.Server's ConnContext: it classifies a connection once, when it is accepted.
func withCallerClass(addresses interfaceAddresses) func(context.Context, net.Conn) context.Context {
	return func(ctx context.Context, conn net.Conn) context.Context {
		return context.WithValue(ctx, callerInsideKey{}, callerInside(conn.RemoteAddr().String(), addresses))
	}
}

// refuseInsideCallers answers every request of a caller inside the sandbox but /health and GET
// /envs with permission denied: a Connect error for an RPC (in the protocol the request speaks),
// else 403 with the JSON error of the daemon's HTTP routes.
func refuseInsideCallers(next http.Handler, addresses interfaceAddresses, rpcPrefixes []string) http.Handler {
	rpcErrors := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inside, classified := r.Context().Value(callerInsideKey{}).(bool)
		if !classified {
			inside = callerInside(r.RemoteAddr, addresses)
		}
		if !inside || r.URL.Path == "/health" || (r.Method == http.MethodGet && r.URL.Path == "/envs") {
			next.ServeHTTP(w, r)
			return
		}
		if isRPC(r.URL.Path, rpcPrefixes) && rpcErrors.IsSupported(r) {
			_ = rpcErrors.Write(w, r, connect.NewError(connect.CodePermissionDenied, errInsideCaller))
			return
		}
		files.WriteError(w, http.StatusForbidden, errInsideCaller.Error())
	})
}

// isRPC tells the routes of the Connect services (under their prefixes, "/process.Process/"…)
// from the daemon's HTTP routes.
func isRPC(path string, prefixes []string) bool {
	for _, prefix := range prefixes {
		if strings.HasPrefix(path, prefix) {
			return true
		}
	}
	return false
}
