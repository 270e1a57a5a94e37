package process

import (
	"testing"
	"time"
)

// The request that starts a process may lose the processor right after the fork, for longer than
// a short command lives: the process must still be registered before its end unregisters it, or
// List would show it forever.
func TestAProcessIsRegisteredBeforeItsEndCanUnregisterIt(t *testing.T) {
	manager := NewManager()
	process := New(Spec{Path: "/bin/true", Args: []string{"true"}})
	slowRegistration := func(started *Process) {
		time.Sleep(300 * time.Millisecond) // /bin/true has long ended
		manager.add(started)
	}
	if err := process.Start(slowRegistration, manager.remove); err != nil {
		t.Fatal(err)
	}
	<-process.Done()
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if len(manager.List()) == 0 {
			return
		}
	}
	t.Fatalf("%v ended and is still listed", process)
}
