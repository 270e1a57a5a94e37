package process

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	rpc "fast-sandbox.io/envd/gen/process"
)

// received is what a subscriber got: the output by kind and the end event.
type received struct {
	stdout, stderr, pty int
	stderrText          string
	end                 *rpc.ProcessEvent_EndEvent
}

// receive takes a subscription's events until the end, waiting pause after each data event (a
// slow client) and, when it says so, stalling once until the process exited (was reaped) and
// then for stall more. It fails the test when the end does not come within limit.
func receive(t *testing.T, process *Process, subscription *Subscription, pause, stall, limit time.Duration) received {
	t.Helper()
	var got received
	timeout := time.After(limit)
	for {
		// Checked while events keep coming too: a child writing for ever must not outlast limit.
		select {
		case <-timeout:
			t.Fatalf("no end event within %v (%d bytes of stdout, %d of a terminal so far)", limit, got.stdout, got.pty)
		default:
		}
		event, err := subscription.Take()
		if err != nil {
			t.Fatal(err)
		}
		if event == nil {
			select {
			case <-subscription.Ready():
			case <-timeout:
				t.Fatalf("no end event within %v (%d bytes of stdout, %d of a terminal so far)", limit, got.stdout, got.pty)
			}
			continue
		}
		{
			if data := event.GetData(); data != nil {
				got.stdout += len(data.GetStdout())
				got.stderr += len(data.GetStderr())
				got.stderrText += string(data.GetStderr())
				got.pty += len(data.GetPty())
				time.Sleep(pause)
				if stall > 0 && syscall.Kill(int(process.PID()), 0) == syscall.ESRCH {
					time.Sleep(stall)
					stall = 0
				}
			}
			if end := event.GetEnd(); end != nil {
				got.end = end
				return got
			}
		}
	}
}

// events returns the subscription's events, in order, until none is left and it is not signalled
// within a minute (the channel is closed then, or when the subscription is given up).
func events(subscription *Subscription) <-chan *rpc.ProcessEvent {
	out := make(chan *rpc.ProcessEvent)
	go func() {
		defer close(out)
		for {
			event, err := subscription.Take()
			if err != nil {
				return
			}
			if event != nil {
				out <- event
				continue
			}
			select {
			case <-subscription.Ready():
			case <-time.After(time.Minute):
				return
			}
		}
	}()
	return out
}

// A client slower than the process: when the process exits, a chunk waits in the reader's hands
// for the client, the pipe (or the terminal) still holds up to its size. All of it is sent before
// the end, however long the client takes: the grace after the exit bounds idleness, not the time
// the output takes to reach the client (it used to: the end of the output was lost, with exit 0).
func TestASlowClientGetsAllTheOutputOfAProcessThatExited(t *testing.T) {
	for _, terminal := range []bool{false, true} {
		name := map[bool]string{false: "pipes", true: "pty"}[terminal]
		t.Run(name, func(t *testing.T) {
			// Far more than the subscription's backlog holds (64 KiB here), so that the process waits
			// for the client. The terminal is raw, for an exact count.
			total := 4 << 20
			script := fmt.Sprintf("head -c %d /dev/zero; echo finished >&2", total)
			if terminal {
				total = 512 << 10
				script = fmt.Sprintf("stty raw -echo; head -c %d /dev/zero", total)
			}
			spec := Spec{Path: "/bin/sh", Args: []string{"sh", "-c", script}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/"}
			if terminal {
				spec.Pty = &rpc.PTY_Size{Cols: 80, Rows: 24}
			}
			process := New(spec)
			subscription := process.Subscribe(Backlog{Bytes: 64 << 10})
			defer process.Unsubscribe(subscription)
			if err := process.Start(nil, nil); err != nil {
				t.Fatal(err)
			}
			// The client takes its time: the process waits for it, and exits with its last output
			// still in the pipe (or the terminal), behind the backlog the subscription holds and
			// the one in the reader's hands. Then the client stalls for five times the grace.
			got := receive(t, process, subscription, 2*time.Millisecond, 5*outputGraceAfterExit, 60*time.Second)
			output := got.stdout
			if terminal {
				output = got.pty
			}
			if output != total || got.end.GetExitCode() != 0 {
				t.Fatalf("got %d of %d bytes of output, then the end %v: the end of the output was lost", output, total, got.end)
			}
			if !terminal && got.stderrText != "finished\n" {
				t.Fatalf("stderr %q, want finished", got.stderrText)
			}
		})
	}
}

// A background child that inherited the output and keeps it open — silent, or writing for ever —
// does not hold the end back, even for a slow client: what the process left is sent, what the
// child writes is read for the grace only.
func TestABackgroundChildHoldingTheOutputDoesNotHoldBackTheEnd(t *testing.T) {
	for name, script := range map[string]string{
		"silent":          "sleep 600 & sleep 0.2; echo hi >&2",
		"writing forever": "yes & sleep 0.2; echo hi >&2",
	} {
		t.Run(name, func(t *testing.T) {
			process := New(Spec{Path: "/bin/sh", Args: []string{"sh", "-c", script}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/"})
			// A backlog small enough that the process waits for the slow client before it exits.
			subscription := process.Subscribe(Backlog{Bytes: 64 << 10})
			defer process.Unsubscribe(subscription)
			if err := process.Start(nil, nil); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Kill(-int(process.PID()), syscall.SIGKILL) })
			// An end held back by the child (for ever, or 600 s) fails at receive's limit.
			got := receive(t, process, subscription, 10*time.Millisecond, 0, 10*time.Second)
			// What the process itself wrote last is there.
			if got.end.GetExitCode() != 0 || got.stderrText != "hi\n" {
				t.Fatalf("stderr %q, end %v", got.stderrText, got.end)
			}
		})
	}
}

// Once the process exited and what its output held then was read, a background child writing
// for ever is read for the grace and for outputAfterExitBytes at most: a client that reads as fast
// as it can gets little of it before the end (without the bound, all the child wrote in the grace).
func TestAChildWritingForeverAfterTheExitIsReadBoundedly(t *testing.T) {
	process := New(Spec{Path: "/bin/sh", Args: []string{"sh", "-c", "yes & exit 0"}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/"})
	subscription := process.Subscribe(Backlog{})
	defer process.Unsubscribe(subscription)
	if err := process.Start(nil, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-int(process.PID()), syscall.SIGKILL) })
	got := receive(t, process, subscription, 0, 0, 10*time.Second)
	t.Logf("%d bytes of stdout before the end", got.stdout)
	if got.stdout > 8<<20 {
		t.Fatalf("%d bytes of stdout came before the end: the child was read for as long as the grace allowed", got.stdout)
	}
}
