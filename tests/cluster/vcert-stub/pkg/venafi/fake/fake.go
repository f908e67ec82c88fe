// Package fake is a stand-in for vcert's fake connector (imported by cert-manager's tests
// only; present so that go mod tidy resolves it): see ../../../go.mod.
package fake
