// x509check verifies a certificate chain with Go's crypto/x509, the verifier istiod,
// Envoy's Go control plane, cert-manager and most Kubernetes tooling use. It is one of
// the three independent checkers (with OpenSSL and webpki) in canopy's tests.
//
// Usage: x509check -roots ROOTS.pem [-intermediates CHAIN.pem] [-dns NAME] LEAF.pem
//
// Exit 0 when the leaf verifies (printing "ok"), 1 when it does not (printing Go's
// reason), 2 on bad usage or unreadable input.
package main

import (
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	roots := flag.String("roots", "", "PEM file of trusted roots")
	inters := flag.String("intermediates", "", "PEM file of untrusted intermediates")
	dns := flag.String("dns", "", "DNS name the leaf must be valid for (optional)")
	flag.Parse()
	if *roots == "" || flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: x509check -roots ROOTS.pem [-intermediates CHAIN.pem] [-dns NAME] LEAF.pem")
		os.Exit(2)
	}
	rootPool := x509.NewCertPool()
	for _, c := range load(*roots) {
		rootPool.AddCert(c)
	}
	interPool := x509.NewCertPool()
	if *inters != "" {
		for _, c := range load(*inters) {
			interPool.AddCert(c)
		}
	}
	leaves := load(flag.Arg(0))
	if len(leaves) == 0 {
		fail(2, "no certificate in %s", flag.Arg(0))
	}
	// Any further certificates in the leaf file are intermediates (a chain file).
	for _, c := range leaves[1:] {
		interPool.AddCert(c)
	}
	_, err := leaves[0].Verify(x509.VerifyOptions{
		Roots:         rootPool,
		Intermediates: interPool,
		DNSName:       *dns,
		CurrentTime:   time.Now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		fail(1, "%v", err)
	}
	fmt.Println("ok")
}

func load(path string) []*x509.Certificate {
	data, err := os.ReadFile(path)
	if err != nil {
		fail(2, "%v", err)
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			fail(2, "%s: %v", path, err)
		}
		out = append(out, c)
	}
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(code)
}
