package server

// CallerInside is callerInside, for the tests of package server_test.
var CallerInside = callerInside
