package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"fast-sandbox.io/envd/gen/process"
	"fast-sandbox.io/envd/gen/process/processconnect"
	"fast-sandbox.io/envd/internal/server"
	"fast-sandbox.io/envd/internal/state"
)

// serveOnLoopback serves daemon on a loopback port until the test ends and returns its URL.
func serveOnLoopback(t *testing.T, daemon *server.Daemon) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- daemon.Serve(ctx, listener) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + listener.Addr().String()
}

// interfaces stands for a sandbox's network: its own address 10.88.0.7 (and the loopback's).
func interfaces() ([]net.Addr, error) {
	return []net.Addr{
		&net.IPNet{IP: net.ParseIP("127.0.0.1"), Mask: net.CIDRMask(8, 32)},
		&net.IPNet{IP: net.ParseIP("10.88.0.7").To4(), Mask: net.CIDRMask(16, 32)},
		&net.IPNet{IP: net.ParseIP("fe80::1"), Mask: net.CIDRMask(64, 128)},
	}, nil
}

func TestCallersInsideTheSandboxGetOnlyHealthAndEnvs(t *testing.T) {
	daemon := server.New(server.Options{SandboxEnv: []string{"SECRET=1"}, Interfaces: interfaces})
	url := serveOnLoopback(t, daemon)

	health, err := http.Get(url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	_ = health.Body.Close()
	if health.StatusCode != http.StatusNoContent {
		t.Fatalf("/health from the loopback: %d, want 204", health.StatusCode)
	}

	// GET /envs, as E2B's code-interpreter template server calls it from inside (its values are
	// the sandbox's own environment), with the access token once one is set.
	envs := func(token string) *http.Response {
		request, _ := http.NewRequest(http.MethodGet, url+"/envs", nil)
		if token != "" {
			request.Header.Set("X-Access-Token", token)
		}
		response, err := http.DefaultClient.Do(request)
		if err != nil {
			t.Fatal(err)
		}
		return response
	}
	response := envs("")
	var environment map[string]string
	if err := json.NewDecoder(response.Body).Decode(&environment); err != nil || response.StatusCode != http.StatusOK || environment["SECRET"] != "1" {
		t.Fatalf("GET /envs from the loopback: %d %v %v, want 200 with the sandbox's environment", response.StatusCode, environment, err)
	}
	_ = response.Body.Close()
	token := "the-token"
	daemon.State.Apply(state.Init{AccessToken: &token})
	for given, want := range map[string]int{"": http.StatusUnauthorized, token: http.StatusOK} {
		response := envs(given)
		_ = response.Body.Close()
		if response.StatusCode != want {
			t.Fatalf("GET /envs from the loopback with the access token %q: %d, want %d", given, response.StatusCode, want)
		}
	}

	for _, request := range []struct{ method, path string }{{http.MethodGet, "/files?path=/etc/passwd"}, {http.MethodPost, "/envs"}, {http.MethodDelete, "/envs"}} {
		path := request.method + " " + request.path
		call, _ := http.NewRequest(request.method, url+request.path, nil)
		call.Header.Set("X-Access-Token", token)
		response, err := http.DefaultClient.Do(call)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Message string `json:"message"`
			Code    int    `json:"code"`
		}
		if err := json.NewDecoder(response.Body).Decode(&body); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		_ = response.Body.Close()
		if response.StatusCode != http.StatusForbidden || body.Code != http.StatusForbidden || !strings.Contains(body.Message, "serves callers outside the sandbox only") {
			t.Fatalf("%s from the loopback: %d %+v, want 403 saying why", path, response.StatusCode, body)
		}
	}
	initRequest, _ := http.NewRequest(http.MethodPost, url+"/init", strings.NewReader(`{"accessToken":"mine"}`))
	initRequest.Header.Set("X-Access-Token", token)
	init, err := http.DefaultClient.Do(initRequest)
	if err != nil {
		t.Fatal(err)
	}
	_ = init.Body.Close()
	if init.StatusCode != http.StatusForbidden {
		t.Fatalf("/init from the loopback: %d, want 403", init.StatusCode)
	}

	for _, options := range [][]connect.ClientOption{{connect.WithProtoJSON()}, {connect.WithGRPC()}} {
		client := processconnect.NewProcessClient(http.DefaultClient, url, options...)
		_, err := client.List(context.Background(), connect.NewRequest(&process.ListRequest{}))
		var connectErr *connect.Error
		if !errors.As(err, &connectErr) || connectErr.Code() != connect.CodePermissionDenied || !strings.Contains(connectErr.Message(), "outside the sandbox") {
			t.Fatalf("List from the loopback: %v, want permission_denied saying why", err)
		}
	}
}

func TestCallersOutsideTheSandboxAreServed(t *testing.T) {
	// The same loopback connection, with a network whose addresses do not include it: the host's side.
	outside := func() ([]net.Addr, error) {
		return []net.Addr{&net.IPNet{IP: net.ParseIP("10.88.0.7").To4(), Mask: net.CIDRMask(16, 32)}}, nil
	}
	if !server.CallerInside("127.0.0.1:40000", outside) {
		t.Fatal("a loopback caller must be inside whatever the interfaces say")
	}
	for remote, want := range map[string]bool{
		"10.88.0.1:51000":          false, // the bridge's gateway: the host, the proxy
		"10.88.0.7:51000":          true,  // the sandbox's own address
		"[::ffff:10.88.0.7]:51000": true,  // the same, as an IPv4-mapped IPv6 address
		"[fe80::1%eth0]:51000":     true,  // its own link-local address
		"[::1]:51000":              true,
		"127.0.0.2:51000":          true,
		"0.0.0.0:51000":            true,
		"not an address":           true, // cannot tell: refused
		"[2001:db8::5]:51000":      false,
		"192.0.2.10:51000":         false,
	} {
		if got := server.CallerInside(remote, interfaces); got != want {
			t.Errorf("CallerInside(%q) = %v, want %v", remote, got, want)
		}
	}
	unreadable := func() ([]net.Addr, error) { return nil, errors.New("netlink: permission denied") }
	if !server.CallerInside("10.88.0.1:51000", unreadable) {
		t.Error("a caller must be inside (refused) when the interfaces cannot be read")
	}

	// Served end to end: a caller from an address that is not the sandbox's (the host's own
	// non-loopback address here, which the stand-in network leaves out) reaches every route.
	host := nonLoopbackAddress(t)
	listener, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	daemon := server.New(server.Options{SandboxEnv: []string{"FROM_OUTSIDE=yes"}, Interfaces: interfaces})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- daemon.Serve(ctx, listener) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	response, err := http.Get("http://" + listener.Addr().String() + "/envs")
	if err != nil {
		t.Fatal(err)
	}
	defer response.Body.Close()
	var environment map[string]string
	if err := json.NewDecoder(response.Body).Decode(&environment); err != nil || response.StatusCode != http.StatusOK || environment["FROM_OUTSIDE"] != "yes" {
		t.Fatalf("/envs from %s: %d %v %v, want 200 with the sandbox's environment", host, response.StatusCode, environment, err)
	}
}

// nonLoopbackAddress is an IPv4 address of this machine that is not a loopback one.
func nonLoopbackAddress(t *testing.T) string {
	t.Helper()
	addresses, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, address := range addresses {
		if network, ok := address.(*net.IPNet); ok && !network.IP.IsLoopback() && network.IP.To4() != nil {
			return network.IP.String()
		}
	}
	t.Fatal("this machine has no IPv4 address but the loopback's: the test needs one to call from outside")
	return ""
}
