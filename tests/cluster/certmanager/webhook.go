package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/cert-manager/cert-manager/internal/apis/config/webhook/validation"
	cmwebhook "github.com/cert-manager/cert-manager/internal/webhook"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	utilfeature "github.com/cert-manager/cert-manager/pkg/util/feature"
	"github.com/cert-manager/cert-manager/pkg/webhook/options"
)

// runWebhook is cert-manager's webhook command (cmd/webhook/app) without --config: the
// configuration is cert-manager's defaults plus cert-manager's own webhook flags
// (options.AddConfigFlags), and the server is cert-manager's NewCertManagerWebhookServer:
// the admission chain of the CertificateRequest identity plugin (fills spec.username,
// groups, uid, extra), the approval plugin (RBAC on signers for Approved/Denied) and
// resource validation and defaulting of all cert-manager.io and acme.cert-manager.io types.
//
// The webhook listens on all interfaces (cert-manager's server takes a port, no host).
func runWebhook(ctx context.Context, args []string) error {
	log := logf.FromContext(ctx)
	cfg, err := options.NewWebhookConfiguration()
	if err != nil {
		return fmt.Errorf("default webhook configuration: %w", err)
	}
	fs := pflag.NewFlagSet("canopy-certmanager webhook", pflag.ContinueOnError)
	options.AddConfigFlags(fs, cfg)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(cfg.FeatureGates); err != nil {
		return fmt.Errorf("feature gates: %w", err)
	}
	if errs := validation.ValidateWebhookConfiguration(cfg, nil); len(errs) > 0 {
		return fmt.Errorf("error validating flags: %w", errs.ToAggregate())
	}
	if err := logf.ValidateAndApply(&cfg.Logging); err != nil {
		return fmt.Errorf("logging flags: %w", err)
	}
	ctrl.SetLogger(logf.Log)

	log.Info("starting cert-manager webhook", "version", certManagerVersion(), "secure_port", cfg.SecurePort, "healthz_port", cfg.HealthzPort)
	srv, err := cmwebhook.NewCertManagerWebhookServer(log, *cfg)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}
