package process

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	rpc "fast-sandbox.io/envd/gen/process"
)

// ErrNotFound is a selector that matches no running process.
var ErrNotFound = errors.New("no such process")

// Manager keeps the running processes until their end event was sent.
type Manager struct {
	mu        sync.Mutex
	processes map[uint32]*Process
}

func NewManager() *Manager {
	return &Manager{processes: map[uint32]*Process{}}
}

func (m *Manager) add(process *Process) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.processes[process.PID()] = process
}

func (m *Manager) remove(process *Process) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.processes[process.PID()] == process {
		delete(m.processes, process.PID())
	}
}

// Find resolves a selector: a pid, or a tag (the oldest process with it).
func (m *Manager) Find(selector *rpc.ProcessSelector) (*Process, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch chosen := selector.GetSelector().(type) {
	case *rpc.ProcessSelector_Pid:
		if process, ok := m.processes[chosen.Pid]; ok {
			return process, nil
		}
		return nil, fmt.Errorf("%w with pid %d (it never ran or has ended)", ErrNotFound, chosen.Pid)
	case *rpc.ProcessSelector_Tag:
		var found *Process
		for _, process := range m.processes {
			if process.Tag() == chosen.Tag && (found == nil || process.PID() < found.PID()) {
				found = process
			}
		}
		if found == nil {
			return nil, fmt.Errorf("%w with tag %q (it never ran or has ended)", ErrNotFound, chosen.Tag)
		}
		return found, nil
	default:
		return nil, errMissingSelector
	}
}

var errMissingSelector = errors.New("process: give the process as {pid} or {tag}")

// List is every running process, by pid.
func (m *Manager) List() []*Process {
	m.mu.Lock()
	defer m.mu.Unlock()
	list := make([]*Process, 0, len(m.processes))
	for _, process := range m.processes {
		list = append(list, process)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].PID() < list[j].PID() })
	return list
}
