// Command canopy-certmanager runs the real cert-manager controller and webhook (the
// github.com/cert-manager/cert-manager module, at the version in go.mod) outside a cluster,
// against a canopy-testcluster, for canopy's tests:
//
//	canopy-certmanager controller --kubeconfig K --cluster-resource-namespace cert-manager ...
//	canopy-certmanager webhook --kubeconfig K --secure-port P --tls-cert-file C --tls-private-key-file K ...
//	canopy-certmanager crds      # prints the module's deploy/crds/*.yaml as one YAML stream
//	canopy-certmanager version   # prints the cert-manager module version
//
// The controller and webhook subcommands are small mains over cert-manager's own packages,
// doing what cert-manager's cmd/controller and cmd/webhook do (those are nested modules
// that the Go module proxy does not serve). See ../README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/cert-manager/cert-manager/internal/cmd/util"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
)

const certManagerModule = "github.com/cert-manager/cert-manager"

// certManagerDir is the cert-manager module's folder in the Go module cache, set by
// build.sh with -ldflags -X (go list -m -f '{{.Dir}}'), for the crds subcommand.
var certManagerDir string

func usage() {
	fmt.Fprintf(os.Stderr, `usage: canopy-certmanager COMMAND [flags]

commands:
  controller   the cert-manager controller (cert-manager's controllers, leader election)
  webhook      the cert-manager webhook (validation, mutation and conversion of its resources)
  crds         print cert-manager's CustomResourceDefinitions (deploy/crds of the module)
  version      print the cert-manager module version

Run 'canopy-certmanager COMMAND --help' for the flags of a command.
`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	switch cmd {
	case "crds":
		if err := printCRDs(); err != nil {
			fmt.Fprintf(os.Stderr, "canopy-certmanager crds: %v\n", err)
			os.Exit(1)
		}
		return
	case "version":
		fmt.Println(certManagerVersion())
		return
	case "controller", "webhook":
	case "-h", "--help", "help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "canopy-certmanager: unknown command %q\n", cmd)
		usage()
		os.Exit(2)
	}

	// As cert-manager's mains: the first SIGTERM/SIGINT cancels the context (a graceful
	// stop), a second one exits at once.
	ctx, exit := util.SetupExitHandler(context.Background(), util.GracefulShutdown)
	defer exit() // may call os.Exit, so deferred first

	logf.InitLogs()
	defer logf.FlushLogs()

	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	go watchParent(stop)

	var err error
	switch cmd {
	case "controller":
		ctx = logf.NewContext(ctx, logf.Log, "controller")
		err = runController(ctx, args)
	case "webhook":
		ctx = logf.NewContext(ctx, logf.Log, "webhook")
		err = runWebhook(ctx, args)
	}
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		logf.Log.Error(err, "error executing command", "command", cmd)
		util.SetExitCode(err)
	}
}

// watchParent stops the component, as SIGTERM would, once this process is re-parented:
// a killed test run leaves nothing behind.
func watchParent(stop context.CancelCauseFunc) {
	if os.Getenv("CANOPY_CERTMANAGER_KEEP_ORPHAN") != "" {
		return
	}
	ppid := os.Getppid()
	for range time.Tick(time.Second) {
		if os.Getppid() != ppid {
			fmt.Fprintf(os.Stderr, "canopy-certmanager: parent %d is gone: shutting down\n", ppid)
			stop(fmt.Errorf("parent process %d exited", ppid))
			return
		}
	}
}

// certManagerVersion is the version of the cert-manager module linked into this binary.
func certManagerVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range bi.Deps {
			if dep.Path == certManagerModule {
				if dep.Replace != nil {
					return dep.Replace.Version
				}
				return dep.Version
			}
		}
	}
	return "unknown"
}

// printCRDs writes deploy/crds/*.yaml of the cert-manager module, in name order, as one
// YAML stream (for kubectl apply --server-side -f -).
func printCRDs() error {
	if certManagerDir == "" {
		return fmt.Errorf("built without -X main.certManagerDir (build with tests/cluster/build.sh)")
	}
	dir := filepath.Join(certManagerDir, "deploy", "crds")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no CRDs in %s (the Go module cache was cleaned? run tests/cluster/build.sh again)", dir)
	}
	sort.Strings(files)
	var out strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		text := strings.TrimPrefix(string(data), "---\n")
		fmt.Fprintf(&out, "---\n# %s@%s %s\n%s", certManagerModule, certManagerVersion(), filepath.Base(f), text)
		if !strings.HasSuffix(text, "\n") {
			out.WriteString("\n")
		}
	}
	_, err = os.Stdout.WriteString(out.String())
	return err
}
