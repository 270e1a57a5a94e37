package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"connectrpc.com/connect"

	rpc "fast-sandbox.io/envd/gen/process"
	"fast-sandbox.io/envd/gen/process/processconnect"
	"fast-sandbox.io/envd/internal/auth"
	"fast-sandbox.io/envd/internal/identity"
	"fast-sandbox.io/envd/internal/paths"
	"fast-sandbox.io/envd/internal/state"
	"fast-sandbox.io/envd/internal/streams"
)

// Service implements process.Process.
type Service struct {
	Processes *Manager
	Auth      *auth.Authenticator
	State     *state.State
	// SandboxEnv is the environment every process starts from (the daemon's own, inherited from
	// the sandbox's process 1).
	SandboxEnv []string
	// Backlog bounds the output that waits for each client of a process (Start, Connect) that does
	// not read it yet. @default the defaults of Backlog
	Backlog Backlog
}

var _ processconnect.ProcessHandler = (*Service)(nil)

// timeoutHeader is the deadline E2B's SDKs give a command (Connect's own header): past it the
// process is killed, as E2B's envd does; closing the stream alone does not stop it.
const timeoutHeader = "Connect-Timeout-Ms"

func (s *Service) Start(ctx context.Context, request *connect.Request[rpc.StartRequest], stream *connect.ServerStream[rpc.StartResponse]) error {
	spec, err := s.spec(request)
	if err != nil {
		return err
	}
	// Everything read from the request is read before the process starts.
	keepalive := streams.KeepaliveInterval(request.Header())
	process := New(spec)
	subscription := process.Subscribe(s.Backlog)
	defer process.Unsubscribe(subscription)
	// Registered as soon as it runs, before its end could unregister it.
	if err := process.Start(s.Processes.add, s.Processes.remove); err != nil {
		return startError(spec.Path, err)
	}
	if milliseconds, err := strconv.ParseInt(request.Header().Get(timeoutHeader), 10, 64); err == nil && milliseconds > 0 {
		timer := time.AfterFunc(time.Duration(milliseconds)*time.Millisecond, func() { _ = process.Signal(syscall.SIGKILL) })
		go func() {
			<-process.Done()
			timer.Stop()
		}()
	}
	return relay(ctx, process, subscription, keepalive, func(event *rpc.ProcessEvent) error {
		return stream.Send(&rpc.StartResponse{Event: event})
	})
}

// startError is a refused start's error: a program that cannot be run is the request's fault
// (InvalidArgument); a sandbox out of processes (its pids limit) or memory is not (ResourceExhausted).
func startError(path string, err error) error {
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ENOMEM) {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"cannot start %s: %w: the sandbox is out of processes (its pids limit) or memory; end some of its processes", path, err))
	}
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cannot start %s: %w", path, err))
}

// spec validates a StartRequest and resolves what the process runs as, where and with what.
func (s *Service) spec(request *connect.Request[rpc.StartRequest]) (Spec, error) {
	message := request.Msg
	config := message.GetProcess()
	if config == nil || config.GetCmd() == "" {
		return Spec{}, connect.NewError(connect.CodeInvalidArgument, errors.New("process.cmd is required: the program to run, e.g. /bin/bash"))
	}
	user, err := s.Auth.Caller(request.Header())
	if err != nil {
		return Spec{}, err
	}
	cwd := s.State.DefaultWorkdir()
	if cwd == "" {
		cwd = user.Home
	}
	cwdAsked := config.Cwd != nil && config.GetCwd() != ""
	if cwdAsked {
		if cwd, err = paths.Absolute(config.GetCwd(), user.Home, s.State.DefaultWorkdir()); err != nil {
			return Spec{}, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("process.cwd: %w", err))
		}
	}
	var size *rpc.PTY_Size
	if message.Pty != nil {
		size = message.GetPty().GetSize()
		if size == nil || size.GetCols() == 0 || size.GetRows() == 0 || size.GetCols() > 65535 || size.GetRows() > 65535 {
			return Spec{}, connect.NewError(connect.CodeInvalidArgument, errors.New("pty.size needs cols and rows between 1 and 65535"))
		}
	}
	// The checks of what the process will run as the user (it chdirs and execs as the user) are
	// made as the user too (identity.As), so that the kernel decides them as it will for the
	// process: made as root, a cwd the user cannot enter would pass, and the PATH lookup would
	// choose an executable the user cannot reach or run instead of going on to the next entry.
	var path string
	var environment []string
	var failure error
	if err := identity.As(user, func() {
		failure = checkWorkdir(cwd)
		if failure != nil && !cwdAsked && checkWorkdir("/") == nil {
			// A default the user cannot use (a home that does not exist, as nobody's /nonexistent;
			// or the image's workdir): "/", as login(1) and docker exec do. A cwd asked for is
			// refused instead.
			cwd, failure = "/", nil
		}
		environment = Environment(s.SandboxEnv, s.State.EnvVars(), user, cwd, size != nil, config.GetEnvs())
		if failure == nil {
			path, failure = LookPath(config.GetCmd(), environment, cwd)
		}
	}); err != nil {
		return Spec{}, connect.NewError(connect.CodeInternal, fmt.Errorf("taking on the request's user: %w", err))
	}
	if failure != nil {
		if identity.Switches(user) {
			failure = fmt.Errorf("%w (checked as user %s)", failure, user.Name)
		}
		// E2B's envd answers invalid_argument for a cwd or a command that cannot be used.
		return Spec{}, connect.NewError(connect.CodeInvalidArgument, failure)
	}
	arg0 := config.GetCmd()
	if path == shPath && arg0 == bashPath {
		arg0 = shPath
	}
	return Spec{
		Request:    config,
		Path:       path,
		Args:       append([]string{arg0}, config.GetArgs()...),
		Env:        environment,
		Dir:        cwd,
		Credential: s.Auth.Credential(user),
		Pty:        size,
		// Absent means open: SDKs older than envd 0.3.0 always had stdin.
		Stdin: message.Stdin == nil || message.GetStdin(),
		Tag:   message.GetTag(),
	}, nil
}

// checkWorkdir is nil when cwd is a directory the caller may enter (search permission, as chdir
// needs), else an error that says whether it does not exist or the caller may not reach it.
func checkWorkdir(cwd string) error {
	info, err := os.Stat(cwd)
	switch {
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("process.cwd %q cannot be reached: %w", cwd, err)
	case err != nil:
		return fmt.Errorf("process.cwd %q is not an existing directory: %w", cwd, err)
	case !info.IsDir():
		return fmt.Errorf("process.cwd %q is not an existing directory: %w", cwd, &os.PathError{Op: "chdir", Path: cwd, Err: syscall.ENOTDIR})
	}
	if err := syscall.Faccessat(atFdcwd, cwd, xOK, atEAccess); err != nil {
		return fmt.Errorf("process.cwd %q cannot be entered: %w", cwd, &os.PathError{Op: "chdir", Path: cwd, Err: err})
	}
	return nil
}

// relay streams the start event, then a subscription's events until the end event, with
// keepalives in between. A client that does not read is waited for as long as it stays: its
// events queue up without holding the process back, within its backlog; past it the process waits
// for the client for the backlog's wait, and then the client's stream ends (resource_exhausted).
func relay(ctx context.Context, process *Process, subscription *Subscription, interval time.Duration, send func(*rpc.ProcessEvent) error) error {
	start := &rpc.ProcessEvent{Event: &rpc.ProcessEvent_Start{Start: &rpc.ProcessEvent_StartEvent{Pid: process.PID()}}}
	if err := send(start); err != nil {
		return err
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	keepalive := &rpc.ProcessEvent{Event: &rpc.ProcessEvent_Keepalive{Keepalive: &rpc.ProcessEvent_KeepAlive{}}}
	for {
		event, err := subscription.Take()
		if err != nil {
			return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%s: %w; read its stream, or connect to it again for what it writes next", process, err))
		}
		if event != nil {
			if err := send(event); err != nil {
				return err
			}
			if event.GetEnd() != nil {
				return nil
			}
			ticker.Reset(interval)
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err() // connect turns it into canceled or deadline_exceeded
		case <-subscription.Ready():
		case <-ticker.C:
			if err := send(keepalive); err != nil {
				return err
			}
		}
	}
}

func (s *Service) Connect(ctx context.Context, request *connect.Request[rpc.ConnectRequest], stream *connect.ServerStream[rpc.ConnectResponse]) error {
	process, err := s.find(request.Msg.GetProcess())
	if err != nil {
		return err
	}
	subscription := process.Subscribe(s.Backlog)
	defer process.Unsubscribe(subscription)
	return relay(ctx, process, subscription, streams.KeepaliveInterval(request.Header()), func(event *rpc.ProcessEvent) error {
		return stream.Send(&rpc.ConnectResponse{Event: event})
	})
}

func (s *Service) List(context.Context, *connect.Request[rpc.ListRequest]) (*connect.Response[rpc.ListResponse], error) {
	response := &rpc.ListResponse{}
	for _, process := range s.Processes.List() {
		response.Processes = append(response.Processes, process.Info())
	}
	return connect.NewResponse(response), nil
}

func (s *Service) find(selector *rpc.ProcessSelector) (*Process, error) {
	process, err := s.Processes.Find(selector)
	switch {
	case err == nil:
		return process, nil
	case errors.Is(err, ErrNotFound):
		return nil, connect.NewError(connect.CodeNotFound, err)
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
}

// inputError maps an input error: wrong kind of input or closed stdin is failed_precondition.
func inputError(process *Process, err error) error {
	if err == nil {
		return nil
	}
	wrapped := fmt.Errorf("%s: %w", process, err)
	switch {
	case errors.Is(err, ErrStdinNotOpen), errors.Is(err, ErrStdinClosed), errors.Is(err, ErrNoPty), errors.Is(err, ErrHasPty):
		return connect.NewError(connect.CodeFailedPrecondition, wrapped)
	case errors.Is(err, ErrInputNotRead) && errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, wrapped)
	case errors.Is(err, ErrInputNotRead):
		return connect.NewError(connect.CodeDeadlineExceeded, wrapped)
	case errors.Is(err, os.ErrClosed), errors.Is(err, syscall.EPIPE):
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%s no longer reads its input: %w", process, err))
	default:
		return connect.NewError(connect.CodeInternal, wrapped)
	}
}

// send writes input, giving up when ctx (the request's) ends.
func send(ctx context.Context, process *Process, input *rpc.ProcessInput) error {
	switch data := input.GetInput().(type) {
	case *rpc.ProcessInput_Stdin:
		return inputError(process, process.WriteStdin(ctx, data.Stdin))
	case *rpc.ProcessInput_Pty:
		return inputError(process, process.WritePty(ctx, data.Pty))
	default:
		return connect.NewError(connect.CodeInvalidArgument, errors.New("input: give {stdin: bytes} or {pty: bytes}"))
	}
}

func (s *Service) SendInput(ctx context.Context, request *connect.Request[rpc.SendInputRequest]) (*connect.Response[rpc.SendInputResponse], error) {
	process, err := s.find(request.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := send(ctx, process, request.Msg.GetInput()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&rpc.SendInputResponse{}), nil
}

func (s *Service) StreamInput(ctx context.Context, stream *connect.ClientStream[rpc.StreamInputRequest]) (*connect.Response[rpc.StreamInputResponse], error) {
	var process *Process
	for stream.Receive() {
		switch event := stream.Msg().GetEvent().(type) {
		case *rpc.StreamInputRequest_Start:
			found, err := s.find(event.Start.GetProcess())
			if err != nil {
				return nil, err
			}
			process = found
		case *rpc.StreamInputRequest_Data:
			if process == nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("the first message of StreamInput must be start{process}"))
			}
			if err := send(ctx, process, event.Data.GetInput()); err != nil {
				return nil, err
			}
		case *rpc.StreamInputRequest_Keepalive:
		default:
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("each StreamInput message is start, data or keepalive"))
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&rpc.StreamInputResponse{}), nil
}

func (s *Service) SendSignal(_ context.Context, request *connect.Request[rpc.SendSignalRequest]) (*connect.Response[rpc.SendSignalResponse], error) {
	var signal syscall.Signal
	switch request.Msg.GetSignal() {
	case rpc.Signal_SIGNAL_SIGKILL:
		signal = syscall.SIGKILL
	case rpc.Signal_SIGNAL_SIGTERM:
		signal = syscall.SIGTERM
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("signal %s: give SIGNAL_SIGTERM or SIGNAL_SIGKILL", request.Msg.GetSignal()))
	}
	process, err := s.find(request.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := process.Signal(signal); err != nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("%s: %w", process, err))
	}
	return connect.NewResponse(&rpc.SendSignalResponse{}), nil
}

func (s *Service) CloseStdin(_ context.Context, request *connect.Request[rpc.CloseStdinRequest]) (*connect.Response[rpc.CloseStdinResponse], error) {
	process, err := s.find(request.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := inputError(process, process.CloseStdin()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&rpc.CloseStdinResponse{}), nil
}

func (s *Service) Update(_ context.Context, request *connect.Request[rpc.UpdateRequest]) (*connect.Response[rpc.UpdateResponse], error) {
	process, err := s.find(request.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	size := request.Msg.GetPty().GetSize()
	if size == nil || size.GetCols() == 0 || size.GetRows() == 0 || size.GetCols() > 65535 || size.GetRows() > 65535 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("pty.size needs cols and rows between 1 and 65535 (the only update there is)"))
	}
	if err := inputError(process, process.Resize(size)); err != nil {
		return nil, err
	}
	return connect.NewResponse(&rpc.UpdateResponse{}), nil
}
