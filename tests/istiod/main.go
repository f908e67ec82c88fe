// canopy-istiod-ca loads a cluster's `cacerts` Secret the way istiod does and signs a
// workload CSR the way istio-agent asks, with istiod's own CA code
// (istio.io/istio/security/pkg/pki/ca). It is how canopy's tests learn what istiod
// makes of the Secret canopy wrote: whether it would start with it as a plugged-in CA,
// and whether what it signs verifies across clusters.
//
//	canopy-istiod-ca --kubeconfig K [--namespace istio-system] [--secret cacerts]
//	    --spiffe-id spiffe://TD/ns/NS/sa/SA [--ttl 1h] --out DIR
//
// It writes DIR/cacerts/* (the Secret's keys as files, as the kubelet mounts them at
// /etc/cacerts), DIR/workload-key.pem, DIR/workload-chain.pem (the chain istiod's CA
// server returns: leaf, cert-chain.pem, root last) and DIR/root-cert.pem, and prints a
// JSON summary. Exit 1 with istiod's error when istiod would not use the Secret.
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"istio.io/istio/security/pkg/pki/ca"
	"istio.io/istio/security/pkg/pki/util"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	namespace := flag.String("namespace", "istio-system", "istiod's namespace")
	secret := flag.String("secret", ca.CACertsSecret, "the plugged-in CA Secret")
	spiffeID := flag.String("spiffe-id", "", "the workload identity istio-agent asks for")
	ttl := flag.Duration("ttl", time.Hour, "requested workload certificate lifetime")
	out := flag.String("out", "", "output folder")
	flag.Parse()
	if *kubeconfig == "" || *spiffeID == "" || *out == "" {
		fail(2, "usage: canopy-istiod-ca --kubeconfig K --spiffe-id ID --out DIR [--namespace NS] [--secret NAME] [--ttl D]")
	}
	summary, err := run(*kubeconfig, *namespace, *secret, *spiffeID, *ttl, *out)
	if err != nil {
		fail(1, "%v", err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(summary)
}

type summary struct {
	Format       string   `json:"format"`
	SigningCA    string   `json:"signing_ca"`
	Root         string   `json:"root"`
	Leaf         string   `json:"leaf"`
	LeafURIs     []string `json:"leaf_uris"`
	LeafNotAfter string   `json:"leaf_not_after"`
	ChainLength  int      `json:"chain_length"`
}

func run(kubeconfig, namespace, name, spiffeID string, ttl time.Duration, out string) (*summary, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading %s/%s: %w", namespace, name, err)
	}
	// The volume istiod mounts at /etc/cacerts: one file per data key.
	dir := filepath.Join(out, "cacerts")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for k, v := range s.Data {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
			return nil, err
		}
	}
	bundle, format := detectSigningCABundle(dir)
	// istiod's choice (pilot/pkg/bootstrap/istio_ca.go createIstioCA): a complete
	// bundle is a plugged-in CA unless the Secret carries the "istio-generated" key,
	// which makes istiod treat it as its own self-signed CA; an incomplete one is an error.
	complete, exists := completeness(bundle)
	if !complete && exists {
		return nil, errors.New("failed to create an istiod CA: incomplete signing CA bundle detected")
	}
	if !complete {
		return nil, errors.New("no signing CA bundle: istiod would make its own self-signed CA")
	}
	if _, ok := s.Data[ca.IstioGenerated]; ok {
		return nil, fmt.Errorf("the Secret has the %q key: istiod would treat it as its self-signed CA", ca.IstioGenerated)
	}
	// istiod's defaults: DEFAULT_WORKLOAD_CERT_TTL 24h, MAX_WORKLOAD_CERT_TTL 90d, CITADEL_SELF_SIGNED_CA_RSA_KEY_SIZE 2048.
	opts, err := ca.NewPluggedCertIstioCAOptions(bundle, 24*time.Hour, 90*24*time.Hour, 2048)
	if err != nil {
		return nil, fmt.Errorf("failed to create an istiod CA: %v", err)
	}
	istioCA, err := ca.NewIstioCA(opts)
	if err != nil {
		return nil, fmt.Errorf("failed to create an istiod CA: %v", err)
	}
	// istio-agent's CSR (security/pkg/nodeagent/cache: GenCSR with the identity as Host,
	// ECDSA P-256 by default).
	csrPEM, keyPEM, err := util.GenCSR(util.CertOptions{Host: spiffeID, ECSigAlg: util.EcdsaSigAlg, ECCCurve: util.P256Curve})
	if err != nil {
		return nil, err
	}
	// istiod's CA server (security/pkg/server/ca/server.go CreateCertificate): Sign with
	// the caller's identity, then the leaf, cert-chain.pem and the root last.
	leaf, err := istioCA.Sign(csrPEM, ca.CertOpts{SubjectIDs: []string{spiffeID}, TTL: ttl, ForCA: false})
	if err != nil {
		return nil, fmt.Errorf("istiod refused to sign: %v", err)
	}
	_, _, chainPEM, rootPEM := istioCA.GetCAKeyCertBundle().GetAll()
	response := string(leaf)
	for _, c := range util.PemCertBytestoString(chainPEM) {
		response += c + "\n"
	}
	if err := os.WriteFile(filepath.Join(out, "workload-key.pem"), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(out, "workload-chain.pem"), []byte(response), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(out, "root-cert.pem"), rootPEM, 0o644); err != nil {
		return nil, err
	}
	leafCert, err := parse(leaf)
	if err != nil {
		return nil, err
	}
	signing, err := parse(mustRead(bundle.SigningCertFile))
	if err != nil {
		return nil, err
	}
	root, err := parse(rootPEM)
	if err != nil {
		return nil, err
	}
	var uris []string
	for _, u := range leafCert.URIs {
		uris = append(uris, u.String())
	}
	return &summary{
		Format:       format,
		SigningCA:    signing.Subject.String(),
		Root:         root.Subject.String(),
		Leaf:         leafCert.SerialNumber.Text(16),
		LeafURIs:     uris,
		LeafNotAfter: leafCert.NotAfter.UTC().Format(time.RFC3339),
		ChainLength:  1 + len(util.PemCertBytestoString(chainPEM)),
	}, nil
}

// detectSigningCABundle is istiod's detectSigningCABundleAndCRL (pilot/pkg/bootstrap,
// not importable without the whole of pilot): a kubernetes.io/tls layout when tls.crt
// exists, else the istiod layout.
func detectSigningCABundle(dir string) (ca.SigningCAFileBundle, string) {
	tlsCert := filepath.Join(dir, ca.TLSSecretCACertFile)
	if _, err := os.Stat(tlsCert); err == nil {
		return ca.SigningCAFileBundle{
			RootCertFile:    filepath.Join(dir, ca.TLSSecretRootCertFile),
			CertChainFiles:  []string{tlsCert, filepath.Join(dir, ca.TLSSecretRootCertFile)},
			SigningCertFile: tlsCert,
			SigningKeyFile:  filepath.Join(dir, ca.TLSSecretCAPrivateKeyFile),
		}, "kubernetes.io/tls"
	}
	return ca.SigningCAFileBundle{
		RootCertFile:    filepath.Join(dir, ca.RootCertFile),
		CertChainFiles:  []string{filepath.Join(dir, ca.CertChainFile)},
		SigningCertFile: filepath.Join(dir, ca.CACertFile),
		SigningKeyFile:  filepath.Join(dir, ca.CAPrivateKeyFile),
	}, "istiod"
}

// completeness is istiod's checkCABundleCompleteness.
func completeness(b ca.SigningCAFileBundle) (complete, exists bool) {
	has := func(p string) bool { _, err := os.Stat(p); return p != "" && err == nil }
	chain := len(b.CertChainFiles) > 0
	for _, f := range b.CertChainFiles {
		chain = chain && has(f)
	}
	key, cert, root := has(b.SigningKeyFile), has(b.SigningCertFile), has(b.RootCertFile)
	return key && cert && root && chain, key || cert || root || chain
}

func mustRead(p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		fail(1, "%v", err)
	}
	return b
}

func parse(p []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(p)
	if b == nil {
		return nil, errors.New("not PEM")
	}
	return x509.ParseCertificate(b.Bytes)
}

func fail(code int, format string, args ...any) {
	fmt.Fprintln(os.Stderr, strings.TrimSpace(fmt.Sprintf(format, args...)))
	os.Exit(code)
}
