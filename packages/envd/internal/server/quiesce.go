package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// ServeUntilQuiesced serves on listener like Serve, until ctx ends (a graceful shutdown, then it
// returns false) or quiesce receives: then it closes the listener and every connection at once and
// returns true, keeping everything else (processes, watchers, /init's state) for the next serve.
// A quiesced daemon holds no TCP socket, which a gVisor checkpoint needs (see internal/quiesce): its
// connections are reset (SO_LINGER 0), not closed, so that none lingers in TIME-WAIT either.
func (d *Daemon) ServeUntilQuiesced(ctx context.Context, listener net.Listener, quiesce <-chan struct{}) (bool, error) {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	server := &http.Server{
		Handler:           d,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       d.connContext,
		ConnState: func(conn net.Conn, state http.ConnState) {
			mu.Lock()
			defer mu.Unlock()
			if state == http.StateClosed || state == http.StateHijacked {
				delete(open, conn)
			} else {
				open[conn] = struct{}{}
			}
		},
	}
	stopped := make(chan bool, 1)
	go func() {
		select {
		case <-ctx.Done():
			shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = server.Shutdown(shutdown)
			stopped <- false
		case <-quiesce:
			mu.Lock()
			for conn := range open {
				if tcp, ok := conn.(*net.TCPConn); ok {
					_ = tcp.SetLinger(0)
				}
			}
			mu.Unlock()
			_ = server.Close()
			stopped <- true
		}
	}()
	err := server.Serve(listener)
	if errors.Is(err, http.ErrServerClosed) {
		return <-stopped, nil
	}
	return false, err
}
