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
		select {
		case event := <-subscription.Events:
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
		case <-timeout:
			t.Fatalf("no end event within %v (%d bytes of stdout, %d of a terminal so far)", limit, got.stdout, got.pty)
			return got
		}
	}
}

// A client slower than the process: when the process exits, a chunk waits in the reader's hands
// for the client, the pipe (or the terminal) still holds up to its size. All of it is sent before
// the end, however long the client takes: the grace after the exit bounds idleness, not the time
// the output takes to reach the client (it used to: the end of the output was lost, with exit 0).
func TestASlowClientGetsAllTheOutputOfAProcessThatExited(t *testing.T) {
	for _, terminal := range []bool{false, true} {
		name := map[bool]string{false: "pipes", true: "pty"}[terminal]
		t.Run(name, func(t *testing.T) {
			// More than the subscription's 64 chunks hold (of 32 KiB from a pipe, 4 KiB or less from
			// a terminal), so that the process waits for the client. The terminal is raw, for an
			// exact count.
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
			subscription := process.Subscribe()
			defer process.Unsubscribe(subscription)
			if err := process.Start(nil, nil); err != nil {
				t.Fatal(err)
			}
			// The client takes its time: the process waits for it, and exits with its last output
			// still in the pipe (or the terminal), behind the 64 chunks the subscription holds and
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
		"silent":          "sleep 30 & sleep 0.2; echo hi >&2",
		"writing forever": "yes & sleep 0.2; echo hi >&2",
	} {
		t.Run(name, func(t *testing.T) {
			process := New(Spec{Path: "/bin/sh", Args: []string{"sh", "-c", script}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/"})
			subscription := process.Subscribe()
			defer process.Unsubscribe(subscription)
			if err := process.Start(nil, nil); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Kill(-int(process.PID()), syscall.SIGKILL) })
			began := time.Now()
			got := receive(t, process, subscription, 10*time.Millisecond, 0, 10*time.Second)
			if elapsed := time.Since(began); elapsed > 3*time.Second {
				t.Fatalf("the end came after %v: the background child held it back", elapsed)
			}
			// What the process itself wrote last is there.
			if got.end.GetExitCode() != 0 || got.stderrText != "hi\n" {
				t.Fatalf("stderr %q, end %v", got.stderrText, got.end)
			}
		})
	}
}
