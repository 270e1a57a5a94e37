// Package auth decides who a request acts as and whether it may act at all: the Linux user comes
// from `Authorization: Basic base64("<user>:")` (E2B's convention; no password), else the default
// user; the access token set through /init guards everything but /health and /files.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"fast-sandbox.io/envd/internal/state"
	"fast-sandbox.io/envd/internal/users"
)

// AccessTokenHeader carries the sandbox's access token.
const AccessTokenHeader = "X-Access-Token"

var (
	// ErrBadAuthorization is a malformed Authorization header.
	ErrBadAuthorization = errors.New(`the Authorization header must be "Basic " + base64("<user>:")`)
	// ErrCannotSwitchUser is a request for another user than the daemon's own while it is not root.
	ErrCannotSwitchUser = errors.New("the daemon does not run as root, so it acts only as its own user")
	// ErrBadSignature is a /files signature that does not match the access token.
	ErrBadSignature = errors.New("the signature is missing, wrong or expired; send X-Access-Token or a signature made with the sandbox's access token")
)

// AutoDefaultUser, as the fallback user, is E2B's account `user` when the image has one (E2B's
// templates all do, and E2B's SDKs expect it: relative paths in /home/user), else the daemon's own.
const AutoDefaultUser = "auto"

// e2bUser is the account E2B's templates run commands and files as.
const e2bUser = "user"

// Authenticator resolves users and checks tokens.
type Authenticator struct {
	Users users.Directory
	State *state.State
	// Fallback is the user of requests that name none while /init set no default: a name,
	// AutoDefaultUser, or "" for the daemon's own.
	Fallback string
	// FallbackGroup, when set, is the group (a name or a number) of the fallback user: the GROUP of
	// an image's `USER name:group`, which the helper passes on. As runc and Docker do for such a
	// USER, it is the user's only group, in place of /etc/passwd's and /etc/group's. A request that
	// names its user, or /init's default user, gets the user's own groups.
	FallbackGroup string
	// UID and GID of the daemon itself.
	UID, GID uint32
	// Now is the clock of signature expiry; nil is time.Now.
	Now func() time.Time
}

// New is an Authenticator for this process.
func New(directory users.Directory, st *state.State) *Authenticator {
	return &Authenticator{Users: directory, State: st, UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
}

// UserFromHeader is the user named by Basic authorization, else the default user.
func (a *Authenticator) UserFromHeader(header http.Header) (*users.User, error) {
	name, err := BasicUser(header.Get("Authorization"))
	if err != nil {
		return nil, err
	}
	return a.User(name)
}

// BasicUser extracts the user name of a Basic Authorization header ("" when there is none).
func BasicUser(authorization string) (string, error) {
	if authorization == "" {
		return "", nil
	}
	scheme, encoded, found := strings.Cut(authorization, " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", ErrBadAuthorization
	}
	decoded, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
	if err != nil {
		return "", ErrBadAuthorization
	}
	name, _, _ := strings.Cut(string(decoded), ":")
	return name, nil
}

// User resolves a user name ("" is the default user: /init's, else the fallback, else the
// daemon's own) and checks that the daemon can act as it.
func (a *Authenticator) User(name string) (*users.User, error) {
	group := ""
	if name == "" {
		name = a.State.DefaultUser()
	}
	if name == "" {
		name = a.fallback()
		group = a.FallbackGroup
	}
	var user *users.User
	var err error
	if name == "" {
		user, err = a.Users.LookupID(a.UID, a.GID)
	} else {
		user, err = a.Users.Lookup(name)
		// A number no account is named after is a uid (an image's USER may be `1000:staff`).
		if uid, parsed := strconv.ParseUint(name, 10, 32); errors.Is(err, users.ErrUnknownUser) && parsed == nil {
			user, err = a.Users.LookupID(uint32(uid), 0)
		}
	}
	if err != nil {
		return nil, err
	}
	if group != "" {
		gid, err := a.Users.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("the default user's group: %w", err)
		}
		user.GID, user.Groups = gid, []uint32{gid}
	}
	if a.UID != 0 && user.UID != a.UID {
		return nil, fmt.Errorf("%w (uid %d), not as %s (uid %d)", ErrCannotSwitchUser, a.UID, user.Name, user.UID)
	}
	return user, nil
}

// fallback is the name of the user of requests that name none and have no /init default ("" for the daemon's own).
func (a *Authenticator) fallback() string {
	if a.Fallback != AutoDefaultUser {
		return a.Fallback
	}
	// Only an account the daemon can act as: any, as root; else none but its own.
	if user, err := a.Users.Lookup(e2bUser); err == nil && (a.UID == 0 || user.UID == a.UID) {
		return e2bUser
	}
	return ""
}

// TokenValid is true when no access token is set or the request carries it.
func (a *Authenticator) TokenValid(header http.Header) bool {
	token := a.State.AccessToken()
	if token == "" {
		return true
	}
	given := header.Get(AccessTokenHeader)
	return subtle.ConstantTimeCompare([]byte(given), []byte(token)) == 1
}

// FilesAllowed authorizes a /files request: no token set, the token in the header, or a signature
// `v1_` + base64(sha256("path:operation:username:token[:expiration]")) without padding, as E2B's
// SDKs compute for downloadUrl/uploadUrl (operation "read" or "write").
func (a *Authenticator) FilesAllowed(header http.Header, path, operation, username, signature, expiration string) error {
	token := a.State.AccessToken()
	if token == "" || a.TokenValid(header) {
		return nil
	}
	if signature == "" {
		return ErrBadSignature
	}
	raw := path + ":" + operation + ":" + username + ":" + token
	if expiration != "" {
		expiry, err := strconv.ParseInt(expiration, 10, 64)
		if err != nil {
			return fmt.Errorf("%w (signature_expiration %q is not a Unix time in seconds)", ErrBadSignature, expiration)
		}
		now := time.Now
		if a.Now != nil {
			now = a.Now
		}
		if now().Unix() > expiry {
			return ErrBadSignature
		}
		raw += ":" + expiration
	}
	digest := sha256.Sum256([]byte(raw))
	expected := "v1_" + base64.RawStdEncoding.EncodeToString(digest[:])
	if subtle.ConstantTimeCompare([]byte(signature), []byte(expected)) != 1 {
		return ErrBadSignature
	}
	return nil
}

// Caller is the user of an RPC, with errors as Connect codes: a malformed header or an unknown
// user is unauthenticated, a user the daemon cannot act as is permission_denied.
func (a *Authenticator) Caller(header http.Header) (*users.User, error) {
	user, err := a.UserFromHeader(header)
	switch {
	case err == nil:
		return user, nil
	case errors.Is(err, ErrBadAuthorization), errors.Is(err, users.ErrUnknownUser), errors.Is(err, users.ErrUnknownGroup):
		return nil, connect.NewError(connect.CodeUnauthenticated, err)
	case errors.Is(err, ErrCannotSwitchUser):
		return nil, connect.NewError(connect.CodePermissionDenied, err)
	default:
		return nil, connect.NewError(connect.CodeInternal, err)
	}
}

// Credential is what a process started for user runs with: nil (the daemon's own) unless the
// daemon is root and can switch.
func (a *Authenticator) Credential(user *users.User) *syscall.Credential {
	if a.UID != 0 {
		return nil
	}
	return &syscall.Credential{Uid: user.UID, Gid: user.GID, Groups: user.Groups}
}
