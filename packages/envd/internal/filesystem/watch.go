package filesystem

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/fsnotify/fsnotify"

	rpc "fast-sandbox.io/envd/gen/filesystem"
	"fast-sandbox.io/envd/internal/paths"
	"fast-sandbox.io/envd/internal/streams"
	"fast-sandbox.io/envd/internal/users"
)

// watch follows one directory (and, recursive, every directory below it, new ones included) and
// hands each change to sink as events named relative to the directory.
type watch struct {
	// root is the directory as asked (entries are described below it); resolved is where it
	// really is, what is watched and what the guard checks, however root reached it
	// (/proc/self/root, a symlink to an ancestor of the daemon's own directory).
	root         string
	resolved     string
	recursive    bool
	includeEntry bool
	guard        paths.Guard
	directory    users.Directory
	// user is who the watch is for: directories are looked at and watched as the user (as), so
	// that a watch reaches no further than the user's own `ls` would.
	user *users.User
	// notifier is the daemon's inotify instance; queue what it delivers to this watch.
	notifier *notifier
	queue    chan fsnotify.Event
	sink     func(*rpc.FilesystemEvent)
	stopped  chan struct{}
	stopOnce sync.Once
}

var operations = []struct {
	op   fsnotify.Op
	kind rpc.EventType
}{
	{fsnotify.Create, rpc.EventType_EVENT_TYPE_CREATE},
	{fsnotify.Write, rpc.EventType_EVENT_TYPE_WRITE},
	{fsnotify.Remove, rpc.EventType_EVENT_TYPE_REMOVE},
	{fsnotify.Rename, rpc.EventType_EVENT_TYPE_RENAME},
	{fsnotify.Chmod, rpc.EventType_EVENT_TYPE_CHMOD},
}

func startWatch(root string, user *users.User, recursive, includeEntry bool, guard paths.Guard, directory users.Directory, sink func(*rpc.FilesystemEvent)) (*watch, error) {
	w := &watch{
		root: root, recursive: recursive, includeEntry: includeEntry, guard: guard, directory: directory, user: user,
		notifier: sharedNotifier, queue: make(chan fsnotify.Event, watchQueueLength), sink: sink, stopped: make(chan struct{}),
	}
	if err := as(user, func() error {
		info, err := os.Stat(root)
		if err != nil {
			return rpcError(err, "watch %s", root)
		}
		if !info.IsDir() {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("watch %s: it is not a directory", root))
		}
		w.resolved = paths.Real(root)
		if err := w.add(w.resolved, nil); err != nil {
			return rpcError(err, "watch %s", root)
		}
		return nil
	}); err != nil {
		w.notifier.remove(w)
		return nil, err
	}
	go w.run()
	return w, nil
}

// add watches dir, and with recursion the directories below it (not following symlinks). found,
// when not nil, is called for every entry below dir (dir itself left out), each directory's only
// once it is watched: what is created in it from then on has an event of its own.
func (w *watch) add(dir string, found func(path string)) error {
	if !w.recursive {
		return w.notifier.add(dir, w)
	}
	return filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			if path == dir {
				return err
			}
			return nil // gone or unreadable meanwhile
		}
		if w.guard.Hidden(path) {
			if entry.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if entry.IsDir() {
			if err := w.notifier.add(path, w); err != nil && path == dir {
				return err
			}
		}
		if found != nil && path != dir {
			found(path)
		}
		return nil
	})
}

func (w *watch) run() {
	for {
		select {
		case <-w.stopped:
			return
		case event := <-w.queue:
			w.handle(event)
		}
	}
}

func (w *watch) handle(event fsnotify.Event) {
	if w.guard.Hidden(event.Name) {
		return
	}
	name := w.relative(event.Name)
	var entry *rpc.EntryInfo
	// found are the entries already in a directory just created, by the time it is watched.
	var found []*rpc.FilesystemEvent
	if (w.recursive && event.Has(fsnotify.Create)) || w.includeEntry {
		_ = as(w.user, func() error {
			if w.recursive && event.Has(fsnotify.Create) {
				if info, err := os.Lstat(event.Name); err == nil && info.IsDir() {
					// What was created in it before its watch (a file written with its parent
					// directories, `mkdir -p a/b && touch a/b/c`) has no event of its own: each
					// entry gets a create event here. One created after the watch but before the
					// walk reached it gets two, which clients take as they take inotify's (a
					// write sends several events as it is): a create is never missed.
					_ = w.add(event.Name, func(path string) {
						found = append(found, w.created(path))
					})
				}
			}
			if w.includeEntry {
				entry, _ = Describe(filepath.Join(w.root, name), w.directory.Names())
			}
			return nil
		})
	}
	for _, operation := range operations {
		if event.Has(operation.op) {
			w.sink(&rpc.FilesystemEvent{Name: name, Type: operation.kind, Entry: entry})
		}
	}
	for _, event := range found {
		w.sink(event)
	}
}

// relative names path (below the resolved directory) as events do: relative to the directory.
func (w *watch) relative(path string) string {
	name, err := filepath.Rel(w.resolved, path)
	if err != nil {
		return path
	}
	return name
}

// created is the create event of an entry found below a new directory (as the user: it is
// described then, when the watch includes entries).
func (w *watch) created(path string) *rpc.FilesystemEvent {
	name := w.relative(path)
	var entry *rpc.EntryInfo
	if w.includeEntry {
		entry, _ = Describe(filepath.Join(w.root, name), w.directory.Names())
	}
	return &rpc.FilesystemEvent{Name: name, Type: rpc.EventType_EVENT_TYPE_CREATE, Entry: entry}
}

func (w *watch) stop() {
	w.stopOnce.Do(func() {
		close(w.stopped)
		w.notifier.remove(w)
	})
}

func (s *Service) WatchDir(ctx context.Context, request *connect.Request[rpc.WatchDirRequest], stream *connect.ServerStream[rpc.WatchDirResponse]) error {
	root, user, err := s.resolve(request.Header(), "path", request.Msg.GetPath())
	if err != nil {
		return err
	}
	interval := streams.KeepaliveInterval(request.Header())
	events := make(chan *rpc.FilesystemEvent, 256)
	done := make(chan struct{})
	defer close(done)
	w, err := startWatch(root, user, request.Msg.GetRecursive(), request.Msg.GetIncludeEntry(), s.Guard, s.Auth.Users, func(event *rpc.FilesystemEvent) {
		select {
		case events <- event:
		case <-done:
		}
	})
	if err != nil {
		return err
	}
	defer w.stop()
	// A client that does not take an event within the send timeout ends its stream.
	send := func(response *rpc.WatchDirResponse) error {
		return streams.Send(ctx, func() error { return stream.Send(response) })
	}
	if err := send(&rpc.WatchDirResponse{Event: &rpc.WatchDirResponse_Start{Start: &rpc.WatchDirResponse_StartEvent{}}}); err != nil {
		return err
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err() // connect turns it into canceled or deadline_exceeded
		case event := <-events:
			if err := send(&rpc.WatchDirResponse{Event: &rpc.WatchDirResponse_Filesystem{Filesystem: event}}); err != nil {
				return err
			}
			ticker.Reset(interval)
		case <-ticker.C:
			if err := send(&rpc.WatchDirResponse{Event: &rpc.WatchDirResponse_Keepalive{Keepalive: &rpc.WatchDirResponse_KeepAlive{}}}); err != nil {
				return err
			}
		}
	}
}

// maxPendingEvents bounds what a polled watcher keeps between two GetWatcherEvents; past it the
// oldest events are dropped.
const maxPendingEvents = 10_000

// DefaultWatcherIdleTimeout is how long a polled watcher lives without a GetWatcherEvents: each
// holds inotify watches (of the daemon's one instance, notifier.go) and its pending events, and a
// client that goes away without RemoveWatcher (E2B's sync Python SDK's watch_dir, a process
// killed) would otherwise hold them until the sandbox ends.
const DefaultWatcherIdleTimeout = 10 * time.Minute

// DefaultMaxPolledWatchers bounds the polled watchers a daemon keeps at once.
const DefaultMaxPolledWatchers = 256

// Watchers are the polled watchers of CreateWatcher, by id. One not polled for IdleTimeout is
// removed (as RemoveWatcher would); past Max, CreateWatcher is refused.
type Watchers struct {
	idleTimeout time.Duration
	max         int
	now         func() time.Time
	mu          sync.Mutex
	watchers    map[string]*polledWatch
	// sweeping is set while the goroutine that removes idle watchers runs (while there are any).
	sweeping bool
}

type polledWatch struct {
	watch *watch
	// polled is when it was created or last polled (guarded by Watchers.mu).
	polled  time.Time
	mu      sync.Mutex
	pending []*rpc.FilesystemEvent
}

// NewWatchers keeps polled watchers for idleTimeout without a poll, at most limit at once, by
// the clock now; zero values take the defaults (DefaultWatcherIdleTimeout, DefaultMaxPolledWatchers,
// time.Now).
func NewWatchers(idleTimeout time.Duration, limit int, now func() time.Time) *Watchers {
	if idleTimeout <= 0 {
		idleTimeout = DefaultWatcherIdleTimeout
	}
	if limit <= 0 {
		limit = DefaultMaxPolledWatchers
	}
	if now == nil {
		now = time.Now
	}
	return &Watchers{idleTimeout: idleTimeout, max: limit, now: now, watchers: map[string]*polledWatch{}}
}

// expireLocked removes the watchers not polled for idleTimeout and returns them, to be stopped
// outside the lock. w.mu is held.
func (w *Watchers) expireLocked() []*polledWatch {
	var expired []*polledWatch
	now := w.now()
	for id, polled := range w.watchers {
		if now.Sub(polled.polled) >= w.idleTimeout {
			delete(w.watchers, id)
			expired = append(expired, polled)
		}
	}
	return expired
}

func stopAll(expired []*polledWatch) {
	for _, polled := range expired {
		polled.watch.stop()
	}
}

// fullLocked expires idle watchers and refuses another one when max are left. w.mu is held.
func (w *Watchers) fullLocked() ([]*polledWatch, error) {
	expired := w.expireLocked()
	if len(w.watchers) < w.max {
		return expired, nil
	}
	return expired, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("this sandbox already has %d polled watchers, the most it keeps: remove one with RemoveWatcher first (one not polled with GetWatcherEvents for %v is removed on its own), or watch with WatchDir", len(w.watchers), w.idleTimeout))
}

// sweep removes idle watchers while there are any, so that one nobody calls about again is
// stopped too. Requests expire them as well, by the same clock: this only bounds how long an
// abandoned one outlives its timeout.
func (w *Watchers) sweep() {
	interval := min(max(w.idleTimeout/4, time.Second), time.Minute)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for range ticker.C {
		w.mu.Lock()
		expired := w.expireLocked()
		empty := len(w.watchers) == 0
		if empty {
			w.sweeping = false
		}
		w.mu.Unlock()
		stopAll(expired)
		if empty {
			return
		}
	}
}

func (s *Service) CreateWatcher(_ context.Context, request *connect.Request[rpc.CreateWatcherRequest]) (*connect.Response[rpc.CreateWatcherResponse], error) {
	root, user, err := s.resolve(request.Header(), "path", request.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	watchers := s.Watchers
	// Refused before its directories are watched, and again once they are (another request may have
	// taken the last place meanwhile).
	watchers.mu.Lock()
	expired, err := watchers.fullLocked()
	watchers.mu.Unlock()
	stopAll(expired)
	if err != nil {
		return nil, err
	}
	polled := &polledWatch{}
	w, err := startWatch(root, user, request.Msg.GetRecursive(), request.Msg.GetIncludeEntry(), s.Guard, s.Auth.Users, func(event *rpc.FilesystemEvent) {
		polled.mu.Lock()
		defer polled.mu.Unlock()
		if len(polled.pending) >= maxPendingEvents {
			polled.pending = polled.pending[1:]
		}
		polled.pending = append(polled.pending, event)
	})
	if err != nil {
		return nil, err
	}
	polled.watch = w
	random := make([]byte, 16)
	_, _ = rand.Read(random)
	id := hex.EncodeToString(random)
	watchers.mu.Lock()
	expired, err = watchers.fullLocked()
	if err == nil {
		polled.polled = watchers.now()
		watchers.watchers[id] = polled
		if !watchers.sweeping {
			watchers.sweeping = true
			go watchers.sweep()
		}
	}
	watchers.mu.Unlock()
	stopAll(expired)
	if err != nil {
		w.stop()
		return nil, err
	}
	return connect.NewResponse(&rpc.CreateWatcherResponse{WatcherId: id}), nil
}

// polled finds a watcher, expiring idle ones first, and counts the call as a poll of it.
func (s *Service) polled(id string) (*polledWatch, error) {
	if id == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("watcherId is required: the id CreateWatcher returned"))
	}
	watchers := s.Watchers
	watchers.mu.Lock()
	expired := watchers.expireLocked()
	polled, ok := watchers.watchers[id]
	if ok {
		polled.polled = watchers.now()
	}
	watchers.mu.Unlock()
	stopAll(expired)
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no watcher %q (never created, removed, or not polled with GetWatcherEvents for %v and so removed)", id, watchers.idleTimeout))
	}
	return polled, nil
}

func (s *Service) GetWatcherEvents(_ context.Context, request *connect.Request[rpc.GetWatcherEventsRequest]) (*connect.Response[rpc.GetWatcherEventsResponse], error) {
	polled, err := s.polled(request.Msg.GetWatcherId())
	if err != nil {
		return nil, err
	}
	polled.mu.Lock()
	events := polled.pending
	polled.pending = nil
	polled.mu.Unlock()
	return connect.NewResponse(&rpc.GetWatcherEventsResponse{Events: events}), nil
}

func (s *Service) RemoveWatcher(_ context.Context, request *connect.Request[rpc.RemoveWatcherRequest]) (*connect.Response[rpc.RemoveWatcherResponse], error) {
	polled, err := s.polled(request.Msg.GetWatcherId())
	if err != nil {
		return nil, err
	}
	s.Watchers.mu.Lock()
	delete(s.Watchers.watchers, request.Msg.GetWatcherId())
	s.Watchers.mu.Unlock()
	polled.watch.stop()
	return connect.NewResponse(&rpc.RemoveWatcherResponse{}), nil
}
