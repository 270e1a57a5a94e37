package process

import (
	"errors"
	"testing"
	"time"

	rpc "fast-sandbox.io/envd/gen/process"
)

func stdoutEvent(size int) *rpc.ProcessEvent {
	return &rpc.ProcessEvent{Event: &rpc.ProcessEvent_Data{Data: &rpc.ProcessEvent_DataEvent{Output: &rpc.ProcessEvent_DataEvent_Stdout{Stdout: make([]byte, size)}}}}
}

// A process that writes a byte at a time queues an event per byte or two: what such events hold
// besides their output counts too, so a client that does not read bounds the memory, not the
// output alone (a 16 MiB backlog of one-byte events held gigabytes).
func TestTinyEventsCountWhatTheyHoldNotTheirOutputAlone(t *testing.T) {
	// 100 one-byte events' worth (with eventCost 256): 25,700 bytes of output if only output counted.
	subscription := newSubscription(Backlog{Bytes: 25_700, Wait: 50 * time.Millisecond})
	defer subscription.leave()
	done := make(chan int)
	go func() {
		pushed := 0
		for pushed < 1000 {
			subscription.push(stdoutEvent(1))
			subscription.mu.Lock()
			lost := subscription.lost
			subscription.mu.Unlock()
			if lost {
				break
			}
			pushed++
		}
		done <- pushed
	}()
	select {
	case pushed := <-done:
		if pushed > 101 {
			t.Fatalf("%d one-byte events were queued for a client that reads nothing, within a backlog of 100 events' worth", pushed)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the pushes neither stopped nor gave the client up")
	}
	if _, err := subscription.Take(); !errors.Is(err, ErrBacklogOverflow) {
		t.Fatalf("Take after the backlog overflowed: %v, want ErrBacklogOverflow", err)
	}
}

// All clients together hold at most DefaultTotalBacklogBytes: past it, a client's push waits (and
// gives the client up) as past its own backlog, and what a client that leaves held is freed.
func TestAllClientsTogetherHoldABoundedBacklog(t *testing.T) {
	before := totalQueued.Load()
	const chunk = 1 << 20
	var subscriptions []*Subscription
	defer func() {
		for _, subscription := range subscriptions {
			subscription.leave()
		}
	}()
	lost := 0
	for i := 0; i < 8; i++ {
		subscription := newSubscription(Backlog{Bytes: 16 << 20, Wait: 20 * time.Millisecond})
		subscriptions = append(subscriptions, subscription)
		for j := 0; j < 15; j++ {
			subscription.push(stdoutEvent(chunk))
		}
		subscription.mu.Lock()
		if subscription.lost {
			lost++
		}
		subscription.mu.Unlock()
	}
	if held := totalQueued.Load() - before; held > DefaultTotalBacklogBytes+chunk+eventCost {
		t.Fatalf("the clients hold %d bytes together, over the bound of %d", held, DefaultTotalBacklogBytes)
	}
	if lost == 0 {
		t.Fatal("8 clients of 15 MiB each fit in a 64 MiB bound: none was given up")
	}
	for _, subscription := range subscriptions {
		subscription.leave()
	}
	if held := totalQueued.Load() - before; held != 0 {
		t.Fatalf("%d bytes are still counted after every client left", held)
	}
}
