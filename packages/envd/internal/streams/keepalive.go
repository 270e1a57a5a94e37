// Package streams holds what every server stream of the daemon shares: keepalive pacing, and a
// bound on how long one message may wait for a client that stopped reading.
package streams

import (
	"net/http"
	"strconv"
	"time"
)

// KeepaliveHeader is the interval, in seconds, at which E2B's SDKs want keepalive events on a
// stream (they send 50 on Start and Connect).
const KeepaliveHeader = "Keepalive-Ping-Interval"

// DefaultKeepalive is the interval when the header is absent or not a positive number.
const DefaultKeepalive = 90 * time.Second

// MaxKeepalive bounds the interval a header may ask for: a larger one, however large, gets this.
const MaxKeepalive = time.Hour

// KeepaliveInterval reads the header.
func KeepaliveInterval(header http.Header) time.Duration {
	seconds, err := strconv.ParseInt(header.Get(KeepaliveHeader), 10, 64)
	switch {
	case seconds > int64(MaxKeepalive/time.Second): // in seconds: as a Duration it could overflow
		return MaxKeepalive // past int64 too: ParseInt gives its largest value with ErrRange
	case err != nil || seconds <= 0:
		return DefaultKeepalive
	}
	return time.Duration(seconds) * time.Second
}
