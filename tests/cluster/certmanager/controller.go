package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	cliflag "k8s.io/component-base/cli/flag"

	config "github.com/cert-manager/cert-manager/internal/apis/config/controller"
	configscheme "github.com/cert-manager/cert-manager/internal/apis/config/controller/scheme"
	defaults "github.com/cert-manager/cert-manager/internal/apis/config/controller/v1alpha1"
	"github.com/cert-manager/cert-manager/internal/apis/config/controller/validation"
	"github.com/cert-manager/cert-manager/internal/controller/feature"
	"github.com/cert-manager/cert-manager/internal/pem"
	configv1alpha1 "github.com/cert-manager/cert-manager/pkg/apis/config/controller/v1alpha1"
	"github.com/cert-manager/cert-manager/pkg/controller"
	clusterissuerscontroller "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	"github.com/cert-manager/cert-manager/pkg/healthz"
	dnsutil "github.com/cert-manager/cert-manager/pkg/issuer/acme/dns/util"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/server"
	utilfeature "github.com/cert-manager/cert-manager/pkg/util/feature"

	// The controllers and issuers that register themselves, as in cert-manager's
	// cmd/controller (the other controllers are registered by these packages' imports).
	_ "github.com/cert-manager/cert-manager/pkg/controller/acmechallenges"
	_ "github.com/cert-manager/cert-manager/pkg/controller/acmeorders"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificate-shim/gateways"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificate-shim/ingresses"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/acme"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/vault"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/venafi"
)

// leaseName is the Lease cert-manager's controller holds (in --leader-election-namespace).
const leaseName = "cert-manager-controller"

// newControllerConfiguration is cert-manager's default ControllerConfiguration: the
// v1alpha1 defaults converted to the internal type, as cert-manager's controller starts.
func newControllerConfiguration() (*config.ControllerConfiguration, error) {
	scheme, _, err := configscheme.NewSchemeAndCodecs()
	if err != nil {
		return nil, err
	}
	versioned := &configv1alpha1.ControllerConfiguration{}
	scheme.Default(versioned)
	cfg := &config.ControllerConfiguration{}
	if err := scheme.Convert(versioned, cfg, nil); err != nil {
		return nil, err
	}
	return cfg, nil
}

// addControllerFlags adds the flags of cert-manager's controller that matter outside a
// cluster, with cert-manager's names and defaults (no --config, no ACME solver pods, no
// metrics TLS).
func addControllerFlags(fs *pflag.FlagSet, c *config.ControllerConfiguration) {
	fs.StringVar(&c.KubeConfig, "kubeconfig", c.KubeConfig, "path to a kubeconfig")
	fs.Float32Var(&c.KubernetesAPIQPS, "kube-api-qps", c.KubernetesAPIQPS, "maximum queries per second to the apiserver")
	fs.IntVar(&c.KubernetesAPIBurst, "kube-api-burst", c.KubernetesAPIBurst, "maximum burst of queries to the apiserver")
	fs.StringVar(&c.ClusterResourceNamespace, "cluster-resource-namespace", c.ClusterResourceNamespace, "namespace of the Secrets of ClusterIssuers")
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "limit cert-manager to one namespace (disables ClusterIssuers); empty: all namespaces")
	fs.BoolVar(&c.LeaderElectionConfig.Enabled, "leader-elect", c.LeaderElectionConfig.Enabled, "hold a Lease before running the controllers")
	fs.StringVar(&c.LeaderElectionConfig.Namespace, "leader-election-namespace", c.LeaderElectionConfig.Namespace, "namespace of the leader-election Lease "+leaseName)
	fs.DurationVar(&c.LeaderElectionConfig.LeaseDuration, "leader-election-lease-duration", c.LeaderElectionConfig.LeaseDuration, "leader-election lease duration")
	fs.DurationVar(&c.LeaderElectionConfig.RenewDeadline, "leader-election-renew-deadline", c.LeaderElectionConfig.RenewDeadline, "leader-election renew deadline")
	fs.DurationVar(&c.LeaderElectionConfig.RetryPeriod, "leader-election-retry-period", c.LeaderElectionConfig.RetryPeriod, "leader-election retry period")
	fs.StringSliceVar(&c.Controllers, "controllers", c.Controllers, "controllers to run: '*' is the on-by-default ones, '*,-foo' all but foo. All: "+strings.Join(defaults.AllControllers, ", "))
	fs.BoolVar(&c.ClusterIssuerAmbientCredentials, "cluster-issuer-ambient-credentials", c.ClusterIssuerAmbientCredentials, "let ClusterIssuers use ambient credentials")
	fs.BoolVar(&c.IssuerAmbientCredentials, "issuer-ambient-credentials", c.IssuerAmbientCredentials, "let Issuers use ambient credentials")
	fs.BoolVar(&c.EnableCertificateOwnerRef, "enable-certificate-owner-ref", c.EnableCertificateOwnerRef, "make Certificates owners of their Secrets")
	fs.StringSliceVar(&c.CopiedAnnotationPrefixes, "copied-annotation-prefixes", c.CopiedAnnotationPrefixes, "annotations copied from Certificates to CertificateRequests")
	fs.IntVar(&c.NumberOfConcurrentWorkers, "concurrent-workers", c.NumberOfConcurrentWorkers, "workers per controller")
	fs.IntVar(&c.MaxConcurrentChallenges, "max-concurrent-challenges", c.MaxConcurrentChallenges, "ACME challenges processed at once")
	fs.StringVar(&c.MetricsListenAddress, "metrics-listen-address", c.MetricsListenAddress, "metrics (plain HTTP) address; '0' disables it")
	fs.StringVar(&c.HealthzListenAddress, "internal-healthz-listen-address", c.HealthzListenAddress, "healthz (/livez) address")
	fs.DurationVar(&c.LeaderElectionConfig.HealthzTimeout, "internal-healthz-leader-election-timeout", c.LeaderElectionConfig.HealthzTimeout, "leader-election healthz timeout")
	fs.DurationVar(&c.CertificateRequestMinimumBackoffDuration, "certificate-request-minimum-backoff-duration", c.CertificateRequestMinimumBackoffDuration, "first back-off after a failed CertificateRequest")
	fs.DurationVar(&c.CertificateRequestMaximumBackoffDuration, "certificate-request-maximum-backoff-duration", c.CertificateRequestMaximumBackoffDuration, "largest back-off after failed CertificateRequests")
	fs.StringSliceVar(&c.ACMEDNS01Config.RecursiveNameservers, "dns01-recursive-nameservers", c.ACMEDNS01Config.RecursiveNameservers, "DNS-01 recursive nameservers")
	fs.Var(cliflag.NewMapStringBool(&c.FeatureGates), "feature-gates", "cert-manager feature gates, key=value pairs: "+strings.Join(utilfeature.DefaultFeatureGate.KnownFeatures(), "; "))
	logf.AddFlags(&c.Logging, fs)
}

// enabledControllers resolves --controllers as cert-manager's controller does.
func enabledControllers(c *config.ControllerConfiguration) sets.Set[string] {
	enabled := sets.New[string]()
	var disabled []string
	for _, name := range c.Controllers {
		switch {
		case name == "*":
			enabled.Insert(defaults.DefaultEnabledControllers...)
		case strings.HasPrefix(name, "-"):
			disabled = append(disabled, strings.TrimPrefix(name, "-"))
		default:
			enabled.Insert(name)
		}
	}
	if len(disabled) > 0 && enabled.Len() == 0 {
		enabled.Insert(defaults.DefaultEnabledControllers...)
	}
	if utilfeature.DefaultFeatureGate.Enabled(feature.ExperimentalCertificateSigningRequestControllers) {
		enabled.Insert(defaults.ExperimentalCertificateSigningRequestControllers...)
	}
	if c.Namespace != "" {
		enabled.Delete(defaults.ClusterScopedControllers...)
	}
	return enabled.Delete(disabled...)
}

func runController(ctx context.Context, args []string) error {
	log := logf.FromContext(ctx)
	cfg, err := newControllerConfiguration()
	if err != nil {
		return fmt.Errorf("default controller configuration: %w", err)
	}
	fs := pflag.NewFlagSet("canopy-certmanager controller", pflag.ContinueOnError)
	addControllerFlags(fs, cfg)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(cfg.FeatureGates); err != nil {
		return fmt.Errorf("feature gates: %w", err)
	}
	if errs := validation.ValidateControllerConfiguration(cfg, nil); len(errs) > 0 {
		return fmt.Errorf("error validating flags: %w", errs.ToAggregate())
	}
	if err := logf.ValidateAndApply(&cfg.Logging); err != nil {
		return fmt.Errorf("logging flags: %w", err)
	}
	log.Info("starting cert-manager controller", "version", certManagerVersion())
	return run(ctx, cfg)
}

// run is what cert-manager's controller Run does, less profiling, metrics TLS and the
// Gateway API shim: build the controller context, take the leader Lease, then start
// every enabled controller and the shared informers.
func run(rootCtx context.Context, opts *config.ControllerConfiguration) error {
	rootCtx, cancel := context.WithCancel(rootCtx)
	defer cancel()
	log := logf.FromContext(rootCtx)
	g, rootCtx := errgroup.WithContext(rootCtx)

	ctxFactory, err := newContextFactory(rootCtx, opts)
	if err != nil {
		return err
	}
	ctx, err := ctxFactory.Build()
	if err != nil {
		return err
	}
	pem.SetGlobalSizeLimits(pem.NewSizeLimitsFromConfig(
		opts.PEMSizeLimitsConfig.MaxCertificateSize,
		opts.PEMSizeLimitsConfig.MaxPrivateKeySize,
		opts.PEMSizeLimitsConfig.MaxChainLength,
		opts.PEMSizeLimitsConfig.MaxBundleSize,
	))

	enabled := enabledControllers(opts)
	log.Info("enabled controllers", "controllers", sets.List(enabled))

	if opts.MetricsListenAddress != "0" && opts.MetricsListenAddress != "" {
		ln, err := server.Listen(rootCtx, "tcp", opts.MetricsListenAddress)
		if err != nil {
			return fmt.Errorf("metrics listener %s: %w", opts.MetricsListenAddress, err)
		}
		ctx.Metrics.SetupACMECollector(ctx.SharedInformerFactory.Acme().V1().Challenges().Lister())
		ctx.Metrics.SetupCertificateCollector(ctx.SharedInformerFactory.Certmanager().V1().Certificates().Lister())
		ctx.Metrics.SetupIssuerCollector(ctx.SharedInformerFactory.Certmanager().V1().Issuers().Lister())
		if enabled.Has(clusterissuerscontroller.ControllerName) {
			ctx.Metrics.SetupClusterIssuerCollector(ctx.SharedInformerFactory.Certmanager().V1().ClusterIssuers().Lister())
		}
		srv := ctx.Metrics.NewServer(ln)
		log.Info("starting metrics server", "address", ln.Addr().String())
		g.Go(func() error {
			<-rootCtx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(shutdown) //nolint:contextcheck
		})
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}

	healthzServer := healthz.NewServer(opts.LeaderElectionConfig.HealthzTimeout)
	healthzLn, err := (&net.ListenConfig{}).Listen(rootCtx, "tcp", opts.HealthzListenAddress)
	if err != nil {
		return fmt.Errorf("healthz listener %s: %w", opts.HealthzListenAddress, err)
	}
	log.Info("starting healthz server", "address", healthzLn.Addr().String())
	g.Go(func() error { return healthzServer.Start(rootCtx, healthzLn) })

	elected := make(chan struct{})
	if opts.LeaderElectionConfig.Enabled {
		g.Go(func() error {
			return leaderElection(rootCtx, ctxFactory, opts, elected, healthzServer.LeaderHealthzAdaptor)
		})
	} else {
		close(elected)
	}
	select {
	case <-rootCtx.Done():
		return g.Wait()
	case <-elected:
	}

	names := make([]string, 0, len(controller.Known()))
	for n := range controller.Known() {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !enabled.Has(n) {
			continue
		}
		iface, err := controller.Known()[n](ctxFactory)
		if err != nil {
			cancel()
			_ = g.Wait()
			return fmt.Errorf("error starting controller %s: %w", n, err)
		}
		log.V(logf.InfoLevel).Info("starting controller", "controller", n)
		g.Go(func() error { return iface.Run(opts.NumberOfConcurrentWorkers, rootCtx) })
	}
	ctx.SharedInformerFactory.Start(rootCtx.Done())
	ctx.KubeSharedInformerFactory.Start(rootCtx.Done())
	ctx.HTTP01ResourceMetadataInformersFactory.Start(rootCtx.Done())
	log.Info("controllers started", "count", enabled.Len())

	err = g.Wait()
	ctx.HTTP01ResourceMetadataInformersFactory.Shutdown()
	ctx.KubeSharedInformerFactory.Shutdown()
	ctx.SharedInformerFactory.Shutdown()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("controller: %w", err)
	}
	log.Info("control loops exited")
	return nil
}

func newContextFactory(ctx context.Context, opts *config.ControllerConfiguration) (*controller.ContextFactory, error) {
	quantity := func(name, v string) (resource.Quantity, error) {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return q, fmt.Errorf("%s %q: %w", name, v, err)
		}
		return q, nil
	}
	h := opts.ACMEHTTP01Config
	reqCPU, err := quantity("acme-http01-solver-resource-request-cpu", h.SolverResourceRequestCPU)
	if err != nil {
		return nil, err
	}
	reqMem, err := quantity("acme-http01-solver-resource-request-memory", h.SolverResourceRequestMemory)
	if err != nil {
		return nil, err
	}
	limCPU, err := quantity("acme-http01-solver-resource-limits-cpu", h.SolverResourceLimitsCPU)
	if err != nil {
		return nil, err
	}
	limMem, err := quantity("acme-http01-solver-resource-limits-memory", h.SolverResourceLimitsMemory)
	if err != nil {
		return nil, err
	}
	nameservers := opts.ACMEDNS01Config.RecursiveNameservers
	if len(nameservers) == 0 {
		nameservers = dnsutil.RecursiveNameservers
	}
	return controller.NewContextFactory(ctx, controller.ContextOptions{
		Kubeconfig:         opts.KubeConfig,
		KubernetesAPIQPS:   opts.KubernetesAPIQPS,
		KubernetesAPIBurst: opts.KubernetesAPIBurst,
		APIServerHost:      opts.APIServerHost, //nolint:staticcheck // as cert-manager
		Namespace:          opts.Namespace,
		ACMEOptions: controller.ACMEOptions{
			HTTP01SolverResourceRequestCPU:    reqCPU,
			HTTP01SolverResourceRequestMemory: reqMem,
			HTTP01SolverResourceLimitsCPU:     limCPU,
			HTTP01SolverResourceLimitsMemory:  limMem,
			ACMEHTTP01SolverRunAsNonRoot:      h.SolverRunAsNonRoot,
			HTTP01SolverImage:                 h.SolverImage,
			HTTP01SolverNameservers:           h.SolverNameservers,
			HTTP01SolverExtraLabels:           h.SolverExtraLabels,
			HTTP01SolverRuntimeClassName:      h.SolverRuntimeClassName,
			DNS01Nameservers:                  nameservers,
			DNS01CheckRetryPeriod:             opts.ACMEDNS01Config.CheckRetryPeriod,
			DNS01CheckAuthoritative:           !opts.ACMEDNS01Config.RecursiveNameserversOnly,
		},
		SchedulerOptions: controller.SchedulerOptions{
			MaxConcurrentChallenges: opts.MaxConcurrentChallenges,
		},
		IssuerOptions: controller.IssuerOptions{
			ClusterIssuerAmbientCredentials: opts.ClusterIssuerAmbientCredentials,
			IssuerAmbientCredentials:        opts.IssuerAmbientCredentials,
			ClusterResourceNamespace:        opts.ClusterResourceNamespace,
		},
		IngressShimOptions: controller.IngressShimOptions{
			DefaultIssuerName:                 opts.IngressShimConfig.DefaultIssuerName,
			DefaultIssuerKind:                 opts.IngressShimConfig.DefaultIssuerKind,
			DefaultIssuerGroup:                opts.IngressShimConfig.DefaultIssuerGroup,
			DefaultAutoCertificateAnnotations: opts.IngressShimConfig.DefaultAutoCertificateAnnotations,
			ExtraCertificateAnnotations:       opts.IngressShimConfig.ExtraCertificateAnnotations,
			GatewayAPIExtraProtocols:          sets.New(opts.GatewayAPIConfig.ExtraProtocols...),
		},
		CertificateOptions: controller.CertificateOptions{
			EnableOwnerRef:                           opts.EnableCertificateOwnerRef,
			CopiedAnnotationPrefixes:                 opts.CopiedAnnotationPrefixes,
			CertificateRequestMinimumBackoffDuration: opts.CertificateRequestMinimumBackoffDuration,
			CertificateRequestMaximumBackoffDuration: opts.CertificateRequestMaximumBackoffDuration,
		},
		ConfigOptions: controller.ConfigOptions{
			EnableGatewayAPI:            opts.GatewayAPIConfig.Enabled,
			EnableGatewayAPIListenerSet: opts.GatewayAPIConfig.EnableListenerSet,
		},
	})
}

// leaderElection holds the Lease cert-manager-controller in --leader-election-namespace
// (as cert-manager: a Leases lock, identity HOSTNAME-external-cert-manager-controller),
// closing elected once it is the leader.
func leaderElection(ctx context.Context, f *controller.ContextFactory, opts *config.ControllerConfiguration, elected chan struct{}, wd *leaderelection.HealthzAdaptor) error {
	lctx, err := f.Build("leader-election")
	if err != nil {
		return err
	}
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	lock, err := resourcelock.NewWithLabels(resourcelock.LeasesResourceLock,
		opts.LeaderElectionConfig.Namespace, leaseName,
		lctx.Client.CoreV1(), lctx.Client.CoordinationV1(),
		resourcelock.ResourceLockConfig{Identity: host + "-external-cert-manager-controller", EventRecorder: lctx.Recorder},
		map[string]string{"app.kubernetes.io/managed-by": "cert-manager"},
	)
	if err != nil {
		return fmt.Errorf("leader-election lock: %w", err)
	}
	lost := make(chan error, 1)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   opts.LeaderElectionConfig.LeaseDuration,
		RenewDeadline:   opts.LeaderElectionConfig.RenewDeadline,
		RetryPeriod:     opts.LeaderElectionConfig.RetryPeriod,
		ReleaseOnCancel: true,
		WatchDog:        wd,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) {
				logf.FromContext(ctx).Info("acquired the leader lease", "namespace", opts.LeaderElectionConfig.Namespace, "lease", leaseName)
				close(elected)
			},
			OnStoppedLeading: func() {
				if ctx.Err() == nil {
					lost <- errors.New("leader election lost")
				}
			},
		},
	})
	if err != nil {
		return err
	}
	le.Run(ctx)
	select {
	case err := <-lost:
		return err
	default:
		return nil
	}
}
