package process

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	rpc "fast-sandbox.io/envd/gen/process"
)

// DefaultBacklogBytes is how much of a process's output waits, per client, for a client that does
// not read it yet (E2B's SDKs read a background command's stream only when it is waited for).
const DefaultBacklogBytes = 16 << 20

// DefaultTotalBacklogBytes bounds what waits for all the clients of all processes together: past
// it, a process waits for its slow clients as it does past one client's backlog.
const DefaultTotalBacklogBytes = 64 << 20

// eventCost is what a queued event holds besides its output (the event, its message, the queue's
// slot), counted with it: a process writing a byte at a time queues far more events per byte of
// output, and the backlog bounds memory, not output alone.
const eventCost = 256

// totalQueued is what all subscriptions hold (their queued cost), bounded by DefaultTotalBacklogBytes.
var totalQueued atomic.Int64

// DefaultBacklogWait is how long the process waits for a client whose backlog is full before that
// client's stream is given up (ErrBacklogOverflow).
const DefaultBacklogWait = 15 * time.Second

// ErrBacklogOverflow ends the stream of a client that left more output unread than its backlog
// holds for longer than the process waits for it: output it was owed is lost.
var ErrBacklogOverflow = errors.New("the client did not read the process's output")

// Backlog bounds the output queued for one client. The zero value is the defaults.
type Backlog struct {
	// Bytes queued (output, and eventCost per event) before the process waits for the client. @default DefaultBacklogBytes
	Bytes int
	// Wait is how long the process then waits before the client's stream is given up. @default DefaultBacklogWait
	Wait time.Duration
}

// Subscription receives a process's events from the moment it was made. Events are queued for it
// without holding the process back, up to its backlog of output; past that the process waits for
// it (so nothing is dropped), for the backlog's wait at most per event, and then the subscription
// is given up: Take reports ErrBacklogOverflow, and the process goes on without it.
type Subscription struct {
	backlog Backlog
	mu      sync.Mutex
	queue   []*rpc.ProcessEvent
	queued  int // cost of the queue: its output and eventCost per event
	lost    bool
	// ready is signalled when an event was queued (or the subscription given up), space when one was taken.
	ready, space chan struct{}
	gone         chan struct{}
	once         sync.Once
}

func newSubscription(backlog Backlog) *Subscription {
	if backlog.Bytes <= 0 {
		backlog.Bytes = DefaultBacklogBytes
	}
	if backlog.Wait <= 0 {
		backlog.Wait = DefaultBacklogWait
	}
	return &Subscription{backlog: backlog, ready: make(chan struct{}, 1), space: make(chan struct{}, 1), gone: make(chan struct{})}
}

// Ready is signalled once an event may be waiting for Take.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Take returns the next event queued (nil when none is), or ErrBacklogOverflow once the
// subscription was given up.
func (s *Subscription) Take() (*rpc.ProcessEvent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost {
		return nil, fmt.Errorf("%w: more than %d bytes of it waited for %v", ErrBacklogOverflow, s.backlog.Bytes, s.backlog.Wait)
	}
	if len(s.queue) == 0 {
		return nil, nil
	}
	event := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	s.queued -= costOf(event)
	totalQueued.Add(-int64(costOf(event)))
	signal(s.space)
	if len(s.queue) > 0 {
		signal(s.ready)
	}
	return event, nil
}

// push queues event, waiting while the backlog is full (an event without output, and the first
// one queued, always fit); it gives the subscription up when that takes longer than the backlog's
// wait, and returns at once when the subscription is gone.
func (s *Subscription) push(event *rpc.ProcessEvent) {
	size := costOf(event)
	output := outputBytes(event) > 0
	var timeout <-chan time.Time
	for {
		select {
		case <-s.gone:
			return
		default:
		}
		s.mu.Lock()
		if s.lost {
			s.mu.Unlock()
			return
		}
		// An event without output (the end) always fits, as does a first one; the rest fit within
		// this client's backlog and everyone's.
		if !output || s.queued == 0 || (s.queued+size <= s.backlog.Bytes && totalQueued.Load()+int64(size) <= DefaultTotalBacklogBytes) {
			s.queue = append(s.queue, event)
			s.queued += size
			totalQueued.Add(int64(size))
			s.mu.Unlock()
			signal(s.ready)
			return
		}
		s.mu.Unlock()
		if timeout == nil {
			timer := time.NewTimer(s.backlog.Wait)
			defer timer.Stop()
			timeout = timer.C
		}
		select {
		case <-s.space:
		case <-s.gone:
			return
		case <-timeout:
			s.mu.Lock()
			totalQueued.Add(-int64(s.queued))
			s.lost, s.queue, s.queued = true, nil, 0
			s.mu.Unlock()
			signal(s.ready)
			return
		}
	}
}

// leave ends the deliveries to the subscription (safe to repeat); what it held is freed.
func (s *Subscription) leave() {
	s.once.Do(func() {
		close(s.gone)
		s.mu.Lock()
		totalQueued.Add(-int64(s.queued))
		s.queue, s.queued = nil, 0
		s.mu.Unlock()
	})
}

// costOf is what a queued event counts for: its output and eventCost.
func costOf(event *rpc.ProcessEvent) int {
	return outputBytes(event) + eventCost
}

// outputBytes is the size of an event's output (0 for an event without any).
func outputBytes(event *rpc.ProcessEvent) int {
	data := event.GetData()
	return len(data.GetStdout()) + len(data.GetStderr()) + len(data.GetPty())
}

// signal wakes whoever waits on a channel of capacity 1, without waiting itself.
func signal(channel chan struct{}) {
	select {
	case channel <- struct{}{}:
	default:
	}
}
