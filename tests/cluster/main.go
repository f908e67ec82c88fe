// Command canopy-testcluster runs a real Kubernetes control plane for canopy's tests in
// one process: embedded etcd plus the real kube-apiserver, with a generated PKI, an admin
// kubeconfig, a static token file and service-account token issuing. There is no
// controller-manager, scheduler or kubelet: see README.md for what that leaves out.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as the real binary
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as the real binary
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as the real binary

	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// state is kept in --dir/state.json so that a restart on the same --dir reuses the ports
// and the tokens of the first start.
type state struct {
	Port       int              `json:"port"`
	EtcdPort   int              `json:"etcd_port"`
	PeerPort   int              `json:"etcd_peer_port"`
	AdminToken string           `json:"admin_token"`
	Users      map[string]*user `json:"users"`
}

type user struct {
	Token  string   `json:"token"`
	Groups []string `json:"groups"`
}

// readyInfo is what --dir/ready.json says once /readyz answers ok.
type readyInfo struct {
	Name       string            `json:"name"`
	Server     string            `json:"server"`
	CAFile     string            `json:"ca_file"`
	Kubeconfig string            `json:"kubeconfig"`
	AdminToken string            `json:"admin_token"`
	Tokens     map[string]string `json:"tokens"`
	Issuer     string            `json:"issuer"`
	Etcd       string            `json:"etcd"`
	Pid        int               `json:"pid"`
	Dir        string            `json:"dir"`
	StartupMs  int64             `json:"startup_ms"`
}

var realStderr io.Writer = os.Stderr

func fatalf(format string, args ...any) {
	msg := fmt.Sprintf("canopy-testcluster: "+format+"\n", args...)
	fmt.Fprint(realStderr, msg)
	if realStderr != os.Stderr {
		fmt.Fprint(os.Stderr, msg)
	}
	os.Exit(1)
}

func main() {
	started := time.Now()
	var (
		name        = flag.String("name", "", "cluster name (required); default issuer is https://NAME.canopy.test")
		dir         = flag.String("dir", "", "data folder (required): PKI, etcd data, kubeconfig, logs, ready.json")
		port        = flag.Int("port", 0, "apiserver secure port on 127.0.0.1 (0: the one of a previous start in --dir, else a free one)")
		etcdPort    = flag.Int("etcd-port", 0, "etcd client port on 127.0.0.1 (0: as for --port)")
		issuer      = flag.String("issuer", "", "service-account issuer URL (default https://NAME.canopy.test)")
		audiences   = flag.String("api-audiences", "", "comma-separated API audiences (default: the issuer)")
		serviceCIDR = flag.String("service-cluster-ip-range", "10.0.0.0/24", "Service cluster IP range")
		runtimeCfg  = flag.String("runtime-config", "", "passed to kube-apiserver --runtime-config (e.g. certificates.k8s.io/v1beta1=true)")
		featureGate = flag.String("feature-gates", "", "passed to kube-apiserver --feature-gates (e.g. PodCertificateRequest=true)")
		verbose     = flag.Bool("v", false, "log to stderr instead of --dir/apiserver.log")
		logLevel    = flag.Int("log-level", 1, "kube-apiserver klog verbosity (--v)")
		timeout     = flag.Duration("timeout", 120*time.Second, "give up if not ready within this time")
		orphanExit  = flag.Bool("exit-with-parent", true, "shut down when the parent process dies (a killed test run leaves no cluster behind)")
		users       multiFlag
		extraArgs   multiFlag
	)
	flag.Var(&users, "user", "extra token-file user NAME[:GROUP1,GROUP2] (repeatable); its token is in ready.json")
	flag.Var(&extraArgs, "apiserver-arg", "extra kube-apiserver argument, e.g. --apiserver-arg=--v=4 (repeatable)")
	flag.Parse()
	if *name == "" || *dir == "" {
		fatalf("--name and --dir are required")
	}
	if *issuer == "" {
		*issuer = "https://" + *name + ".canopy.test"
	}
	if *audiences == "" {
		*audiences = *issuer
	}
	absDir, err := filepath.Abs(*dir)
	if err != nil {
		fatalf("%v", err)
	}
	*dir = absDir
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		fatalf("%v", err)
	}
	readyPath := filepath.Join(*dir, "ready.json")
	_ = os.Remove(readyPath)

	// klog writes to stderr (kube-apiserver has no --log-file any more): point fd 2 at
	// the log file, keeping the real stderr for our own fatal messages.
	if !*verbose {
		logf, err := os.OpenFile(filepath.Join(*dir, "apiserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			fatalf("%v", err)
		}
		saved, err := unix.Dup(2)
		if err != nil {
			fatalf("dup stderr: %v", err)
		}
		realStderr = os.NewFile(uintptr(saved), "stderr")
		if err := unix.Dup2(int(logf.Fd()), 2); err != nil {
			fatalf("dup2 log: %v", err)
		}
		fmt.Fprintf(os.Stderr, "==== canopy-testcluster %s starting at %s (pid %d)\n", *name, started.Format(time.RFC3339Nano), os.Getpid())
	}

	st, err := loadState(*dir, *port, *etcdPort, users)
	if err != nil {
		fatalf("state: %v", err)
	}

	serviceIP, err := firstIP(*serviceCIDR)
	if err != nil {
		fatalf("--service-cluster-ip-range: %v", err)
	}
	pki := newPKIFiles(*dir)
	if err := ensurePKI(pki, *name, serviceIP); err != nil {
		fatalf("pki: %v", err)
	}
	tokenFile := filepath.Join(*dir, "tokens.csv")
	if err := writeTokenFile(tokenFile, st); err != nil {
		fatalf("token file: %v", err)
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", st.Port)
	kubeconfig := filepath.Join(*dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, *name, server, pki); err != nil {
		fatalf("kubeconfig: %v", err)
	}

	etcd, err := startEtcd(filepath.Join(*dir, "etcd"), filepath.Join(*dir, "etcd.log"), st.EtcdPort, st.PeerPort)
	if err != nil {
		fatalf("etcd: %v", err)
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", st.EtcdPort)
	fmt.Fprintf(os.Stderr, "==== etcd ready at %s after %s\n", etcdURL, time.Since(started))

	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", st.Port),
		"--cert-dir=" + filepath.Join(*dir, "apiserver-certs"),
		"--tls-cert-file=" + pki.ServingCert,
		"--tls-private-key-file=" + pki.ServingKey,
		"--client-ca-file=" + pki.CACert,
		"--token-auth-file=" + tokenFile,
		"--authorization-mode=Node,RBAC",
		"--anonymous-auth=true",
		"--service-account-issuer=" + *issuer,
		"--service-account-key-file=" + pki.SAPub,
		"--service-account-signing-key-file=" + pki.SAKey,
		"--api-audiences=" + *audiences,
		"--service-cluster-ip-range=" + *serviceCIDR,
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--endpoint-reconciler-type=none",
		// On SIGTERM, end open watches after 2 s instead of letting net/http's Shutdown
		// wait for them (60 s): a restart with controllers watching (canopy, cert-manager)
		// then takes seconds, and the watchers see their streams cut as in a real rollout.
		"--shutdown-watch-termination-grace-period=2s",
		fmt.Sprintf("--v=%d", *logLevel),
	}
	if *runtimeCfg != "" {
		args = append(args, "--runtime-config="+*runtimeCfg)
	}
	if *featureGate != "" {
		args = append(args, "--feature-gates="+*featureGate)
	}
	args = append(args, extraArgs...)
	fmt.Fprintf(os.Stderr, "==== kube-apiserver %s\n", strings.Join(args, " "))

	// NewAPIServerCommand installs the SIGTERM/SIGINT handler: the first signal ends the
	// apiserver's context, and Execute returns once it has shut down.
	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(args)
	if *orphanExit {
		go watchParent()
	}
	apiDone := make(chan error, 1)
	go func() { apiDone <- cmd.Execute() }()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	readyErr := make(chan error, 1)
	go func() { readyErr <- waitReady(ctx, server, pki) }()

	select {
	case err := <-apiDone:
		cancel()
		etcd.Close()
		fatalf("kube-apiserver exited before ready: %v (see %s)", err, filepath.Join(*dir, "apiserver.log"))
	case err := <-readyErr:
		cancel()
		if err != nil {
			genericapiserver.RequestShutdown()
			waitStopped(apiDone)
			etcd.Close()
			fatalf("not ready: %v (see %s)", err, filepath.Join(*dir, "apiserver.log"))
		}
	}

	info := readyInfo{
		Name:       *name,
		Server:     server,
		CAFile:     pki.CACert,
		Kubeconfig: kubeconfig,
		AdminToken: st.AdminToken,
		Tokens:     map[string]string{},
		Issuer:     *issuer,
		Etcd:       etcdURL,
		Pid:        os.Getpid(),
		Dir:        *dir,
		StartupMs:  time.Since(started).Milliseconds(),
	}
	for n, u := range st.Users {
		info.Tokens[n] = u.Token
	}
	data, _ := json.MarshalIndent(info, "", "  ")
	if err := writeFileAtomic(readyPath, append(data, '\n'), 0o600); err != nil {
		fatalf("%v", err)
	}
	fmt.Fprintf(os.Stderr, "==== ready after %s\n", time.Since(started))
	fmt.Printf("ready %s\n", readyPath)

	err = <-apiDone
	fmt.Fprintf(os.Stderr, "==== kube-apiserver stopped: %v\n", err)
	_ = os.Remove(readyPath)
	etcd.Close()
	fmt.Fprintf(os.Stderr, "==== etcd stopped\n")
	if err != nil {
		os.Exit(1)
	}
}

// watchParent asks for a shutdown, as SIGTERM would, once this process is re-parented.
func watchParent() {
	ppid := os.Getppid()
	for range time.Tick(time.Second) {
		if os.Getppid() != ppid {
			fmt.Fprintf(os.Stderr, "==== parent %d is gone: shutting down\n", ppid)
			genericapiserver.RequestShutdown()
			return
		}
	}
}

func waitStopped(apiDone <-chan error) {
	select {
	case <-apiDone:
	case <-time.After(30 * time.Second):
	}
}

// waitReady polls /readyz with the admin client certificate, then grants anonymous read
// of the service-account issuer discovery documents.
func waitReady(ctx context.Context, server string, pki pkiFiles) error {
	client, err := adminHTTPClient(pki)
	if err != nil {
		return err
	}
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, server+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("/readyz: %s", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return ensureDiscoveryBinding(ctx, client, server)
}

func adminHTTPClient(pki pkiFiles) (*http.Client, error) {
	caPEM, err := os.ReadFile(pki.CACert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("bad CA file")
	}
	cert, err := tls.LoadX509KeyPair(pki.AdminCert, pki.AdminKey)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs:      pool,
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
		}},
	}, nil
}

const discoveryBinding = `{
  "apiVersion": "rbac.authorization.k8s.io/v1",
  "kind": "ClusterRoleBinding",
  "metadata": {"name": "canopy:service-account-issuer-discovery:unauthenticated"},
  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:service-account-issuer-discovery"},
  "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"}]
}`

func ensureDiscoveryBinding(ctx context.Context, client *http.Client, server string) error {
	url := server + "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(discoveryBinding))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("create discovery binding: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusConflict {
		return fmt.Errorf("create discovery binding: %d %s", resp.StatusCode, body)
	}
	return nil
}

func loadState(dir string, port, etcdPort int, users []string) (*state, error) {
	path := filepath.Join(dir, "state.json")
	st := &state{Users: map[string]*user{}}
	if data, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(data, st); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if st.Users == nil {
			st.Users = map[string]*user{}
		}
	}
	if port != 0 {
		st.Port = port
	}
	if etcdPort != 0 {
		st.EtcdPort = etcdPort
	}
	var need []*int
	for _, p := range []*int{&st.Port, &st.EtcdPort, &st.PeerPort} {
		if *p == 0 {
			need = append(need, p)
		}
	}
	if len(need) > 0 {
		ports, err := freePorts(len(need))
		if err != nil {
			return nil, err
		}
		for i, p := range need {
			*p = ports[i]
		}
	}
	if st.AdminToken == "" {
		st.AdminToken = randomToken()
	}
	for _, spec := range users {
		n, groups, _ := strings.Cut(spec, ":")
		if n == "" || strings.ContainsAny(n, ",\"\n") {
			return nil, fmt.Errorf("bad --user %q", spec)
		}
		var gs []string
		for _, g := range strings.Split(groups, ",") {
			if g = strings.TrimSpace(g); g != "" {
				gs = append(gs, g)
			}
		}
		if u, ok := st.Users[n]; ok {
			u.Groups = gs
		} else {
			st.Users[n] = &user{Token: randomToken(), Groups: gs}
		}
	}
	data, _ := json.MarshalIndent(st, "", "  ")
	return st, writeFileAtomic(path, data, 0o600)
}

// freePorts asks the kernel for n distinct free loopback ports, holding them all open
// until all are chosen.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// writeTokenFile writes the static token file: token,user,uid,"group1,group2".
func writeTokenFile(path string, st *state) error {
	var sb strings.Builder
	w := csv.NewWriter(&sb)
	rows := [][]string{{st.AdminToken, "admin-token", "admin-token", "system:masters"}}
	names := make([]string, 0, len(st.Users))
	for n := range st.Users {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		u := st.Users[n]
		row := []string{u.Token, n, n}
		if len(u.Groups) > 0 {
			row = append(row, strings.Join(u.Groups, ","))
		}
		rows = append(rows, row)
	}
	if err := w.WriteAll(rows); err != nil {
		return err
	}
	return writeFileAtomic(path, []byte(sb.String()), 0o600)
}

func writeKubeconfig(path, name, server string, pki pkiFiles) error {
	b64 := func(p string) (string, error) {
		data, err := os.ReadFile(p)
		return base64.StdEncoding.EncodeToString(data), err
	}
	ca, err := b64(pki.CACert)
	if err != nil {
		return err
	}
	cert, err := b64(pki.AdminCert)
	if err != nil {
		return err
	}
	key, err := b64(pki.AdminKey)
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: %[2]s
    certificate-authority-data: %[3]s
users:
- name: %[1]s-admin
  user:
    client-certificate-data: %[4]s
    client-key-data: %[5]s
contexts:
- name: %[1]s
  context:
    cluster: %[1]s
    user: %[1]s-admin
current-context: %[1]s
`, name, server, ca, cert, key)
	return writeFileAtomic(path, []byte(cfg), 0o600)
}
