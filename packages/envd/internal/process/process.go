// Package process runs the commands of process.Process (E2B's envd interface): each one in its own
// session (so a signal reaches what it started too), as the requesting user, with its output
// streamed to every attached client as it arrives.
package process

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"

	rpc "fast-sandbox.io/envd/gen/process"
)

// outputGraceAfterExit is how long output is still read after the process exited, for what is
// left in the pipe; a background child that keeps the pipe open does not hold the end event back
// longer than this.
const outputGraceAfterExit = 200 * time.Millisecond

// chunkBytes is the largest data event.
const chunkBytes = 32 * 1024

var (
	// ErrStdinNotOpen is input for a process started without stdin.
	ErrStdinNotOpen = errors.New("stdin is not open: start the process with stdin: true")
	// ErrStdinClosed is input after CloseStdin.
	ErrStdinClosed = errors.New("stdin was closed")
	// ErrNoPty is a PTY operation on a process started without one.
	ErrNoPty = errors.New("the process was started without a PTY")
	// ErrHasPty is a stdin operation on a process that runs in a PTY.
	ErrHasPty = errors.New("the process runs in a PTY: send its input as `pty` (Ctrl+D, 0x04, ends it)")
)

// Spec is a process ready to start: the command resolved, the environment built.
type Spec struct {
	// Request is the configuration as requested (List shows it).
	Request *rpc.ProcessConfig
	// Path of the executable and Args, Args[0] included.
	Path string
	Args []string
	Env  []string
	Dir  string
	// Credential switches the user; nil runs as the daemon's own.
	Credential *syscall.Credential
	// Pty runs the process in a pseudo-terminal of this size; nil gives it pipes.
	Pty *rpc.PTY_Size
	// Stdin keeps a pipe to the process's stdin open for SendInput (without a PTY).
	Stdin bool
	Tag   string
}

// Process is one started command.
type Process struct {
	spec Spec
	cmd  *exec.Cmd
	pid  uint32

	// terminal is the PTY's controlling side; nil without a PTY.
	terminal *os.File

	// writeMu keeps one input write at a time, in order. Closing stdin does not take it: a write
	// blocked on a process that does not read must not hold the close (or the end) back, and
	// closing the pipe is what ends such a write (with os.ErrClosed).
	writeMu     sync.Mutex
	stdin       io.WriteCloser
	stdinClosed atomic.Bool

	// emitMu orders events: data events one at a time, the end event after all of them.
	emitMu sync.Mutex
	// outputClosed drops output read after the end event (under emitMu).
	outputClosed bool
	mu           sync.Mutex
	subscribers  map[*Subscription]struct{}
	end          *rpc.ProcessEvent_EndEvent
	done         chan struct{}
}

// Subscription receives a process's events from the moment it was made.
type Subscription struct {
	Events chan *rpc.ProcessEvent
	gone   chan struct{}
	once   sync.Once
}

// New prepares a process; Subscribe before Start to see all of its output.
func New(spec Spec) *Process {
	return &Process{spec: spec, subscribers: map[*Subscription]struct{}{}, done: make(chan struct{})}
}

// Start starts the process. onStarted runs once it runs (it has its pid), before anything can
// end it; onEnd runs once its end event was sent.
func (p *Process) Start(onStarted, onEnd func(*Process)) error {
	cmd := &exec.Cmd{Path: p.spec.Path, Args: p.spec.Args, Env: p.spec.Env, Dir: p.spec.Dir}
	attributes := &syscall.SysProcAttr{Setsid: true, Credential: p.spec.Credential}
	var outputs []*os.File
	if p.spec.Pty != nil {
		attributes.Setctty = true
		terminal, err := pty.StartWithAttrs(cmd, &pty.Winsize{Rows: uint16(p.spec.Pty.Rows), Cols: uint16(p.spec.Pty.Cols)}, attributes)
		if err != nil {
			return err
		}
		p.terminal = terminal
		outputs = append(outputs, terminal)
	} else {
		cmd.SysProcAttr = attributes
		stdoutRead, stdoutWrite, err := os.Pipe()
		if err != nil {
			return err
		}
		stderrRead, stderrWrite, err := os.Pipe()
		if err != nil {
			closeAll(stdoutRead, stdoutWrite)
			return err
		}
		childEnds := []*os.File{stdoutWrite, stderrWrite}
		cmd.Stdout, cmd.Stderr = stdoutWrite, stderrWrite
		var stdinWrite *os.File
		if p.spec.Stdin {
			stdinRead, write, err := os.Pipe()
			if err != nil {
				closeAll(stdoutRead, stdoutWrite, stderrRead, stderrWrite)
				return err
			}
			cmd.Stdin, stdinWrite = stdinRead, write
			childEnds = append(childEnds, stdinRead)
		}
		err = cmd.Start()
		closeAll(childEnds...)
		if err != nil {
			closeAll(stdoutRead, stderrRead, stdinWrite)
			return err
		}
		if stdinWrite != nil {
			p.stdin = stdinWrite
		}
		outputs = append(outputs, stdoutRead, stderrRead)
	}
	p.cmd = cmd
	p.pid = uint32(cmd.Process.Pid)
	if onStarted != nil {
		onStarted(p)
	}

	var reading sync.WaitGroup
	for index, output := range outputs {
		reading.Add(1)
		go func() {
			defer reading.Done()
			p.read(output, kindOf(p.terminal != nil, index))
		}()
	}
	go func() {
		waitErr := cmd.Wait()
		// What is left in the pipes is read; then the readers stop even if a child holds them open.
		for _, output := range outputs {
			_ = output.SetReadDeadline(time.Now().Add(outputGraceAfterExit))
		}
		drained := make(chan struct{})
		go func() {
			reading.Wait()
			close(drained)
		}()
		select {
		case <-drained:
		case <-time.After(2 * outputGraceAfterExit):
			// A terminal that is not pollable (gVisor's) ignores the deadline and, unlike Linux's,
			// does not fail the read once the process is gone: the end is sent without waiting for
			// it, and whatever it still reads is dropped.
			p.emitMu.Lock()
			p.outputClosed = true
			p.emitMu.Unlock()
		}
		closeAll(outputs...)
		_ = p.CloseStdin() // and a write still waiting for the process to read fails
		p.finish(endEvent(cmd.ProcessState, waitErr))
		if onEnd != nil {
			onEnd(p)
		}
	}()
	return nil
}

type outputKind int

const (
	stdoutOutput outputKind = iota
	stderrOutput
	ptyOutput
)

func kindOf(terminal bool, index int) outputKind {
	if terminal {
		return ptyOutput
	}
	if index == 0 {
		return stdoutOutput
	}
	return stderrOutput
}

func (p *Process) read(output *os.File, kind outputKind) {
	buffer := make([]byte, chunkBytes)
	for {
		n, err := output.Read(buffer)
		if n > 0 {
			chunk := append([]byte(nil), buffer[:n]...)
			data := &rpc.ProcessEvent_DataEvent{}
			switch kind {
			case stdoutOutput:
				data.Output = &rpc.ProcessEvent_DataEvent_Stdout{Stdout: chunk}
			case stderrOutput:
				data.Output = &rpc.ProcessEvent_DataEvent_Stderr{Stderr: chunk}
			default:
				data.Output = &rpc.ProcessEvent_DataEvent_Pty{Pty: chunk}
			}
			p.emit(&rpc.ProcessEvent{Event: &rpc.ProcessEvent_Data{Data: data}})
		}
		if err != nil {
			// EOF, EIO (a PTY whose last user left) or the deadline after exit.
			return
		}
	}
}

func endEvent(state *os.ProcessState, waitErr error) *rpc.ProcessEvent_EndEvent {
	end := &rpc.ProcessEvent_EndEvent{ExitCode: -1}
	if state != nil {
		end.ExitCode = int32(state.ExitCode())
		end.Exited = state.Exited()
		end.Status = state.String()
	}
	if waitErr != nil {
		message := waitErr.Error()
		end.Error = &message
	}
	return end
}

// emit sends an event to every subscriber, waiting for slow ones (the output is not dropped)
// unless they leave — as the stream of a client that stopped reading does once a message of it
// has waited out the send timeout (streams.Send).
func (p *Process) emit(event *rpc.ProcessEvent) {
	p.emitMu.Lock()
	defer p.emitMu.Unlock()
	if p.outputClosed {
		return
	}
	p.mu.Lock()
	subscribers := make([]*Subscription, 0, len(p.subscribers))
	for subscriber := range p.subscribers {
		subscribers = append(subscribers, subscriber)
	}
	p.mu.Unlock()
	deliver(subscribers, event)
}

func deliver(subscribers []*Subscription, event *rpc.ProcessEvent) {
	for _, subscriber := range subscribers {
		select {
		case subscriber.Events <- event:
		case <-subscriber.gone:
		}
	}
}

func (p *Process) finish(end *rpc.ProcessEvent_EndEvent) {
	p.emitMu.Lock()
	defer p.emitMu.Unlock()
	p.mu.Lock()
	p.end = end
	subscribers := make([]*Subscription, 0, len(p.subscribers))
	for subscriber := range p.subscribers {
		subscribers = append(subscribers, subscriber)
	}
	close(p.done)
	p.mu.Unlock()
	deliver(subscribers, &rpc.ProcessEvent{Event: &rpc.ProcessEvent_End{End: end}})
}

// Subscribe starts receiving events; a process that already ended sends only its end event.
// Call Unsubscribe when done.
func (p *Process) Subscribe() *Subscription {
	subscription := &Subscription{Events: make(chan *rpc.ProcessEvent, 64), gone: make(chan struct{})}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.end != nil {
		subscription.Events <- &rpc.ProcessEvent{Event: &rpc.ProcessEvent_End{End: p.end}}
		return subscription
	}
	p.subscribers[subscription] = struct{}{}
	return subscription
}

// Unsubscribe stops the deliveries to a subscription (safe to repeat).
func (p *Process) Unsubscribe(subscription *Subscription) {
	subscription.once.Do(func() { close(subscription.gone) })
	p.mu.Lock()
	delete(p.subscribers, subscription)
	p.mu.Unlock()
}

// Done is closed once the end event was sent.
func (p *Process) Done() <-chan struct{} { return p.done }

// PID is the process id in the sandbox.
func (p *Process) PID() uint32 { return p.pid }

// Tag is the tag given at start ("" for none).
func (p *Process) Tag() string { return p.spec.Tag }

// Info describes the process for List.
func (p *Process) Info() *rpc.ProcessInfo {
	info := &rpc.ProcessInfo{Config: p.spec.Request, Pid: p.pid}
	if p.spec.Tag != "" {
		tag := p.spec.Tag
		info.Tag = &tag
	}
	return info
}

// Signal sends a signal to the process's whole process group (its session), falling back to the
// process alone when the group is gone.
func (p *Process) Signal(signal syscall.Signal) error {
	if err := syscall.Kill(-int(p.pid), signal); err == nil {
		return nil
	}
	return p.cmd.Process.Signal(signal)
}

// WriteStdin writes to the process's stdin pipe.
func (p *Process) WriteStdin(data []byte) error {
	if p.terminal != nil {
		return ErrHasPty
	}
	if p.stdin == nil {
		return ErrStdinNotOpen
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	if p.stdinClosed.Load() {
		return ErrStdinClosed
	}
	_, err := p.stdin.Write(data)
	if err != nil && errors.Is(err, os.ErrClosed) {
		return ErrStdinClosed // closed while the write waited for the process to read
	}
	return err
}

// WritePty writes to the process's terminal as if typed.
func (p *Process) WritePty(data []byte) error {
	if p.terminal == nil {
		return ErrNoPty
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	_, err := p.terminal.Write(data)
	return err
}

// CloseStdin closes the stdin pipe: the process reads end of file, and a write still waiting
// for the process to read fails.
func (p *Process) CloseStdin() error {
	if p.terminal != nil {
		return ErrHasPty
	}
	// Started without stdin, or closed already: nothing to close, and no error (as E2B's envd answers).
	if p.stdin == nil || p.stdinClosed.Swap(true) {
		return nil
	}
	return p.stdin.Close()
}

// Resize changes the PTY's size.
func (p *Process) Resize(size *rpc.PTY_Size) error {
	if p.terminal == nil {
		return ErrNoPty
	}
	return pty.Setsize(p.terminal, &pty.Winsize{Rows: uint16(size.Rows), Cols: uint16(size.Cols)})
}

func closeAll(files ...*os.File) {
	for _, file := range files {
		if file != nil {
			_ = file.Close()
		}
	}
}

// String names the process in errors.
func (p *Process) String() string { return fmt.Sprintf("process %d", p.pid) }
