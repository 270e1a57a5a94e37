package streams

import (
	"context"
	"net/http"
	"time"
)

// DefaultSendTimeout is how long one message of a server stream may wait for its client to take it.
const DefaultSendTimeout = 15 * time.Second

type sendTimeoutKey struct{}

type sendTimeout struct {
	controller *http.ResponseController
	timeout    time.Duration
}

// WithSendTimeout lets the server streams of next give up on a client that stopped reading: a
// message sent through Send fails once the connection has not taken it for timeout. Without it a
// process's output would wait for such a client forever, and every other client with it.
func WithSendTimeout(next http.Handler, timeout time.Duration) http.Handler {
	if timeout <= 0 {
		timeout = DefaultSendTimeout
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := context.WithValue(r.Context(), sendTimeoutKey{}, &sendTimeout{controller: http.NewResponseController(w), timeout: timeout})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Send sends one message of the stream whose handler got ctx, within the timeout WithSendTimeout
// set (without one, or on a connection that cannot take a deadline, it waits as long as it takes).
func Send(ctx context.Context, send func() error) error {
	bound, ok := ctx.Value(sendTimeoutKey{}).(*sendTimeout)
	if !ok || bound.controller.SetWriteDeadline(time.Now().Add(bound.timeout)) != nil {
		return send()
	}
	// No deadline between messages: a stream may rightly stay quiet for long (a keepalive
	// interval), and its last words, written after the handler returns, must not find one expired.
	defer bound.controller.SetWriteDeadline(time.Time{})
	return send()
}
