package server_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	rpc "fast-sandbox.io/envd/gen/process"
	"fast-sandbox.io/envd/gen/process/processconnect"
	"fast-sandbox.io/envd/internal/server"
)

func TestAClientThatStopsReadingHoldsBackNeitherTheProcessNorOtherViewers(t *testing.T) {
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	for protocol, client := range map[string]*http.Client{"HTTP/1.1": http.DefaultClient, "h2c": {Transport: &http.Transport{Protocols: &h2c}}} {
		t.Run(protocol, func(t *testing.T) { testAClientThatStopsReading(t, client) })
	}
}

func testAClientThatStopsReading(t *testing.T, client *http.Client) {
	s := start(t, server.Options{StreamSendTimeout: 500 * time.Millisecond})
	// Far more output than the socket buffers and the subscription hold, then a last word.
	request := shell("head -c 32000000 /dev/zero; echo finished >&2")
	request.Tag = ptr("stalled")
	// Without compression: zeros would otherwise shrink to nothing and never fill a buffer.
	uncompressed := processconnect.NewProcessClient(client, s.url, connect.WithProtoJSON(), connect.WithAcceptCompression("gzip", nil, nil))
	stalledCtx, stopStalled := context.WithCancel(context.Background())
	defer stopStalled()
	stalled, err := uncompressed.Start(stalledCtx, connect.NewRequest(request))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if !stalled.Receive() { // the start event, then it never reads again
		t.Fatal(stalled.Err())
	}
	viewerCtx, stopViewer := context.WithTimeout(context.Background(), 10*time.Second)
	defer stopViewer()
	viewer, err := s.process.Connect(viewerCtx, connect.NewRequest(&rpc.ConnectRequest{Process: &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Tag{Tag: "stalled"}}}))
	if err != nil {
		t.Fatal(err)
	}
	defer viewer.Close()
	var stderr string
	var end *rpc.ProcessEvent_EndEvent
	for viewer.Receive() {
		stderr += string(viewer.Msg().GetEvent().GetData().GetStderr())
		end = viewer.Msg().GetEvent().GetEnd()
	}
	if end == nil || stderr != "finished\n" {
		t.Fatalf("the other viewer got stderr %q, end %v (%v): the client that stopped reading held the process back", stderr, end, viewer.Err())
	}
	// The client that stopped reading is told, once it reads again, that output it was owed is lost:
	// never an end as if it had it all.
	for stalled.Receive() {
		if end := stalled.Msg().GetEvent().GetEnd(); end != nil {
			t.Fatalf("the client that stopped reading got the end %v as if it had all the output", end)
		}
	}
	if err := stalled.Err(); codeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "did not read the process's output") {
		t.Fatalf("the client that stopped reading ended with %v, want resource_exhausted saying why", err)
	}
}

// E2B's SDKs read a background command's stream only when it is waited for: a client that reads
// nothing for longer than the send timeout, then reads, gets all of the output and the end, as
// long as what waited for it fits its backlog (it used to find its stream ended).
func TestAClientThatReadsLateGetsAllTheOutput(t *testing.T) {
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	for protocol, client := range map[string]*http.Client{"HTTP/1.1": http.DefaultClient, "h2c": {Transport: &http.Transport{Protocols: &h2c}}} {
		t.Run(protocol, func(t *testing.T) {
			s := start(t, server.Options{StreamSendTimeout: 300 * time.Millisecond})
			// More than the socket buffers and the flow-control windows hold, less than the backlog.
			const total = 8 << 20
			uncompressed := processconnect.NewProcessClient(client, s.url, connect.WithProtoJSON(), connect.WithAcceptCompression("gzip", nil, nil))
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			late, err := uncompressed.Start(ctx, connect.NewRequest(shell(fmt.Sprintf("head -c %d /dev/zero; echo finished >&2", total))))
			if err != nil {
				t.Fatal(err)
			}
			defer late.Close()
			if !late.Receive() {
				t.Fatal(late.Err())
			}
			time.Sleep(2 * time.Second) // many times the send timeout; the process ends meanwhile
			stdout, stderr := 0, ""
			var end *rpc.ProcessEvent_EndEvent
			for late.Receive() {
				stdout += len(late.Msg().GetEvent().GetData().GetStdout())
				stderr += string(late.Msg().GetEvent().GetData().GetStderr())
				if e := late.Msg().GetEvent().GetEnd(); e != nil {
					end = e
				}
			}
			if stdout != total || stderr != "finished\n" || end.GetExitCode() != 0 || !end.GetExited() {
				t.Fatalf("the late reader got %d of %d bytes, stderr %q, end %v (%v)", stdout, total, stderr, end, late.Err())
			}
		})
	}
}

// startWithUnreadStdin starts a shell that ends after lifetime while its background child holds
// stdin (and the output pipes) open for the rest of the test and never reads, then sends it more
// input than a pipe holds: the SendInput blocks. It returns the stream (whose deadline, 20 s, is
// long past the shell's end), the selector and the SendInput's outcome.
func startWithUnreadStdin(t *testing.T, s *sandbox, lifetime string) (*connect.ServerStreamForClient[rpc.StartResponse], *rpc.ProcessSelector, <-chan error) {
	t.Helper()
	// bash: dash gives an asynchronous command /dev/null as stdin whatever it asks.
	request := &rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-c", "sleep 600 0<&0 & sleep " + lifetime}}, Stdin: ptr(true)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	stream, err := s.process.Start(ctx, connect.NewRequest(request))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stream.Close() })
	if !stream.Receive() {
		t.Fatal(stream.Err())
	}
	pid := stream.Msg().GetEvent().GetStart().GetPid()
	// The background child is in the shell's session (its process group): it goes with the test.
	t.Cleanup(func() { _ = syscall.Kill(-int(pid), syscall.SIGKILL) })
	selector := &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: pid}}
	sent := make(chan error, 1)
	go func() {
		_, err := s.process.SendInput(context.Background(), connect.NewRequest(&rpc.SendInputRequest{Process: selector, Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Stdin{Stdin: bytes.Repeat([]byte("x"), 256<<10)}}}))
		sent <- err
	}()
	time.Sleep(300 * time.Millisecond) // the write fills the pipe and waits
	return stream, selector, sent
}

// receiveTheEnd reads the stream until the end event, failing the test when the stream ends
// (its deadline) without one.
func receiveTheEnd(t *testing.T, stream *connect.ServerStreamForClient[rpc.StartResponse]) {
	t.Helper()
	for stream.Receive() {
		if stream.Msg().GetEvent().GetEnd() != nil {
			return
		}
	}
	t.Fatalf("the stream ended without the end event: %v", stream.Err())
}

func TestCloseStdinDoesNotWaitForABlockedStdinWrite(t *testing.T) {
	s := start(t, server.Options{})
	stream, selector, sent := startWithUnreadStdin(t, s, "1")
	closeCtx, cancelClose := context.WithTimeout(context.Background(), time.Second)
	defer cancelClose()
	if _, err := s.process.CloseStdin(closeCtx, connect.NewRequest(&rpc.CloseStdinRequest{Process: selector})); err != nil {
		t.Fatalf("close stdin during a blocked write: %v", err)
	}
	select {
	case err := <-sent:
		if codeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "stdin was closed") {
			t.Fatalf("the blocked SendInput: %v, want failed_precondition: stdin was closed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("closing stdin did not end the blocked SendInput")
	}
	receiveTheEnd(t, stream)
}

func TestABlockedStdinWriteDoesNotHoldBackTheEnd(t *testing.T) {
	s := start(t, server.Options{})
	// The background child holds stdin far beyond the stream's deadline: an end held back until
	// it lets go never comes.
	stream, _, sent := startWithUnreadStdin(t, s, "1")
	receiveTheEnd(t, stream)
	select {
	case err := <-sent:
		if codeOf(err) != connect.CodeFailedPrecondition {
			t.Fatalf("the blocked SendInput: %v, want failed_precondition", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the blocked SendInput did not end with the process")
	}
}

func TestAHugeKeepaliveIntervalIsCappedNotACrash(t *testing.T) {
	s := start(t, server.Options{})
	request := connect.NewRequest(shell("echo hi"))
	request.Header().Set("Keepalive-Ping-Interval", "10000000000")
	if got := run(t, s, request, nil); got.stdout != "hi\n" || got.end.GetExitCode() != 0 {
		t.Fatalf("stdout %q end %v", got.stdout, got.end)
	}
}

// A process that ends at once is gone from List once its end was sent, however soon that is.
func TestProcessesThatEndedAreNotListed(t *testing.T) {
	s := start(t, server.Options{})
	for range 300 {
		stream, err := s.process.Start(context.Background(), connect.NewRequest(&rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "/bin/true"}, Stdin: ptr(false)}))
		if err != nil {
			t.Fatal(err)
		}
		for stream.Receive() {
		}
		stream.Close()
	}
	// The end event is sent before the process is forgotten: give the last one a moment.
	var listed []*rpc.ProcessInfo
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		response, err := s.process.List(context.Background(), connect.NewRequest(&rpc.ListRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if listed = response.Msg.GetProcesses(); len(listed) == 0 {
			return
		}
	}
	t.Fatalf("%d processes that ended are listed: %v", len(listed), listed)
}

// Input a process does not read waits no longer than its request's deadline (Connect-Timeout-Ms,
// which E2B's SDKs send): the daemon answers deadline_exceeded itself, and the inputs behind it
// are not stuck behind a write that never ends.
func TestInputAProcessDoesNotReadEndsWithItsRequestsDeadline(t *testing.T) {
	s := start(t, server.Options{})
	request := &rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "/bin/sleep", Args: []string{"5"}}, Stdin: ptr(true)}
	stream, err := s.process.Start(context.Background(), connect.NewRequest(request))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() {
		t.Fatal(stream.Err())
	}
	selector := &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: stream.Msg().GetEvent().GetStart().GetPid()}}
	for i, size := range []int{256 << 10, 1} {
		input := connect.NewRequest(&rpc.SendInputRequest{Process: selector, Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Stdin{Stdin: bytes.Repeat([]byte("x"), size)}}})
		// The deadline of the request only, not the client's: the answer must come from the daemon.
		input.Header().Set("Connect-Timeout-Ms", "300")
		sent := make(chan error, 1)
		go func() {
			_, err := s.process.SendInput(context.Background(), input)
			sent <- err
		}()
		select {
		case err := <-sent:
			if codeOf(err) != connect.CodeDeadlineExceeded || !strings.Contains(err.Error(), "did not read its input") {
				t.Fatalf("input %d: %v, want deadline_exceeded from the daemon, saying why", i, err)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("input %d is still waiting 3 s after its 300 ms deadline", i)
		}
	}
}
