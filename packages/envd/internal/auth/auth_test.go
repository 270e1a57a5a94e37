package auth

import (
	"encoding/base64"
	"errors"
	"net/http"
	"testing"
	"time"

	"fast-sandbox.io/envd/internal/state"
)

func TestBasicUserNamesTheUserWithoutPassword(t *testing.T) {
	encode := func(text string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(text)) }
	cases := map[string]string{"": "", encode("user:"): "user", encode("root"): "root", "basic " + base64.StdEncoding.EncodeToString([]byte("a:b")): "a"}
	for header, want := range cases {
		if got, err := BasicUser(header); err != nil || got != want {
			t.Errorf("BasicUser(%q) = %q, %v; want %q", header, got, err, want)
		}
	}
	for _, header := range []string{"Bearer x", "Basic !!!", "Basic"} {
		if _, err := BasicUser(header); !errors.Is(err, ErrBadAuthorization) {
			t.Errorf("BasicUser(%q) = %v, want ErrBadAuthorization", header, err)
		}
	}
}

func TestFilesSignaturesExpireAndBindTheirFields(t *testing.T) {
	st := state.New()
	token := "tok"
	st.Apply(state.Init{AccessToken: &token})
	a := &Authenticator{State: st, Now: func() time.Time { return time.Unix(1000, 0) }}
	// From E2B's SDK: v1_ + base64(sha256("path:operation:user:token:expiration")) without padding.
	valid := "v1_eoa73S7/vFIYiHt7YMU3Gk5+2xbZU2xX8ovwq5Cxon0" // computed with node:crypto
	if err := a.FilesAllowed(http.Header{}, "/f", "read", "user", valid, "2000"); err != nil {
		t.Fatalf("valid signature refused: %v", err)
	}
	refused := [][4]string{
		{"/other", "read", "user", "2000"},
		{"/f", "write", "user", "2000"},
		{"/f", "read", "root", "2000"},
		{"/f", "read", "user", "999"},
		{"/f", "read", "user", ""},
	}
	for _, fields := range refused {
		if err := a.FilesAllowed(http.Header{}, fields[0], fields[1], fields[2], valid, fields[3]); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%v accepted: %v", fields, err)
		}
	}
	if err := a.FilesAllowed(http.Header{AccessTokenHeader: {"tok"}}, "/f", "read", "", "", ""); err != nil {
		t.Errorf("the token header: %v", err)
	}
}
