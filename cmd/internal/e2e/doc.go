// Package e2e tests the two quictun commands as a user runs them: real
// binaries, flags, config files, signals, the REST API.
package e2e
