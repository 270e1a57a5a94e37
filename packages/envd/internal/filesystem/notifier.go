package filesystem

import (
	"path/filepath"
	"sync"

	"github.com/fsnotify/fsnotify"
)

// watchQueueLength bounds the inotify events a watch has not handled yet; past it the newest are
// dropped for that watch alone (as the kernel drops a full inotify queue's), so that a watch whose
// client does not keep up never holds up the others.
const watchQueueLength = 4096

// notifier is the daemon's one inotify instance, shared by every watch (WatchDir, CreateWatcher).
// The kernel grants each user a few instances (fs.inotify.max_user_instances, 128 by default),
// counted across the host for a runc sandbox's root, which is the host's: an instance per watch
// would let one sandbox's watches refuse every other sandbox's, and the host's. Each directory is
// added once for all the watches that ask for it (inotify_add_watch runs again for each, as the
// watch's user: the kernel checks that user's access every time), and removed when the last of
// them stops; each event goes to the watches of its directory (and of itself, for a directory's
// own removal).
type notifier struct {
	mu      sync.Mutex
	watcher *fsnotify.Watcher
	// dirs are the watched directories and the watches that asked for each.
	dirs map[string]map[*watch]struct{}
}

// sharedNotifier is the daemon's: made with the first watch, kept for the process's life.
var sharedNotifier = &notifier{}

// startLocked makes the inotify instance once, and runs its dispatch. n.mu is held.
func (n *notifier) startLocked() error {
	if n.watcher != nil {
		return nil
	}
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	n.watcher = watcher
	n.dirs = map[string]map[*watch]struct{}{}
	go n.dispatch(watcher)
	return nil
}

// add watches dir for w. Called as w's user (the kernel checks its access to dir).
func (n *notifier) add(dir string, w *watch) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.startLocked(); err != nil {
		return err
	}
	if err := n.watcher.Add(dir); err != nil {
		return err
	}
	watches := n.dirs[dir]
	if watches == nil {
		watches = map[*watch]struct{}{}
		n.dirs[dir] = watches
	}
	watches[w] = struct{}{}
	return nil
}

// remove forgets every directory w asked for, and stops watching those no other watch asks for.
func (n *notifier) remove(w *watch) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for dir, watches := range n.dirs {
		if _, ok := watches[w]; !ok {
			continue
		}
		delete(watches, w)
		if len(watches) == 0 {
			delete(n.dirs, dir)
			_ = n.watcher.Remove(dir) // gone already (removed, or deleted with its directory): nothing to do
		}
	}
}

func (n *notifier) dispatch(watcher *fsnotify.Watcher) {
	for {
		select {
		case event, ok := <-watcher.Events:
			if !ok {
				return
			}
			n.deliver(event)
		case _, ok := <-watcher.Errors:
			if !ok {
				return
			}
		}
	}
}

// deliver hands the event to the watches of its directory, and of the entry itself when it is a
// watched directory (its own removal or rename).
func (n *notifier) deliver(event fsnotify.Event) {
	n.mu.Lock()
	targets := make([]*watch, 0, 2)
	for w := range n.dirs[filepath.Dir(event.Name)] {
		targets = append(targets, w)
	}
	for w := range n.dirs[event.Name] {
		if _, twice := n.dirs[filepath.Dir(event.Name)][w]; !twice {
			targets = append(targets, w)
		}
	}
	n.mu.Unlock()
	for _, w := range targets {
		select {
		case w.queue <- event:
		default:
		}
	}
}
