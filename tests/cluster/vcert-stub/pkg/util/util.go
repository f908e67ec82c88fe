// Package util is a stand-in for vcert's util package: see ../../go.mod.
package util

import "net/http"

// IssuerHint names the CA a request is for.
type IssuerHint int

const (
	IssuerHintGeneric IssuerHint = iota
	IssuerHintMicrosoft
	IssuerHintDigicert
	IssuerHintEntrust
	IssuerHintAllIssuers
)

type userAgent struct {
	next http.RoundTripper
	ua   string
}

func (u userAgent) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", u.ua)
	return u.next.RoundTrip(r)
}

// UserAgentRoundTripper sets the User-Agent of every request.
func UserAgentRoundTripper(next http.RoundTripper, ua string) http.RoundTripper {
	return userAgent{next: next, ua: ua}
}
