package server_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsrpc "fast-sandbox.io/envd/gen/filesystem"
	"fast-sandbox.io/envd/gen/filesystem/filesystemconnect"
	rpc "fast-sandbox.io/envd/gen/process"
	"fast-sandbox.io/envd/gen/process/processconnect"
	"fast-sandbox.io/envd/internal/auth"
	"fast-sandbox.io/envd/internal/server"
)

// sandbox is a daemon on a loopback port, with its own /etc/passwd (user "tester", uid 4242,
// home in a temporary directory) and a protected directory standing for /.fast-sandbox.
type sandbox struct {
	url       string
	root      string
	home      string
	protected string
	daemon    *server.Daemon
	process   processconnect.ProcessClient
	fs        filesystemconnect.FilesystemClient
}

const testerUID = 4242

func start(t *testing.T, options server.Options) *sandbox {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("these tests run processes as other users and mount a tmpfs: run them as root (like the rest of npm test)")
	}
	root := t.TempDir()
	// The home's parents must let the tester in (t.TempDir's are private to root).
	homes, err := os.MkdirTemp("", "fsb-envd-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(homes) })
	if err := os.Chmod(homes, 0o755); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(homes, "home", "tester")
	protected := filepath.Join(t.TempDir(), ".fast-sandbox")
	for _, dir := range []string{filepath.Join(root, "etc"), home, filepath.Join(protected, "run")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(home, testerUID, testerUID); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\ntester:x:4242:4242:Tester:"+home+":/bin/sh\n")
	write(t, filepath.Join(root, "etc", "group"), "root:x:0:\ntester:x:4242:\nextra:x:5000:tester,other\n")
	write(t, filepath.Join(protected, "run", "exit-code"), "0\n")
	options.Root = root
	// The tests call from the loopback, which the daemon otherwise refuses (inside_callers_test.go).
	options.ServeInsideCallers = true
	options.ProtectedDirs = append(options.ProtectedDirs, protected)
	if options.SandboxEnv == nil {
		options.SandboxEnv = []string{"PATH=" + os.Getenv("PATH"), "SANDBOX_VAR=from-the-sandbox"}
	}
	daemon := server.New(options)
	url := serveOnLoopback(t, daemon)
	return &sandbox{
		url: url, root: root, home: home, protected: protected, daemon: daemon,
		process: processconnect.NewProcessClient(http.DefaultClient, url, connect.WithProtoJSON()),
		fs:      filesystemconnect.NewFilesystemClient(http.DefaultClient, url, connect.WithProtoJSON()),
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func asUser[T any](message *T, user string) *connect.Request[T] {
	request := connect.NewRequest(message)
	if user != "" {
		request.Header().Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":")))
	}
	return request
}

// result is what a process stream delivered.
type result struct {
	pid        uint32
	stdout     string
	stderr     string
	pty        string
	end        *rpc.ProcessEvent_EndEvent
	keepalives int
	events     []string
}

func collect(t *testing.T, stream interface {
	Receive() bool
	Err() error
}, event func() *rpc.ProcessEvent, onStart func(pid uint32)) result {
	t.Helper()
	var got result
	for stream.Receive() {
		switch e := event().GetEvent().(type) {
		case *rpc.ProcessEvent_Start:
			got.pid = e.Start.GetPid()
			got.events = append(got.events, "start")
			if onStart != nil {
				onStart(got.pid)
			}
		case *rpc.ProcessEvent_Data:
			got.events = append(got.events, "data")
			got.stdout += string(e.Data.GetStdout())
			got.stderr += string(e.Data.GetStderr())
			got.pty += string(e.Data.GetPty())
		case *rpc.ProcessEvent_End:
			got.events = append(got.events, "end")
			got.end = e.End
		case *rpc.ProcessEvent_Keepalive:
			got.keepalives++
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	return got
}

func run(t *testing.T, s *sandbox, request *connect.Request[rpc.StartRequest], onStart func(pid uint32)) result {
	t.Helper()
	stream, err := s.process.Start(context.Background(), request)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	return collect(t, stream, func() *rpc.ProcessEvent { return stream.Msg().GetEvent() }, onStart)
}

func shell(script string) *rpc.StartRequest {
	return &rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", script}}}
}

func codeOf(err error) connect.Code {
	return connect.CodeOf(err)
}

func TestACommandStreamsStartThenOutputThenItsExitCode(t *testing.T) {
	s := start(t, server.Options{})
	got := run(t, s, connect.NewRequest(shell("echo out; echo err >&2; exit 3")), nil)
	if got.events[0] != "start" || got.events[len(got.events)-1] != "end" || got.pid == 0 {
		t.Fatalf("events %v, pid %d: want start first and end last", got.events, got.pid)
	}
	if got.stdout != "out\n" || got.stderr != "err\n" {
		t.Fatalf("stdout %q stderr %q", got.stdout, got.stderr)
	}
	if got.end.GetExitCode() != 3 || !got.end.GetExited() || got.end.GetStatus() != "exit status 3" {
		t.Fatalf("end %v", got.end)
	}
}

func TestOutputArrivesWhileTheCommandStillRuns(t *testing.T) {
	s := start(t, server.Options{})
	// The command prints its second line only once the test saw the first: output held back
	// until the end would never arrive, and the deadline fails the test.
	gate := filepath.Join(t.TempDir(), "go")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := s.process.Start(ctx, connect.NewRequest(shell(fmt.Sprintf("echo first; while [ ! -e '%s' ]; do sleep 0.05; done; echo second", gate))))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var stdout string
	for stream.Receive() {
		data := stream.Msg().GetEvent().GetData()
		if data == nil {
			continue
		}
		stdout += string(data.GetStdout())
		if stdout == "first\n" {
			if err := os.WriteFile(gate, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if stdout == "first\nsecond\n" {
			return
		}
	}
	t.Fatalf("stdout %q, want first then second: %v", stdout, stream.Err())
}

func TestProcessesRunAsTheRequestedUserInTheirHomeWithTheirEnvironment(t *testing.T) {
	s := start(t, server.Options{})
	request := shell(`echo "$(id -u) $(id -G) $PWD $HOME $USER $SANDBOX_VAR $FROM_REQUEST"`)
	request.Process.Envs = map[string]string{"FROM_REQUEST": "yes"}
	got := run(t, s, asUser(request, "tester"), nil)
	want := fmt.Sprintf("4242 4242 5000 %s %s tester from-the-sandbox yes\n", s.home, s.home)
	if got.stdout != want {
		t.Fatalf("got %q, want %q (stderr %q)", got.stdout, want, got.stderr)
	}
}

func TestAnUnknownUserIsUnauthenticated(t *testing.T) {
	s := start(t, server.Options{})
	stream, err := s.process.Start(context.Background(), asUser(shell("true"), "nobody-here"))
	if err == nil {
		stream.Receive()
		err = stream.Err()
	}
	if codeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "nobody-here") {
		t.Fatalf("err %v, want unauthenticated naming the user", err)
	}
}

func TestBadStartRequestsAreInvalidArgumentsThatSayWhatIsWrong(t *testing.T) {
	s := start(t, server.Options{})
	cases := map[string]*rpc.StartRequest{
		"cmd is required":           {Process: &rpc.ProcessConfig{}},
		"not found":                 {Process: &rpc.ProcessConfig{Cmd: "/no/such/program"}},
		"not an existing directory": {Process: &rpc.ProcessConfig{Cmd: "/bin/sh", Cwd: ptr("/no/such/dir")}},
		"cols and rows":             {Process: &rpc.ProcessConfig{Cmd: "/bin/sh"}, Pty: &rpc.PTY{}},
	}
	for want, request := range cases {
		stream, err := s.process.Start(context.Background(), connect.NewRequest(request))
		if err == nil {
			stream.Receive()
			err = stream.Err()
		}
		if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: err %v, want invalid_argument containing %q", request, err, want)
		}
	}
}

func ptr[T any](value T) *T { return &value }

func TestStdinIsSentThenClosed(t *testing.T) {
	s := start(t, server.Options{})
	request := shell("cat; echo done")
	request.Stdin = ptr(true)
	got := run(t, s, connect.NewRequest(request), func(pid uint32) {
		selector := &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: pid}}
		if _, err := s.process.SendInput(context.Background(), connect.NewRequest(&rpc.SendInputRequest{Process: selector, Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Stdin{Stdin: []byte("hello\n")}}})); err != nil {
			t.Errorf("send input: %v", err)
		}
		if _, err := s.process.CloseStdin(context.Background(), connect.NewRequest(&rpc.CloseStdinRequest{Process: selector})); err != nil {
			t.Errorf("close stdin: %v", err)
		}
	})
	if got.stdout != "hello\ndone\n" || got.end.GetExitCode() != 0 {
		t.Fatalf("stdout %q end %v", got.stdout, got.end)
	}
}

func TestTheDefaultUserIsE2BsUserWhenTheImageHasIt(t *testing.T) {
	s := start(t, server.Options{DefaultUser: auth.AutoDefaultUser})
	whoAndWhere := func(user string) string {
		return run(t, s, asUser(shell("id -u; pwd"), user), nil).stdout
	}
	// No account `user` in the image: the daemon's own (root here), in its home.
	if got := whoAndWhere(""); got != "0\n/root\n" {
		t.Fatalf("without a `user` account: %q", got)
	}
	// With one (E2B's templates all have it), requests that name no user act as it, in its home.
	write(t, filepath.Join(s.root, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\nuser:x:4242:4242:E2B:"+s.home+":/bin/sh\n")
	if got := whoAndWhere(""); got != "4242\n"+s.home+"\n" {
		t.Fatalf("with a `user` account: %q", got)
	}
	made, err := s.fs.MakeDir(context.Background(), connect.NewRequest(&fsrpc.MakeDirRequest{Path: "relative"}))
	if err != nil || made.Msg.GetEntry().GetPath() != filepath.Join(s.home, "relative") || made.Msg.GetEntry().GetOwner() != "user" {
		t.Fatalf("relative make: %v %v", made, err)
	}
	// A user named in the request still wins.
	if got := whoAndWhere("root"); got != "0\n/root\n" {
		t.Fatalf("as root: %q", got)
	}
}

// An image's `USER tester:extra`: the helper passes the group on, and what the default user runs and
// writes has that group alone, as runc and Docker give it (no group of /etc/passwd's or
// /etc/group's). A request that names the user gets the user's own groups.
func TestTheDefaultUsersGroupIsTheImagesGroup(t *testing.T) {
	s := start(t, server.Options{DefaultUser: "tester", DefaultGroup: "extra"})
	ids := "id -u; id -g; id -G"
	if got := run(t, s, connect.NewRequest(shell(ids)), nil).stdout; got != "4242\n5000\n5000\n" {
		t.Fatalf("as the default user tester:extra: %q", got)
	}
	if got := run(t, s, asUser(shell(ids), "tester"), nil).stdout; got != "4242\n4242\n4242 5000\n" {
		t.Fatalf("as tester, named: %q", got)
	}
	decode[[]written](t, must(upload(s.url+"/files?path=grouped.txt", "application/octet-stream", strings.NewReader("x"), nil)), http.StatusOK)
	if info, err := os.Stat(filepath.Join(s.home, "grouped.txt")); err != nil || info.Sys().(*syscall.Stat_t).Gid != 5000 {
		t.Fatalf("an upload as the default user: %v %v, want group 5000", info, err)
	}
	numeric := start(t, server.Options{DefaultUser: "4242", DefaultGroup: "6000"})
	if got := run(t, numeric, connect.NewRequest(shell(ids)), nil).stdout; got != "4242\n6000\n6000\n" {
		t.Fatalf("as the default user 4242:6000: %q", got)
	}
	unknown := start(t, server.Options{DefaultUser: "tester", DefaultGroup: "no-such-group"})
	if _, err := unknown.fs.Stat(context.Background(), connect.NewRequest(&fsrpc.StatRequest{Path: "~"})); codeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "no-such-group") {
		t.Fatalf("a default group the image lacks: %v, want unauthenticated naming it", err)
	}
}

func TestANumericDefaultUserIsAUid(t *testing.T) {
	// The helper passes an image's `USER 4242:staff` on as 4242 (and staff as the default group): the
	// account of that uid, or the bare uid.
	s := start(t, server.Options{DefaultUser: "4242"})
	if got := run(t, s, connect.NewRequest(shell("id -u; pwd")), nil).stdout; got != "4242\n"+s.home+"\n" {
		t.Fatalf("as 4242 (tester's uid): %q", got)
	}
	bare := start(t, server.Options{DefaultUser: "4343"})
	if got := run(t, bare, connect.NewRequest(shell("id -u; pwd")), nil).stdout; got != "4343\n/\n" {
		t.Fatalf("as 4343 (no account): %q", got)
	}
}

func TestInputToAProcessWithoutStdinFailsItsPrecondition(t *testing.T) {
	s := start(t, server.Options{})
	request := shell("sleep 5")
	request.Stdin = ptr(false)
	request.Tag = ptr("no-stdin")
	stream, err := s.process.Start(context.Background(), connect.NewRequest(request))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	stream.Receive()
	selector := &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Tag{Tag: "no-stdin"}}
	_, err = s.process.SendInput(context.Background(), connect.NewRequest(&rpc.SendInputRequest{Process: selector, Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Stdin{Stdin: []byte("x")}}}))
	if codeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "stdin: true") {
		t.Fatalf("err %v", err)
	}
	// Closing a stdin that was never open is a no-op, as with E2B's envd (SDKs close it unconditionally).
	if _, err := s.process.CloseStdin(context.Background(), connect.NewRequest(&rpc.CloseStdinRequest{Process: selector})); err != nil {
		t.Fatalf("close stdin of a process without one: %v, want success", err)
	}
	if _, err := s.process.SendSignal(context.Background(), connect.NewRequest(&rpc.SendSignalRequest{Process: selector, Signal: rpc.Signal_SIGNAL_SIGKILL})); err != nil {
		t.Fatal(err)
	}
}

func TestAPtyEchoesInputAndReportsItsSizeAndResize(t *testing.T) {
	s := start(t, server.Options{})
	request := &rpc.StartRequest{
		Process: &rpc.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", "stty size; read line; stty size; echo got:$line; test -t 0 && echo tty"}},
		Pty:     &rpc.PTY{Size: &rpc.PTY_Size{Cols: 100, Rows: 30}},
	}
	got := run(t, s, connect.NewRequest(request), func(pid uint32) {
		selector := &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: pid}}
		time.Sleep(300 * time.Millisecond)
		if _, err := s.process.Update(context.Background(), connect.NewRequest(&rpc.UpdateRequest{Process: selector, Pty: &rpc.PTY{Size: &rpc.PTY_Size{Cols: 120, Rows: 40}}})); err != nil {
			t.Errorf("update: %v", err)
		}
		if _, err := s.process.SendInput(context.Background(), connect.NewRequest(&rpc.SendInputRequest{Process: selector, Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Pty{Pty: []byte("typed\n")}}})); err != nil {
			t.Errorf("send input: %v", err)
		}
	})
	output := strings.ReplaceAll(got.pty, "\r\n", "\n")
	for _, want := range []string{"30 100\n", "typed\n", "40 120\n", "got:typed\n", "tty\n"} {
		if !strings.Contains(output, want) {
			t.Fatalf("pty output %q lacks %q", output, want)
		}
	}
	if got.stdout != "" || got.end.GetExitCode() != 0 {
		t.Fatalf("stdout %q end %v", got.stdout, got.end)
	}
}

func TestKillEndsTheProcessAndWhatItStarted(t *testing.T) {
	s := start(t, server.Options{})
	var child string
	got := run(t, s, connect.NewRequest(shell("sleep 30 & echo $!; wait")), func(pid uint32) {
		time.Sleep(200 * time.Millisecond)
		if _, err := s.process.SendSignal(context.Background(), connect.NewRequest(&rpc.SendSignalRequest{Process: &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: pid}}, Signal: rpc.Signal_SIGNAL_SIGKILL})); err != nil {
			t.Errorf("kill: %v", err)
		}
	})
	child = strings.TrimSpace(got.stdout)
	if got.end.GetExited() || got.end.GetStatus() != "signal: killed" || got.end.GetExitCode() != -1 {
		t.Fatalf("end %v", got.end)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := os.Stat("/proc/" + child); err == nil {
		if status, _ := os.ReadFile("/proc/" + child + "/stat"); !strings.Contains(string(status), ") Z") {
			t.Fatalf("the background child %s survived the kill", child)
		}
	}
}

func TestConnectListAndUnknownProcesses(t *testing.T) {
	s := start(t, server.Options{})
	request := shell("for i in 1 2 3 4 5 6 7 8 9 10; do echo tick; sleep 0.2; done")
	request.Tag = ptr("ticker")
	started, err := s.process.Start(context.Background(), connect.NewRequest(request))
	if err != nil {
		t.Fatal(err)
	}
	started.Receive()
	pid := started.Msg().GetEvent().GetStart().GetPid()
	started.Close() // closing the stream leaves the process running

	list, err := s.process.List(context.Background(), connect.NewRequest(&rpc.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Msg.GetProcesses()) != 1 || list.Msg.GetProcesses()[0].GetPid() != pid || list.Msg.GetProcesses()[0].GetTag() != "ticker" || list.Msg.GetProcesses()[0].GetConfig().GetCmd() != "/bin/sh" {
		t.Fatalf("list %v", list.Msg)
	}
	attached, err := s.process.Connect(context.Background(), connect.NewRequest(&rpc.ConnectRequest{Process: &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Tag{Tag: "ticker"}}}))
	if err != nil {
		t.Fatal(err)
	}
	got := collect(t, attached, func() *rpc.ProcessEvent { return attached.Msg().GetEvent() }, nil)
	if got.pid != pid || !strings.Contains(got.stdout, "tick\n") || got.end.GetExitCode() != 0 {
		t.Fatalf("connect: %+v", got)
	}
	_, err = s.process.SendSignal(context.Background(), connect.NewRequest(&rpc.SendSignalRequest{Process: &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: pid}}, Signal: rpc.Signal_SIGNAL_SIGKILL}))
	if codeOf(err) != connect.CodeNotFound {
		t.Fatalf("signal to an ended process: %v, want not_found", err)
	}
}

func TestKeepalivesAndTheCommandTimeout(t *testing.T) {
	s := start(t, server.Options{})

	// Keepalives come every second while the command is silent: two arrive well before the deadline.
	request := connect.NewRequest(shell("sleep 600"))
	request.Header().Set("Keepalive-Ping-Interval", "1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := s.process.Start(ctx, request)
	if err != nil {
		t.Fatal(err)
	}
	keepalives := 0
	var pid uint32
	for keepalives < 2 && stream.Receive() {
		if stream.Msg().GetEvent().GetKeepalive() != nil {
			keepalives++
		}
		if start := stream.Msg().GetEvent().GetStart(); start != nil {
			pid = start.GetPid()
		}
	}
	if keepalives < 2 {
		t.Fatalf("%d keepalives at 1 s before the stream ended: %v", keepalives, stream.Err())
	}
	_, err = s.process.SendSignal(context.Background(), connect.NewRequest(&rpc.SendSignalRequest{Process: &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: pid}}, Signal: rpc.Signal_SIGNAL_SIGKILL}))
	if err != nil {
		t.Fatal(err)
	}
	stream.Close()

	// The deadline (Connect-Timeout-Ms) ends the stream and kills the process too.
	timed, cancelTimed := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancelTimed()
	stream, err = s.process.Start(timed, connect.NewRequest(shell("sleep 600")))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	pid = 0
	for stream.Receive() {
		if start := stream.Msg().GetEvent().GetStart(); start != nil {
			pid = start.GetPid()
		}
	}
	if codeOf(stream.Err()) != connect.CodeDeadlineExceeded || pid == 0 {
		t.Fatalf("pid %d, stream err %v", pid, stream.Err())
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		list, err := s.process.List(context.Background(), connect.NewRequest(&rpc.ListRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		running := false
		for _, process := range list.Msg.GetProcesses() {
			running = running || process.GetPid() == pid
		}
		if !running {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("process %d still runs 10 s after its timeout", pid)
}

func TestStreamInputKeepsOrder(t *testing.T) {
	s := start(t, server.Options{})
	request := shell("cat")
	request.Tag = ptr("cat")
	got := run(t, s, connect.NewRequest(request), func(uint32) {
		input := s.process.StreamInput(context.Background())
		selector := &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Tag{Tag: "cat"}}
		_ = input.Send(&rpc.StreamInputRequest{Event: &rpc.StreamInputRequest_Start{Start: &rpc.StreamInputRequest_StartEvent{Process: selector}}})
		for i := range 5 {
			_ = input.Send(&rpc.StreamInputRequest{Event: &rpc.StreamInputRequest_Data{Data: &rpc.StreamInputRequest_DataEvent{Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Stdin{Stdin: []byte(fmt.Sprint(i))}}}}})
		}
		if _, err := input.CloseAndReceive(); err != nil {
			t.Errorf("stream input: %v", err)
		}
		if _, err := s.process.CloseStdin(context.Background(), connect.NewRequest(&rpc.CloseStdinRequest{Process: selector})); err != nil {
			t.Errorf("close stdin: %v", err)
		}
	})
	if got.stdout != "01234" {
		t.Fatalf("stdout %q", got.stdout)
	}
}

func TestFilesystemMakeStatListMoveRemove(t *testing.T) {
	s := start(t, server.Options{})
	ctx := context.Background()
	made, err := s.fs.MakeDir(ctx, asUser(&fsrpc.MakeDirRequest{Path: "project/src"}, "tester"))
	if err != nil {
		t.Fatal(err)
	}
	entry := made.Msg.GetEntry()
	if entry.GetPath() != filepath.Join(s.home, "project/src") || entry.GetType() != fsrpc.FileType_FILE_TYPE_DIRECTORY || entry.GetOwner() != "tester" || entry.GetGroup() != "tester" || entry.GetPermissions() != "drwxr-xr-x" {
		t.Fatalf("made %v", entry)
	}
	if _, err := s.fs.MakeDir(ctx, asUser(&fsrpc.MakeDirRequest{Path: "project/src"}, "tester")); codeOf(err) != connect.CodeAlreadyExists {
		t.Fatalf("second make: %v, want already_exists", err)
	}
	write(t, filepath.Join(s.home, "project/src/main.txt"), "hello")
	if _, err := s.fs.MakeDir(ctx, asUser(&fsrpc.MakeDirRequest{Path: "project/src/main.txt"}, "tester")); codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("make over a file: %v, want invalid_argument (the SDKs raise it; already_exists would read as false)", err)
	}
	if err := os.Symlink("main.txt", filepath.Join(s.home, "project/src/link")); err != nil {
		t.Fatal(err)
	}
	stat, err := s.fs.Stat(ctx, asUser(&fsrpc.StatRequest{Path: "~/project/src/main.txt"}, "tester"))
	if err != nil {
		t.Fatal(err)
	}
	if e := stat.Msg.GetEntry(); e.GetSize() != 5 || e.GetType() != fsrpc.FileType_FILE_TYPE_FILE || e.GetPermissions() != "-rw-r--r--" || e.GetMode() != 0o644 || e.GetName() != "main.txt" || e.GetModifiedTime().AsTime().IsZero() {
		t.Fatalf("stat %v", e)
	}
	list, err := s.fs.ListDir(ctx, asUser(&fsrpc.ListDirRequest{Path: "project", Depth: 2}, "tester"))
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, e := range list.Msg.GetEntries() {
		listed = append(listed, strings.TrimPrefix(e.GetPath(), s.home+"/")+":"+e.GetType().String()+":"+e.GetSymlinkTarget())
	}
	want := "project/src:FILE_TYPE_DIRECTORY: project/src/link:FILE_TYPE_SYMLINK:" + filepath.Join(s.home, "project/src/main.txt") + " project/src/main.txt:FILE_TYPE_FILE:"
	if strings.Join(listed, " ") != want {
		t.Fatalf("listed %v\nwant %s", listed, want)
	}
	shallow, _ := s.fs.ListDir(ctx, asUser(&fsrpc.ListDirRequest{Path: "project", Depth: 1}, "tester"))
	if len(shallow.Msg.GetEntries()) != 1 {
		t.Fatalf("depth 1 listed %v", shallow.Msg.GetEntries())
	}
	// Depth not given (0) lists like depth 1, as E2B's envd does; beyond the bound is refused.
	if unset, err := s.fs.ListDir(ctx, asUser(&fsrpc.ListDirRequest{Path: "project"}, "tester")); err != nil || len(unset.Msg.GetEntries()) != 1 {
		t.Fatalf("depth 0: %v %v", unset, err)
	}
	if _, err := s.fs.ListDir(ctx, asUser(&fsrpc.ListDirRequest{Path: "project", Depth: 65}, "tester")); codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "give 1") {
		t.Fatalf("depth 65: %v", err)
	}
	moved, err := s.fs.Move(ctx, asUser(&fsrpc.MoveRequest{Source: "project/src/main.txt", Destination: "elsewhere/deep/renamed.txt"}, "tester"))
	if err != nil {
		t.Fatal(err)
	}
	if moved.Msg.GetEntry().GetPath() != filepath.Join(s.home, "elsewhere/deep/renamed.txt") {
		t.Fatalf("moved %v", moved.Msg)
	}
	if _, err := s.fs.Remove(ctx, asUser(&fsrpc.RemoveRequest{Path: "project"}, "tester")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.fs.Stat(ctx, asUser(&fsrpc.StatRequest{Path: "project"}, "tester")); codeOf(err) != connect.CodeNotFound {
		t.Fatalf("stat removed: %v, want not_found", err)
	}
	// What is not there is removed already: success, as with E2B's envd.
	if _, err := s.fs.Remove(ctx, asUser(&fsrpc.RemoveRequest{Path: "project"}, "tester")); err != nil {
		t.Fatalf("remove missing: %v, want success", err)
	}
}

func TestTheDaemonsOwnFilesAreOutOfReach(t *testing.T) {
	s := start(t, server.Options{})
	ctx := context.Background()
	outside := filepath.Join(s.home, "sneaky")
	if err := os.Symlink(s.protected, outside); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(s.home, "dangling")
	if err := os.Symlink(filepath.Join(s.protected, "run", "new-file"), dangling); err != nil {
		t.Fatal(err)
	}
	relative, err := filepath.Rel(s.home, filepath.Join(s.protected, "run"))
	if err != nil {
		t.Fatal(err)
	}
	attempts := []string{
		s.protected,
		filepath.Join(s.protected, "run", "exit-code"),
		s.home + "/" + relative,
		filepath.Join(outside, "run", "exit-code"),
		"/proc/self/root" + s.protected,
	}
	for _, path := range attempts {
		if _, err := s.fs.Stat(ctx, connect.NewRequest(&fsrpc.StatRequest{Path: path})); codeOf(err) != connect.CodePermissionDenied {
			t.Errorf("stat %s: %v, want permission_denied", path, err)
		}
		if _, err := s.fs.Remove(ctx, connect.NewRequest(&fsrpc.RemoveRequest{Path: path})); codeOf(err) != connect.CodePermissionDenied {
			t.Errorf("remove %s: %v, want permission_denied", path, err)
		}
	}
	response, err := upload(s.url+"/files?path="+dangling, "application/octet-stream", strings.NewReader("overwritten"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if response.StatusCode != http.StatusForbidden {
		t.Fatalf("upload through a dangling symlink: %d", response.StatusCode)
	}
	if content, _ := os.ReadFile(filepath.Join(s.protected, "run", "exit-code")); string(content) != "0\n" {
		t.Fatalf("the protected file changed: %q", content)
	}
	if _, err := os.Stat(filepath.Join(s.protected, "run", "new-file")); err == nil {
		t.Fatal("a file was created in the protected directory")
	}
	list, err := s.fs.ListDir(ctx, connect.NewRequest(&fsrpc.ListDirRequest{Path: filepath.Dir(s.protected), Depth: 1}))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Msg.GetEntries()) != 0 {
		t.Fatalf("the protected directory is listed: %v", list.Msg.GetEntries())
	}
}

func TestWatchDirStreamsStartThenChangesBelowIt(t *testing.T) {
	s := start(t, server.Options{})
	dir := filepath.Join(s.home, "watched")
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := s.fs.WatchDir(ctx, connect.NewRequest(&fsrpc.WatchDirRequest{Path: dir, Recursive: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() || stream.Msg().GetStart() == nil {
		t.Fatalf("first event %v (%v), want start", stream.Msg(), stream.Err())
	}
	write(t, filepath.Join(dir, "sub", "new.txt"), "x")
	seen := map[string]bool{}
	for stream.Receive() {
		if event := stream.Msg().GetFilesystem(); event != nil {
			seen[event.GetName()+" "+event.GetType().String()] = true
			if seen["sub/new.txt EVENT_TYPE_CREATE"] && seen["sub/new.txt EVENT_TYPE_WRITE"] {
				return
			}
		}
	}
	t.Fatalf("events %v (%v)", seen, stream.Err())
}

func TestPolledWatchersCollectEventsUntilRemoved(t *testing.T) {
	s := start(t, server.Options{})
	ctx := context.Background()
	created, err := s.fs.CreateWatcher(ctx, asUser(&fsrpc.CreateWatcherRequest{Path: "~"}, "tester"))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.GetWatcherId()
	write(t, filepath.Join(s.home, "polled.txt"), "x")
	var names []string
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && len(names) == 0; time.Sleep(50 * time.Millisecond) {
		events, err := s.fs.GetWatcherEvents(ctx, connect.NewRequest(&fsrpc.GetWatcherEventsRequest{WatcherId: id}))
		if err != nil {
			t.Fatal(err)
		}
		for _, event := range events.Msg.GetEvents() {
			names = append(names, event.GetName())
		}
	}
	if len(names) == 0 || names[0] != "polled.txt" {
		t.Fatalf("events %v", names)
	}
	if _, err := s.fs.RemoveWatcher(ctx, connect.NewRequest(&fsrpc.RemoveWatcherRequest{WatcherId: id})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.fs.GetWatcherEvents(ctx, connect.NewRequest(&fsrpc.GetWatcherEventsRequest{WatcherId: id})); codeOf(err) != connect.CodeNotFound {
		t.Fatalf("removed watcher: %v", err)
	}
}

// fakeClock is a clock the test moves by hand (requests read it from the server's goroutines).
type fakeClock struct{ nanos atomic.Int64 }

func (c *fakeClock) now() time.Time                 { return time.Unix(0, c.nanos.Load()) }
func (c *fakeClock) advance(duration time.Duration) { c.nanos.Add(int64(duration)) }

// inotifyWatches counts the directories the daemon (this process) watches: the "inotify wd:"
// lines of its inotify instances' fdinfo.
func inotifyWatches(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, entry := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", entry.Name())); err != nil || target != "anon_inode:inotify" {
			continue
		}
		info, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", entry.Name()))
		if err != nil {
			continue
		}
		count += strings.Count(string(info), "inotify wd:")
	}
	return count
}

// A polled watcher nobody polls is removed after the idle timeout (its directory no longer
// watched), and there are at most MaxPolledWatchers at once.
func TestPolledWatchersExpireWhenNotPolledAndAreCapped(t *testing.T) {
	clock := &fakeClock{}
	clock.advance(time.Hour)
	s := start(t, server.Options{PolledWatcherIdleTimeout: time.Minute, MaxPolledWatchers: 2, Clock: clock.now})
	ctx := context.Background()
	if err := os.Mkdir(filepath.Join(s.home, "idle"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := "~"
	create := func() (string, error) {
		created, err := s.fs.CreateWatcher(ctx, asUser(&fsrpc.CreateWatcherRequest{Path: path}, "tester"))
		if err != nil {
			return "", err
		}
		return created.Msg.GetWatcherId(), nil
	}
	poll := func(id string) error {
		_, err := s.fs.GetWatcherEvents(ctx, connect.NewRequest(&fsrpc.GetWatcherEventsRequest{WatcherId: id}))
		return err
	}
	polledOne, err := create()
	if err != nil {
		t.Fatal(err)
	}
	path = "~/idle"
	idle, err := create()
	if err != nil {
		t.Fatal(err)
	}
	_, err = create()
	var connectErr *connect.Error
	if !errors.As(err, &connectErr) || connectErr.Code() != connect.CodeResourceExhausted || !strings.Contains(connectErr.Message(), "RemoveWatcher") {
		t.Fatalf("a third watcher past the cap of 2: %v, want resource_exhausted saying what to do", err)
	}

	clock.advance(40 * time.Second)
	if err := poll(polledOne); err != nil {
		t.Fatal(err)
	}
	before := inotifyWatches(t)
	clock.advance(40 * time.Second) // idle: 80 s without a poll; polledOne: 40 s
	if err := poll(polledOne); err != nil {
		t.Fatalf("a watcher polled within the timeout: %v", err)
	}
	if after := inotifyWatches(t); after != before-1 {
		t.Errorf("watched directories %d, then %d: the expired watcher's directory is still watched", before, after)
	}
	err = poll(idle)
	if !errors.As(err, &connectErr) || connectErr.Code() != connect.CodeNotFound || !strings.Contains(connectErr.Message(), "not polled") {
		t.Fatalf("a watcher not polled for 80 s: %v, want not_found saying it expired", err)
	}
	// Its place is free again.
	if _, err := create(); err != nil {
		t.Fatalf("a watcher in the place of the expired one: %v", err)
	}
}

func upload(url, contentType string, body io.Reader, header http.Header) (*http.Response, error) {
	request, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		return nil, err
	}
	for name, values := range header {
		request.Header[name] = values
	}
	request.Header.Set("Content-Type", contentType)
	return http.DefaultClient.Do(request)
}

func multipartBody(t *testing.T, files map[string]string) (string, *bytes.Buffer) {
	t.Helper()
	var body bytes.Buffer
	writer := multipart.NewWriter(&body)
	for name, content := range files {
		part, err := writer.CreateFormFile("file", name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = part.Write([]byte(content))
	}
	_ = writer.Close()
	return writer.FormDataContentType(), &body
}

// plainClient asks for no compression (Go's default transport asks for gzip and hides it).
var plainClient = &http.Client{Transport: &http.Transport{DisableCompression: true}}

type written struct {
	Name, Type, Path string
}

func decode[T any](t *testing.T, response *http.Response, status int) T {
	t.Helper()
	defer response.Body.Close()
	body, _ := io.ReadAll(response.Body)
	if response.StatusCode != status {
		t.Fatalf("status %d (%s), want %d", response.StatusCode, body, status)
	}
	var value T
	if err := json.Unmarshal(body, &value); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	return value
}

func TestASignedFilesRequestActsOnlyAsTheUserItsSignatureCovers(t *testing.T) {
	s := start(t, server.Options{DefaultUser: "tester"})
	basicRoot := http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("root:"))}}
	// A presigned URL names no user (E2B's SDKs send none): it acts as the default user, whatever
	// Authorization header its holder adds.
	signed := decode[[]written](t, must(upload(s.url+"/files?path=signed.txt&signature=v1_x", "application/octet-stream", strings.NewReader("x"), basicRoot)), 200)
	if len(signed) != 1 || signed[0].Path != filepath.Join(s.home, "signed.txt") {
		t.Fatalf("signed upload wrote %v", signed)
	}
	if info, err := os.Stat(filepath.Join(s.home, "signed.txt")); err != nil || info.Sys().(*syscall.Stat_t).Uid != testerUID {
		t.Fatalf("signed upload's owner: %v %v", info, err)
	}
	// An ordinary request may still choose its user with Basic authorization.
	chosen := decode[[]written](t, must(upload(s.url+"/files?path="+filepath.Join(s.home, "as-root.txt"), "application/octet-stream", strings.NewReader("x"), basicRoot)), 200)
	if info, err := os.Stat(chosen[0].Path); err != nil || info.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("basic upload's owner: %v %v", info, err)
	}
}

func TestFilesUploadInEveryFormAndDownload(t *testing.T) {
	s := start(t, server.Options{})
	// One multipart file at ?path=, relative to the user's home, parents created.
	contentType, body := multipartBody(t, map[string]string{"ignored-name": "first"})
	files := decode[[]written](t, must(upload(s.url+"/files?path=docs/a.txt&username=tester", contentType, body, nil)), 200)
	if len(files) != 1 || files[0] != (written{"a.txt", "file", filepath.Join(s.home, "docs/a.txt")}) {
		t.Fatalf("written %v", files)
	}
	info, _ := os.Stat(filepath.Join(s.home, "docs/a.txt"))
	if stat := info.Sys().(*syscall.Stat_t); stat.Uid != testerUID || stat.Gid != testerUID {
		t.Fatalf("owner %d:%d", stat.Uid, stat.Gid)
	}
	if dir, _ := os.Stat(filepath.Join(s.home, "docs")); dir.Sys().(*syscall.Stat_t).Uid != testerUID {
		t.Fatal("the created directory is not the user's")
	}
	// Several files, each part's filename its path.
	contentType, body = multipartBody(t, map[string]string{filepath.Join(s.home, "many/one.txt"): "1", "many/two.txt": "22"})
	files = decode[[]written](t, must(upload(s.url+"/files", contentType, body, http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("tester:"))}})), 200)
	if len(files) != 2 {
		t.Fatalf("written %v", files)
	}
	// A raw gzip-encoded body overwrites.
	var compressed bytes.Buffer
	zipper := gzip.NewWriter(&compressed)
	_, _ = zipper.Write([]byte("second version"))
	_ = zipper.Close()
	files = decode[[]written](t, must(upload(s.url+"/files?path=docs/a.txt&username=tester", "application/octet-stream", &compressed, http.Header{"Content-Encoding": {"gzip"}})), 200)
	if files[0].Path != filepath.Join(s.home, "docs/a.txt") {
		t.Fatalf("written %v", files)
	}
	// Download, plain and gzip.
	response := must(plainClient.Get(s.url + "/files?path=docs/a.txt&username=tester"))
	content, _ := io.ReadAll(response.Body)
	response.Body.Close()
	if string(content) != "second version" || response.Header.Get("Content-Length") != "14" {
		t.Fatalf("downloaded %q (length %q)", content, response.Header.Get("Content-Length"))
	}
	request, _ := http.NewRequest(http.MethodGet, s.url+"/files?path="+filepath.Join(s.home, "many/two.txt"), nil)
	request.Header.Set("Accept-Encoding", "gzip")
	response = must(http.DefaultTransport.RoundTrip(request))
	if response.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("no gzip: %v", response.Header)
	}
	unzipper, err := gzip.NewReader(response.Body)
	if err != nil {
		t.Fatal(err)
	}
	content, _ = io.ReadAll(unzipper)
	response.Body.Close()
	if string(content) != "22" {
		t.Fatalf("gzip download %q", content)
	}
	// An empty file says Content-Length: 0.
	write(t, filepath.Join(s.home, "empty"), "")
	response = must(plainClient.Get(s.url + "/files?path=empty&username=tester"))
	response.Body.Close()
	if response.StatusCode != 200 || response.Header.Get("Content-Length") != "0" {
		t.Fatalf("empty file: %d, Content-Length %q", response.StatusCode, response.Header.Get("Content-Length"))
	}
}

type failure struct {
	Message string `json:"message"`
	Code    int    `json:"code"`
}

func TestFilesErrorsAreJSONWithTheStatus(t *testing.T) {
	s := start(t, server.Options{MaxUploadBytes: 1000})
	checks := []struct {
		response *http.Response
		status   int
		says     string
	}{
		{must(http.Get(s.url + "/files?path=/no/such/file")), 404, "no such file"},
		{must(http.Get(s.url + "/files?path=" + s.home)), 400, "is a directory"},
		{must(http.Get(s.url + "/files")), 400, "path query parameter is required"},
		{must(http.Get(s.url + "/files?path=x&username=ghost")), 401, "ghost"},
		{must(upload(s.url+"/files?path=/tmp/x", "text/plain", strings.NewReader("x"), nil)), 400, "multipart/form-data"},
		{must(upload(s.url+"/files", "application/octet-stream", strings.NewReader("x"), nil)), 400, "path query parameter is required"},
		{must(upload(s.url+"/files?path="+filepath.Join(s.home, "big"), "application/octet-stream", strings.NewReader(strings.Repeat("x", 1001)), nil)), 413, "larger than"},
	}
	var bomb bytes.Buffer
	zipper := gzip.NewWriter(&bomb)
	_, _ = zipper.Write(bytes.Repeat([]byte{0}, 100_000))
	_ = zipper.Close()
	checks = append(checks, struct {
		response *http.Response
		status   int
		says     string
	}{must(upload(s.url+"/files?path="+filepath.Join(s.home, "bomb"), "application/octet-stream", &bomb, http.Header{"Content-Encoding": {"gzip"}})), 413, "larger than"})
	for _, check := range checks {
		got := decode[failure](t, check.response, check.status)
		if got.Code != check.status || !strings.Contains(got.Message, check.says) {
			t.Errorf("%s: %+v, want code %d saying %q", check.response.Request.URL, got, check.status, check.says)
		}
	}
}

func TestAFullDiskIs507(t *testing.T) {
	s := start(t, server.Options{})
	small := filepath.Join(s.home, "small-disk")
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", small, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	defer syscall.Unmount(small, syscall.MNT_DETACH)
	response := must(upload(s.url+"/files?path="+filepath.Join(small, "f"), "application/octet-stream", bytes.NewReader(make([]byte, 256*1024)), nil))
	got := decode[failure](t, response, http.StatusInsufficientStorage)
	if !strings.Contains(got.Message, "disk is full") {
		t.Fatalf("%+v", got)
	}
}

func TestInitSetsTheTokenDefaultsAndEnvironment(t *testing.T) {
	s := start(t, server.Options{})
	initBody := `{"accessToken":"secret-token","defaultUser":"tester","envVars":{"FROM_INIT":"init-value"}}`
	response := must(upload(s.url+"/init", "application/json", strings.NewReader(initBody), nil))
	response.Body.Close()
	if response.StatusCode != http.StatusNoContent {
		t.Fatalf("init: %d", response.StatusCode)
	}
	// Without the token: RPCs are unauthenticated, /envs 401; /health still answers.
	_, err := s.fs.Stat(context.Background(), connect.NewRequest(&fsrpc.StatRequest{Path: "/"}))
	if codeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("stat without the token: %v", err)
	}
	stream, err := s.process.Start(context.Background(), connect.NewRequest(shell("true")))
	if err == nil {
		stream.Receive()
		err = stream.Err()
	}
	if codeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("start without the token: %v", err)
	}
	if response := must(http.Get(s.url + "/envs")); response.StatusCode != 401 {
		t.Fatalf("/envs without the token: %d", response.StatusCode)
	}
	if response := must(http.Get(s.url + "/health")); response.StatusCode != 204 {
		t.Fatalf("/health: %d", response.StatusCode)
	}
	if response := must(upload(s.url+"/init", "application/json", strings.NewReader(`{"accessToken":"stolen"}`), nil)); response.StatusCode != 401 {
		t.Fatalf("re-init without the token: %d", response.StatusCode)
	}
	// With it: the default user is tester, the init variables reach processes and /envs.
	request := connect.NewRequest(shell("echo $(id -u) $FROM_INIT"))
	request.Header().Set("X-Access-Token", "secret-token")
	if got := run(t, s, request, nil); got.stdout != "4242 init-value\n" {
		t.Fatalf("stdout %q", got.stdout)
	}
	envs, _ := http.NewRequest(http.MethodGet, s.url+"/envs", nil)
	envs.Header.Set("X-Access-Token", "secret-token")
	environment := decode[map[string]string](t, must(http.DefaultClient.Do(envs)), 200)
	if environment["FROM_INIT"] != "init-value" || environment["SANDBOX_VAR"] != "from-the-sandbox" {
		t.Fatalf("envs %v", environment)
	}
	// /files: the token or a signature.
	write(t, filepath.Join(s.home, "signed.txt"), "signed")
	if response := must(http.Get(s.url + "/files?path=signed.txt")); response.StatusCode != 401 {
		t.Fatalf("download without token or signature: %d", response.StatusCode)
	}
	digest := sha256.Sum256([]byte("signed.txt:read::secret-token"))
	signature := "v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(digest[:]), "=")
	response = must(http.Get(s.url + "/files?path=signed.txt&signature=" + strings.ReplaceAll(signature, "+", "%2B")))
	content, _ := io.ReadAll(response.Body)
	response.Body.Close()
	if response.StatusCode != 200 || string(content) != "signed" {
		t.Fatalf("signed download: %d %q", response.StatusCode, content)
	}
	// A signed upload writes content; a mode, which its signature does not cover, is refused (the
	// token allows it).
	digest = sha256.Sum256([]byte("moded.txt:write::secret-token"))
	signature = "v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(digest[:]), "=")
	signed := s.url + "/files?path=moded.txt&signature=" + strings.ReplaceAll(signature, "+", "%2B")
	if response := must(upload(signed+"&mode=777", "application/octet-stream", strings.NewReader("x"), nil)); response.StatusCode != 403 {
		t.Fatalf("signed upload with a mode: %d", response.StatusCode)
	}
	if _, err := os.Lstat(filepath.Join(s.home, "moded.txt")); !os.IsNotExist(err) {
		t.Fatalf("the refused upload wrote moded.txt (%v)", err)
	}
	if response := must(upload(signed, "application/octet-stream", strings.NewReader("x"), nil)); response.StatusCode != 200 {
		t.Fatalf("signed upload: %d", response.StatusCode)
	}
	withToken, _ := http.NewRequest(http.MethodPost, s.url+"/files?path=moded.txt&mode=700", strings.NewReader("y"))
	withToken.Header.Set("Content-Type", "application/octet-stream")
	withToken.Header.Set("X-Access-Token", "secret-token")
	if response := must(http.DefaultClient.Do(withToken)); response.StatusCode != 200 {
		t.Fatalf("upload with the token and a mode: %d", response.StatusCode)
	}
	if info, err := os.Stat(filepath.Join(s.home, "moded.txt")); err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("moded.txt: %v %v", info, err)
	}
}

func TestHttp2WithoutTlsServesTheSameRoutes(t *testing.T) {
	s := start(t, server.Options{})
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	response, err := client.Get(s.url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	response.Body.Close()
	if response.ProtoMajor != 2 || response.StatusCode != 204 {
		t.Fatalf("%s %d", response.Proto, response.StatusCode)
	}
	processes := processconnect.NewProcessClient(client, s.url)
	stream, err := processes.Start(context.Background(), connect.NewRequest(shell("echo over-h2")))
	if err != nil {
		t.Fatal(err)
	}
	got := collect(t, stream, func() *rpc.ProcessEvent { return stream.Msg().GetEvent() }, nil)
	if got.stdout != "over-h2\n" {
		t.Fatalf("stdout %q", got.stdout)
	}
}

func TestMalformedRequestsGetErrorsNotCrashes(t *testing.T) {
	s := start(t, server.Options{})
	for _, body := range []string{"{", `{"path": 5}`, `{"depth": -1}`, "null"} {
		response := must(upload(s.url+"/filesystem.Filesystem/ListDir", "application/json", strings.NewReader(body), nil))
		got := map[string]string{}
		_ = json.NewDecoder(response.Body).Decode(&got)
		response.Body.Close()
		if response.StatusCode < 400 || got["code"] == "" {
			t.Errorf("%s: %d %v", body, response.StatusCode, got)
		}
	}
	if response := must(http.Get(s.url + "/no-such-route")); response.StatusCode != 404 {
		t.Fatalf("unknown route: %d", response.StatusCode)
	}
	if _, err := s.process.SendSignal(context.Background(), connect.NewRequest(&rpc.SendSignalRequest{Process: &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: 999999}}, Signal: rpc.Signal_SIGNAL_SIGTERM})); codeOf(err) != connect.CodeNotFound {
		t.Fatalf("unknown pid: %v", err)
	}
	if _, err := s.process.SendSignal(context.Background(), connect.NewRequest(&rpc.SendSignalRequest{Process: &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: 1}}})); codeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("no signal: %v", err)
	}
}

func must[T any](value T, err error) T {
	if err != nil {
		panic(errors.Join(errors.New("request failed"), err))
	}
	return value
}
