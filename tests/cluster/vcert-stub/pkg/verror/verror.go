// Package verror is a stand-in for vcert's verror package: see ../../go.mod.
package verror

import "errors"

// ServerUnavailableError: the Venafi service cannot be reached.
var ServerUnavailableError = errors.New("server unavailable")
