// Package process runs the commands of process.Process (E2B's envd interface): each one in its own
// session (so a signal reaches what it started too), as the requesting user, with its output
// streamed to every attached client as it arrives.
package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/creack/pty"

	rpc "fast-sandbox.io/envd/gen/process"
)

// outputGraceAfterExit bounds how long output is still read after the process exited. What was
// in the pipe (or the terminal) when it exited is all read and sent, however slowly the clients
// take it: until then the grace bounds only idleness, each read pushing the deadline out again
// (the time spent handing a chunk to a slow client does not count). Past that, what a background
// child that inherited the pipe still writes is read for this long more, and no longer: a child
// that keeps the pipe open, silent or writing for ever, does not hold the end event back.
const outputGraceAfterExit = 200 * time.Millisecond

// outputAfterExitBytes bounds, with outputGraceAfterExit, what is read beyond what the output held
// at the exit: a child writing for ever cannot queue much in front of the end event for a slow
// client, however fast it writes while the grace runs.
const outputAfterExitBytes = 1 << 20

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

	// writing keeps one input write at a time, in order (a semaphore: one waiting for it gives up
	// with its request's context). Closing stdin does not take it: a write blocked on a process that
	// does not read must not hold the close (or the end) back, and closing the pipe is what ends
	// such a write (with os.ErrClosed).
	writing     chan struct{}
	stdin       *os.File
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

// New prepares a process; Subscribe before Start to see all of its output.
func New(spec Spec) *Process {
	return &Process{spec: spec, subscribers: map[*Subscription]struct{}{}, done: make(chan struct{}), writing: make(chan struct{}, 1)}
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
		terminal = pollable(terminal)
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
	readers := make([]*outputReader, len(outputs))
	for index, output := range outputs {
		reader := &outputReader{file: output, kind: kindOf(p.terminal != nil, index)}
		readers[index] = reader
		reading.Add(1)
		go func() {
			defer reading.Done()
			p.read(reader)
		}()
	}
	go func() {
		waitErr := cmd.Wait()
		// What is left in the pipes is read; then the readers stop even if a child holds them open.
		for _, reader := range readers {
			reader.exited(time.Now())
		}
		drained := make(chan struct{})
		go func() {
			reading.Wait()
			close(drained)
		}()
		ticker := time.NewTicker(outputGraceAfterExit / 4)
	waiting:
		for {
			select {
			case <-drained:
				break waiting
			case now := <-ticker.C:
				if !stuck(readers, now) {
					continue
				}
				// A terminal that is not pollable (gVisor's) ignores the deadline and, unlike Linux's,
				// does not fail the read once the process is gone: the end is sent without waiting for
				// it once its reader has had its time, and whatever it still reads is dropped.
				p.emitMu.Lock()
				p.outputClosed = true
				p.emitMu.Unlock()
				break waiting
			}
		}
		ticker.Stop()
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

// outputReader is one output (stdout, stderr or the terminal) and how far it was read, which,
// once the process exited, decides how long it is still read.
type outputReader struct {
	file *os.File
	kind outputKind

	mu sync.Mutex
	// read counts the bytes read so far.
	read int64
	// afterExit is set once the process exited; target is then the count read must reach for
	// everything that was in the output at the exit to have been read.
	afterExit bool
	target    int64
	// pendingRead is set once read reached target: from then on deadline is no longer pushed out.
	pendingRead bool
	// deadline is when reading gives up (after the exit): no read may wait past it.
	deadline time.Time
	// delivering is set while a chunk is handed to the subscribers (not reading: not idle).
	delivering bool
	finished   bool
}

// exited records the process's exit: what the output holds now must all be read, and a read
// that waits for more gives up after the grace.
func (r *outputReader) exited(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// A read in progress may have taken up to a chunk out of the output without counting it yet:
	// those bytes count towards the target too, or as many bytes still in the output would not.
	r.target = r.read + pendingBytes(r.file) + chunkBytes
	r.afterExit = true
	r.deadline = now.Add(outputGraceAfterExit)
	_ = r.file.SetReadDeadline(r.deadline)
}

// readChunk counts a chunk read; the reader delivers it next.
func (r *outputReader) readChunk(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.read += int64(n)
	r.delivering = true
}

// delivered ends the delivery of a chunk and reports whether to read on. After the exit, until
// what was in the output then has been read, each read has the grace from now (an idle bound:
// the delivery to a slow client does not count); past that the deadline stays where it is.
func (r *outputReader) delivered(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delivering = false
	if !r.afterExit {
		return true
	}
	if !r.pendingRead {
		r.pendingRead = r.read >= r.target
		r.deadline = now.Add(outputGraceAfterExit)
		_ = r.file.SetReadDeadline(r.deadline)
	}
	// A terminal that is not pollable ignores the deadline: a child that writes for ever would
	// keep it read for ever.
	return now.Before(r.deadline) && (!r.pendingRead || r.read-r.target <= outputAfterExitBytes)
}

func (r *outputReader) finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished = true
}

// stuck reports whether every reader still reading waits in a read past its deadline by more than
// the grace: as a terminal that cannot be polled does, whose deadline does nothing.
func stuck(readers []*outputReader, now time.Time) bool {
	for _, reader := range readers {
		reader.mu.Lock()
		waiting := reader.finished || (!reader.delivering && now.Sub(reader.deadline) > outputGraceAfterExit)
		reader.mu.Unlock()
		if !waiting {
			return false
		}
	}
	return true
}

// pendingBytes is how many bytes the pipe or terminal holds unread (0 when it cannot tell).
func pendingBytes(file *os.File) int64 {
	conn, err := file.SyscallConn()
	if err != nil {
		return 0
	}
	var pending int32
	var errno syscall.Errno
	if err := conn.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&pending)))
	}); err != nil || errno != 0 || pending < 0 {
		return 0
	}
	return int64(pending)
}

func (p *Process) read(reader *outputReader) {
	defer reader.finish()
	buffer := make([]byte, chunkBytes)
	for {
		n, err := reader.file.Read(buffer)
		if n > 0 {
			reader.readChunk(n)
			chunk := append([]byte(nil), buffer[:n]...)
			data := &rpc.ProcessEvent_DataEvent{}
			switch reader.kind {
			case stdoutOutput:
				data.Output = &rpc.ProcessEvent_DataEvent_Stdout{Stdout: chunk}
			case stderrOutput:
				data.Output = &rpc.ProcessEvent_DataEvent_Stderr{Stderr: chunk}
			default:
				data.Output = &rpc.ProcessEvent_DataEvent_Pty{Pty: chunk}
			}
			p.emit(&rpc.ProcessEvent{Event: &rpc.ProcessEvent_Data{Data: data}})
			if !reader.delivered(time.Now()) {
				return
			}
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

// emit queues an event for every subscriber, waiting only for one whose backlog is full (the
// output is not dropped) until it leaves or is given up (Subscription).
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
		subscriber.push(event)
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

// Subscribe starts receiving events, with backlog bounding what waits for the subscriber; a
// process that already ended sends only its end event. Call Unsubscribe when done.
func (p *Process) Subscribe(backlog Backlog) *Subscription {
	subscription := newSubscription(backlog)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.end != nil {
		subscription.push(&rpc.ProcessEvent{Event: &rpc.ProcessEvent_End{End: p.end}})
		return subscription
	}
	p.subscribers[subscription] = struct{}{}
	return subscription
}

// Unsubscribe stops the deliveries to a subscription (safe to repeat).
func (p *Process) Unsubscribe(subscription *Subscription) {
	subscription.leave()
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

// ErrInputNotRead is input the process did not take before the request's context ended.
var ErrInputNotRead = errors.New("the process did not read its input before the request ended (its deadline, or its client gone)")

// WriteStdin writes to the process's stdin pipe, giving up when ctx ends (write).
func (p *Process) WriteStdin(ctx context.Context, data []byte) error {
	if p.terminal != nil {
		return ErrHasPty
	}
	if p.stdin == nil {
		return ErrStdinNotOpen
	}
	err := p.write(ctx, p.stdin, data, func() error {
		if p.stdinClosed.Load() {
			return ErrStdinClosed
		}
		return nil
	})
	if err != nil && errors.Is(err, os.ErrClosed) {
		return ErrStdinClosed // closed while the write waited for the process to read
	}
	return err
}

// WritePty writes to the process's terminal as if typed, giving up when ctx ends (write).
func (p *Process) WritePty(ctx context.Context, data []byte) error {
	if p.terminal == nil {
		return ErrNoPty
	}
	return p.write(ctx, p.terminal, data, func() error { return nil })
}

// write writes data to target (the stdin pipe or the terminal) once the writes before it are
// done. A process that does not read fills the pipe or the terminal's buffer, and the write waits:
// it gives up when ctx ends (its deadline, or its client gone), as does a write waiting for its
// turn, so that the requests behind it do not pile up, each holding its goroutine, for as long as
// the process does not read. The deadline needs a pollable file: a pipe is, and a terminal is on
// Linux (pollable; gVisor's is not: there the write waits, as before, until the process reads or
// exits). What was written before the deadline stays written.
func (p *Process) write(ctx context.Context, target *os.File, data []byte, ready func() error) error {
	select {
	case p.writing <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w (waiting behind an earlier input): %w", ErrInputNotRead, ctx.Err())
	}
	defer func() { <-p.writing }()
	if err := ready(); err != nil {
		return err
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = target.SetWriteDeadline(deadline)
	}
	// A context that ends without a deadline (its client gone) ends the write at once.
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		_ = target.SetWriteDeadline(time.Now())
	})
	written, err := target.Write(data)
	if !stop() {
		<-fired
	}
	// No deadline is left for the next write (a failed reset only fails that one early).
	_ = target.SetWriteDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		cause := ctx.Err()
		if cause == nil {
			cause = context.DeadlineExceeded
		}
		return fmt.Errorf("%w (%d of %d bytes written): %w", ErrInputNotRead, written, len(data), cause)
	}
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
	return setSize(p.terminal, &pty.Winsize{Rows: uint16(size.Rows), Cols: uint16(size.Cols)})
}

// pollable returns the terminal as a file Go's poller waits on, so that its deadlines work (input
// that waits too long gives up, the output left after the exit is read for a bounded time).
// creack/pty hands it over in blocking mode — its ioctls go through (*os.File).Fd, which sets it
// — where deadlines do nothing: a non-blocking duplicate, made into a file anew, is pollable
// wherever the kernel can poll a terminal (not under gVisor: there it stays as it was, blocking).
// On any failure the terminal is kept as it came.
func pollable(terminal *os.File) *os.File {
	// Close-on-exec from the start: a process started meanwhile must not inherit the terminal.
	duplicate, _, errno := syscall.Syscall(syscall.SYS_FCNTL, terminal.Fd(), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return terminal
	}
	if err := syscall.SetNonblock(int(duplicate), true); err != nil {
		_ = syscall.Close(int(duplicate))
		return terminal
	}
	_ = terminal.Close()
	return os.NewFile(duplicate, terminal.Name())
}

// setSize is pty.Setsize without (*os.File).Fd, which would put the terminal back in blocking mode.
func setSize(terminal *os.File, size *pty.Winsize) error {
	conn, err := terminal.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	if err := conn.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCSWINSZ, uintptr(unsafe.Pointer(size)))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
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
