// Package state keeps what the control plane tells the daemon through POST /init: the default user
// and working directory of requests that name none, environment variables for every process, and
// the access token that guards the API.
package state

import (
	"maps"
	"sync"
)

// Init is the body of POST /init; absent fields leave the current value.
type Init struct {
	EnvVars        map[string]string `json:"envVars,omitempty"`
	DefaultUser    *string           `json:"defaultUser,omitempty"`
	DefaultWorkdir *string           `json:"defaultWorkdir,omitempty"`
	AccessToken    *string           `json:"accessToken,omitempty"`
}

// State is safe for concurrent use.
type State struct {
	mu             sync.RWMutex
	defaultUser    string
	defaultWorkdir string
	envVars        map[string]string
	accessToken    string
}

func New() *State {
	return &State{envVars: map[string]string{}}
}

// Apply merges an /init request: environment variables are added (a later value wins), the other
// fields replace the current ones when present.
func (s *State) Apply(init Init) {
	s.mu.Lock()
	defer s.mu.Unlock()
	maps.Copy(s.envVars, init.EnvVars)
	if init.DefaultUser != nil {
		s.defaultUser = *init.DefaultUser
	}
	if init.DefaultWorkdir != nil {
		s.defaultWorkdir = *init.DefaultWorkdir
	}
	if init.AccessToken != nil {
		s.accessToken = *init.AccessToken
	}
}

// DefaultUser is the user of requests that name none; "" means the daemon's own user.
func (s *State) DefaultUser() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.defaultUser
}

// DefaultWorkdir is where relative paths and processes without a cwd start; "" means the user's home.
func (s *State) DefaultWorkdir() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.defaultWorkdir
}

// EnvVars is a copy of the variables set through /init.
func (s *State) EnvVars() map[string]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.envVars)
}

// AccessToken is "" until /init sets one; then every request but /health and /files must carry it.
func (s *State) AccessToken() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.accessToken
}
