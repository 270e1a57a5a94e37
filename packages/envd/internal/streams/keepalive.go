// Package streams holds what every server stream of the daemon shares: keepalive pacing.
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

// KeepaliveInterval reads the header.
func KeepaliveInterval(header http.Header) time.Duration {
	seconds, err := strconv.Atoi(header.Get(KeepaliveHeader))
	if err != nil || seconds <= 0 {
		return DefaultKeepalive
	}
	return time.Duration(seconds) * time.Second
}
