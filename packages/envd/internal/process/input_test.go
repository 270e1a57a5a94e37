package process

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	rpc "fast-sandbox.io/envd/gen/process"
)

// startIdle starts a process that never reads its input, with a stdin pipe or a PTY. The terminal
// is raw, without echo, as an editor's or a REPL's: a canonical one drops what does not fit a line.
func startIdle(t *testing.T, terminal bool) *Process {
	t.Helper()
	spec := Spec{Path: "/bin/sleep", Args: []string{"sleep", "30"}, Stdin: true}
	if terminal {
		spec = Spec{Path: "/bin/sh", Args: []string{"sh", "-c", "stty raw -echo && echo raw && exec sleep 30"}, Pty: &rpc.PTY_Size{Cols: 80, Rows: 24}}
	}
	process := New(spec)
	output := process.Subscribe(Backlog{})
	if err := process.Start(nil, nil); err != nil {
		t.Fatal(err)
	}
	if terminal { // raw once it says so
		for event := range events(output) {
			if bytes.Contains(event.GetData().GetPty(), []byte("raw")) {
				break
			}
		}
	}
	process.Unsubscribe(output)
	t.Cleanup(func() {
		_ = process.Signal(9)
		<-process.Done()
	})
	return process
}

// within fails the test when write does not return in time: the old write ignored its context.
func within(t *testing.T, what string, limit time.Duration, write func() error) error {
	t.Helper()
	result := make(chan error, 1)
	go func() { result <- write() }()
	select {
	case err := <-result:
		return err
	case <-time.After(limit):
		t.Fatalf("%s still waits after %v: it ignores its request's context", what, limit)
		return nil
	}
}

// Input a process does not read fills its pipe (or its terminal's buffer) and the write waits.
// It gives up with its request's deadline, and the inputs queued behind it with theirs, instead of
// piling up for as long as the process does not read.
func TestInputAProcessDoesNotReadGivesUpWithItsRequestsContext(t *testing.T) {
	for _, terminal := range []bool{false, true} {
		name := map[bool]string{false: "stdin", true: "pty"}[terminal]
		process := startIdle(t, terminal)
		write := process.WriteStdin
		if terminal {
			write = process.WritePty
		}
		flood := bytes.Repeat([]byte("x"), 4<<20)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		blocked := make(chan error, 1)
		go func() { blocked <- write(ctx, flood) }()
		for len(process.writing) == 0 { // it has its turn
			time.Sleep(time.Millisecond)
		}
		// Queued behind it: waits for its turn, and gives up when its own context ends (canceled).
		behind, cancelBehind := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancelBehind)
		err := within(t, name+": an input queued behind a blocked one", 2*time.Second, func() error { return write(behind, []byte("y")) })
		if !errors.Is(err, ErrInputNotRead) || !errors.Is(err, context.Canceled) {
			t.Errorf("%s: the queued input: %v, want ErrInputNotRead, canceled", name, err)
		}
		err = within(t, name+": an input past its deadline", 2*time.Second, func() error { return <-blocked })
		cancel()
		if !errors.Is(err, ErrInputNotRead) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: the blocked input: %v, want ErrInputNotRead, deadline exceeded", name, err)
		}
		// The next input starts with no deadline left over: given time, and a process that still
		// does not read, it waits again until its own context ends.
		next, cancelNext := context.WithTimeout(context.Background(), 200*time.Millisecond)
		began := time.Now()
		err = within(t, name+": the next input", 2*time.Second, func() error { return write(next, flood) })
		cancelNext()
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(began) < 150*time.Millisecond {
			t.Errorf("%s: the next input: %v after %v, want its own deadline", name, err, time.Since(began))
		}
	}
}
