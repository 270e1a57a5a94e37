package streams

import (
	"net/http"
	"testing"
	"time"
)

func TestKeepaliveIntervalReadsTheHeaderWithinItsBounds(t *testing.T) {
	cases := map[string]time.Duration{
		"":                     DefaultKeepalive,
		"50":                   50 * time.Second,
		"0":                    DefaultKeepalive,
		"-5":                   DefaultKeepalive,
		"soon":                 DefaultKeepalive,
		"3600":                 time.Hour,
		"3601":                 MaxKeepalive,
		"10000000000":          MaxKeepalive, // overflows a Duration once multiplied
		"99999999999999999999": MaxKeepalive, // not even an int64
	}
	for value, want := range cases {
		if got := KeepaliveInterval(http.Header{KeepaliveHeader: {value}}); got != want {
			t.Errorf("%s: %q gives %v, want %v", KeepaliveHeader, value, got, want)
		}
	}
}
