package server_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"fast-sandbox.io/envd/internal/server"
)

func TestQuiesceClosesTheListenerAndResetsEveryConnection(t *testing.T) {
	daemon := server.New(server.Options{})
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := listener.Addr().String()
	quiesce := make(chan struct{})
	result := make(chan bool, 1)
	go func() {
		quiesced, err := daemon.ServeUntilQuiesced(context.Background(), listener, quiesce)
		if err != nil {
			t.Error(err)
		}
		result <- quiesced
	}()
	// An idle keep-alive connection, as the sandbox proxy keeps one: quiescing must not wait for it.
	idle, err := net.Dial("tcp", address)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := idle.Write([]byte("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	buffer := make([]byte, 512)
	if _, err := idle.Read(buffer); err != nil {
		t.Fatal(err)
	}
	close(quiesce)
	select {
	case quiesced := <-result:
		if !quiesced {
			t.Fatal("ServeUntilQuiesced returned false after a quiesce")
		}
	case <-time.After(time.Second):
		t.Fatal("quiescing waited for an idle connection")
	}
	_ = idle.SetReadDeadline(time.Now().Add(time.Second))
	// Reset, not closed: nothing of it lingers in TIME-WAIT on the daemon's side.
	if _, err := idle.Read(buffer); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reading the idle connection after the quiesce: %v, want a reset", err)
	}
	if _, err := http.Get("http://" + address + "/health"); err == nil {
		t.Fatal("the listener still accepts after the quiesce")
	}
}

func TestServeUntilQuiescedShutsDownGracefullyWhenItsContextEnds(t *testing.T) {
	daemon := server.New(server.Options{})
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	quiesced, err := daemon.ServeUntilQuiesced(ctx, listener, make(chan struct{}))
	if err != nil || quiesced {
		t.Fatalf("got quiesced=%v err=%v, want false and nil", quiesced, err)
	}
}
