{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "canopy-issuer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: RELEASE-CHART, or RELEASE when it already holds the chart name.
*/}}
{{- define "canopy-issuer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The `helm.sh/chart` label value: CHART-VERSION.
*/}}
{{- define "canopy-issuer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels every object carries.
*/}}
{{- define "canopy-issuer.labels" -}}
helm.sh/chart: {{ include "canopy-issuer.chart" . }}
{{ include "canopy-issuer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: canopy
{{- end }}

{{/*
Labels that select the issuer's pods; they never change across upgrades.
*/}}
{{- define "canopy-issuer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "canopy-issuer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the issuer's ServiceAccount.
*/}}
{{- define "canopy-issuer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "canopy-issuer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the bootstrap Job and of its ServiceAccount, Role and ConfigMap.
*/}}
{{- define "canopy-issuer.bootstrapName" -}}
{{- printf "%s-bootstrap" (include "canopy-issuer.fullname" . | trunc 53 | trimSuffix "-") }}
{{- end }}

{{/*
The issuer image reference; a digest wins over a tag.
*/}}
{{- define "canopy-issuer.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Namespace whose Secrets ClusterIssuers may read.
*/}}
{{- define "canopy-issuer.clusterResourceNamespace" -}}
{{- default .Release.Namespace .Values.certManager.clusterResourceNamespace }}
{{- end }}

{{/*
"true" when one configured cluster is the one the chart is installed in: only then do the
issuer's controllers talk to this API server, so only then is a token mounted.
*/}}
{{/*
The signer names of the in-cluster cluster's pod certificate signer, one per line (empty
when it has none).
*/}}
{{- define "canopy-issuer.podCertificateSigners" -}}
{{- range .Values.clusters }}
{{- if and .inCluster .podCertificates }}
{{- range (default (list "canopy.dev/spiffe") .podCertificates.signerNames) }}
{{ . }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "canopy-issuer.inCluster" -}}
{{- $in := false }}
{{- range .Values.clusters }}
{{- if .inCluster }}{{ $in = true }}{{ end }}
{{- end }}
{{- if $in }}true{{ end }}
{{- end }}

{{/*
Checks the values the schema cannot: names that must refer to each other. Renders nothing.
*/}}
{{- define "canopy-issuer.validate" -}}
{{- $names := list }}
{{- range .Values.intermediates }}
{{- if has .name $names }}{{ fail (printf "intermediates: duplicate name %q" .name) }}{{ end }}
{{- $names = append $names .name }}
{{- end }}
{{- if and .Values.defaultIntermediate (not (has .Values.defaultIntermediate $names)) }}
{{- fail (printf "defaultIntermediate %q: no intermediate has this name" .Values.defaultIntermediate) }}
{{- end }}
{{- if and .Values.listen.intermediate (not (has .Values.listen.intermediate $names)) }}
{{- fail (printf "listen.intermediate %q: no intermediate has this name" .Values.listen.intermediate) }}
{{- end }}
{{- $clusters := list }}
{{- $inCluster := 0 }}
{{- range .Values.clusters }}
{{- if has .name $clusters }}{{ fail (printf "clusters: duplicate name %q" .name) }}{{ end }}
{{- $clusters = append $clusters .name }}
{{- if not (has .intermediate $names) }}
{{- fail (printf "clusters[%s].intermediate %q: no intermediate has this name" .name .intermediate) }}
{{- end }}
{{- if .inCluster }}{{ $inCluster = add1 $inCluster }}{{ end }}
{{- if and .inCluster .istio .istio.namespace (ne .istio.namespace $.Values.istio.namespace) }}
{{- fail (printf "clusters[%s].istio.namespace %q differs from istio.namespace %q, where the chart grants access to cacerts" .name .istio.namespace $.Values.istio.namespace) }}
{{- end }}
{{- end }}
{{- if gt $inCluster 1 }}
{{- fail "clusters: at most one cluster may set inCluster: true (the one the chart is installed in)" }}
{{- end }}
{{- end }}

{{/*
Where the pod finds each file the config names.
*/}}
{{- define "canopy-issuer.configDir" -}}/etc/canopy/config{{- end }}
{{- define "canopy-issuer.rootsDir" -}}/etc/canopy/roots{{- end }}
{{- define "canopy-issuer.dataDir" -}}/var/lib/canopy{{- end }}

{{/*
The issuer's config file (issuer/src/config.rs), rendered from values as YAML.
The PostgreSQL URL is not in it: the pod gets it from its Secret as CANOPY_STORAGE_URL,
and the URL below only names where it comes from.
*/}}
{{- define "canopy-issuer.config" -}}
{{- $fullname := include "canopy-issuer.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $names := list $fullname (printf "%s.%s" $fullname $ns) (printf "%s.%s.svc" $fullname $ns) (printf "%s.%s.svc.%s" $fullname $ns .Values.clusterDomain) }}
{{- $listen := dict "address" (printf "0.0.0.0:%d" (int .Values.listen.port)) "server_names" (concat $names .Values.listen.extraServerNames) "server_ips" .Values.listen.serverIps }}
{{- with .Values.listen.intermediate }}{{ $_ := set $listen "intermediate" . }}{{ end }}
{{- if .Values.listen.tls.existingSecret }}
{{- $_ := set $listen "tls" (dict "cert" (printf "/etc/canopy/tls/%s" .Values.listen.tls.certKey) "key" (printf "/etc/canopy/tls/%s" .Values.listen.tls.keyKey)) }}
{{- end }}
{{- $storage := dict "max_connections" (int .Values.storage.maxConnections) }}
{{- if eq .Values.storage.type "postgres" }}
{{- $_ := set $storage "url" "postgres://set-from-env.invalid/CANOPY_STORAGE_URL" }}
{{- else }}
{{- $_ := set $storage "url" (printf "sqlite://%s/%s" (include "canopy-issuer.dataDir" .) .Values.storage.sqlite.file) }}
{{- end }}
{{- $roots := list }}
{{- range .Values.roots.keys }}
{{- $roots = append $roots (printf "%s/%s" (include "canopy-issuer.rootsDir" $) .) }}
{{- end }}
{{- $intermediates := list }}
{{- range .Values.intermediates }}
{{- $dir := printf "/etc/canopy/intermediates/%s" .name }}
{{- $i := dict "name" .name "cert" (printf "%s/%s" $dir (default "tls.crt" .certKey)) "key" (printf "%s/%s" $dir (default "tls.key" .keyKey)) }}
{{- with .passphraseKey }}{{ $_ := set $i "passphrase_file" (printf "%s/%s" $dir .) }}{{ end }}
{{- $intermediates = append $intermediates $i }}
{{- end }}
{{- $clusters := list }}
{{- range .Values.clusters }}
{{- $c := dict "name" .name "intermediate" .intermediate }}
{{- if .inCluster }}
{{- $_ := set $c "in_cluster" true }}
{{- else if .kubeconfigSecret }}
{{- $_ := set $c "kubeconfig" (printf "/etc/canopy/clusters/%s/%s" .name (default "kubeconfig" .kubeconfigSecret.key)) }}
{{- with .context }}{{ $_ := set $c "context" . }}{{ end }}
{{- end }}
{{- with .jwt }}
{{- $jwt := dict "audiences" .audiences }}
{{- if not .issuer }}{{ fail (printf "clusters[%s].jwt.issuer: name the iss of the cluster's service-account tokens (its OIDC issuer URL)" $c.name) }}{{ end }}
{{- $_ := set $jwt "issuer" .issuer }}
{{- with .maxTokenLifetime }}{{ $_ := set $jwt "max_token_lifetime" . }}{{ end }}
{{- if .jwks }}
{{- $_ := set $jwt "jwks" .jwks }}
{{- else if .jwksConfigMap }}
{{- $_ := set $jwt "jwks_file" (printf "/etc/canopy/jwks/%s/%s" $c.name (default "jwks.json" .jwksConfigMap.key)) }}
{{- end }}
{{- $_ := set $c "jwt" $jwt }}
{{- end }}
{{- if hasKey . "istio" }}{{ $_ := set $c "istio" (default dict .istio) }}{{ end }}
{{- with .certManager }}
{{- if not .policy }}{{ fail (printf "clusters[%s].certManager.policy: name the policy the cert-manager controller signs under" $c.name) }}{{ end }}
{{- $cm := dict "policy" .policy "lease" (dict "namespace" $.Release.Namespace) "signing_requests" $.Values.certManager.csrApi.enabled }}
{{- with .maxRetry }}{{ $_ := set $cm "max_retry" . }}{{ end }}
{{- with .trustedRequesters }}{{ $_ := set $cm "trusted_requesters" . }}{{ end }}
{{- $_ := set $c "cert_manager" $cm }}
{{- end }}
{{- with .podCertificates }}
{{- if not .policy }}{{ fail (printf "clusters[%s].podCertificates.policy: name the policy pod certificates are decided under" $c.name) }}{{ end }}
{{- $pc := dict "policy" .policy "signer_names" (default (list "canopy.dev/spiffe") .signerNames) "lease" (dict "namespace" $.Release.Namespace) }}
{{- with .maxRetry }}{{ $_ := set $pc "max_retry" . }}{{ end }}
{{- $_ := set $c "pod_certificates" $pc }}
{{- end }}
{{- $c = mergeOverwrite $c (deepCopy (default dict .extra)) }}
{{- $clusters = append $clusters $c }}
{{- end }}
{{- $config := dict "trust_domain" .Values.trustDomain "listen" $listen "storage" $storage "roots" $roots "intermediates" $intermediates "clusters" $clusters "policies" .Values.policies }}
{{- with .Values.defaultIntermediate }}{{ $_ := set $config "default_intermediate" . }}{{ end }}
{{- with .Values.limits }}{{ $_ := set $config "limits" . }}{{ end }}
{{- $istio := deepCopy (default dict .Values.istio.config) }}
{{- $istioClusters := list }}
{{- range .Values.clusters }}{{ if and (hasKey . "istio") .inCluster }}{{ $istioClusters = append $istioClusters .name }}{{ end }}{{ end }}
{{- range .Values.clusters }}{{ if and (hasKey . "istio") (not .inCluster) }}{{ $istioClusters = append $istioClusters .name }}{{ end }}{{ end }}
{{- if and $istioClusters (not (hasKey $istio "lease")) }}
{{- /* Only the Lease holder syncs cacerts (replicas would each mint a mesh CA); the Lease
lives in this cluster when it syncs one, else in the first cluster that does. */}}
{{- $_ := set $istio "lease" (dict "cluster" (first $istioClusters) "namespace" $.Release.Namespace) }}
{{- end }}
{{- if $istio }}{{ $_ := set $config "istio" $istio }}{{ end }}
{{- $config = mergeOverwrite $config (deepCopy .Values.extraConfig) }}
{{- toYaml $config }}
{{- end }}

{{/*
Volumes holding the files the config names: roots, intermediates, kubeconfigs, JWKS, TLS.
*/}}
{{- define "canopy-issuer.fileVolumes" -}}
- name: roots
  {{- if .Values.roots.existingSecret }}
  secret:
    secretName: {{ .Values.roots.existingSecret }}
    defaultMode: 292 # 0444
  {{- else }}
  configMap:
    name: {{ .Values.roots.existingConfigMap }}
  {{- end }}
{{- range $i, $inter := .Values.intermediates }}
- name: intermediate-{{ $i }}
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 288 # 0440: owner and group (fsGroup) read
    items:
      - key: {{ default "tls.crt" .certKey }}
        path: {{ default "tls.crt" .certKey }}
      - key: {{ default "tls.key" .keyKey }}
        path: {{ default "tls.key" .keyKey }}
      {{- with .passphraseKey }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end }}
{{- range $i, $c := .Values.clusters }}
{{- if and (not .inCluster) .kubeconfigSecret }}
- name: kubeconfig-{{ $i }}
  secret:
    secretName: {{ .kubeconfigSecret.name }}
    defaultMode: 288 # 0440: owner and group (fsGroup) read
    items:
      - key: {{ default "kubeconfig" .kubeconfigSecret.key }}
        path: {{ default "kubeconfig" .kubeconfigSecret.key }}
{{- end }}
{{- if and .jwt (not .jwt.jwks) .jwt.jwksConfigMap }}
- name: jwks-{{ $i }}
  configMap:
    name: {{ .jwt.jwksConfigMap.name }}
    items:
      - key: {{ default "jwks.json" .jwt.jwksConfigMap.key }}
        path: {{ default "jwks.json" .jwt.jwksConfigMap.key }}
{{- end }}
{{- end }}
{{- if .Values.listen.tls.existingSecret }}
- name: tls
  secret:
    secretName: {{ .Values.listen.tls.existingSecret }}
    defaultMode: 288 # 0440: owner and group (fsGroup) read
    items:
      - key: {{ .Values.listen.tls.certKey }}
        path: {{ .Values.listen.tls.certKey }}
      - key: {{ .Values.listen.tls.keyKey }}
        path: {{ .Values.listen.tls.keyKey }}
{{- end }}
{{- end }}

{{/*
Mounts of the volumes above, all read-only.
*/}}
{{- define "canopy-issuer.fileMounts" -}}
- name: roots
  mountPath: {{ include "canopy-issuer.rootsDir" . }}
  readOnly: true
{{- range $i, $inter := .Values.intermediates }}
- name: intermediate-{{ $i }}
  mountPath: /etc/canopy/intermediates/{{ .name }}
  readOnly: true
{{- end }}
{{- range $i, $c := .Values.clusters }}
{{- if and (not .inCluster) .kubeconfigSecret }}
- name: kubeconfig-{{ $i }}
  mountPath: /etc/canopy/clusters/{{ .name }}
  readOnly: true
{{- end }}
{{- if and .jwt (not .jwt.jwks) .jwt.jwksConfigMap }}
- name: jwks-{{ $i }}
  mountPath: /etc/canopy/jwks/{{ .name }}
  readOnly: true
{{- end }}
{{- end }}
{{- if .Values.listen.tls.existingSecret }}
- name: tls
  mountPath: /etc/canopy/tls
  readOnly: true
{{- end }}
{{- end }}

{{/*
Environment of the issuer and the bootstrap Job.
*/}}
{{- define "canopy-issuer.env" -}}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- if eq .Values.storage.type "postgres" }}
- name: CANOPY_STORAGE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.storage.postgres.existingSecret }}
      key: {{ .Values.storage.postgres.key }}
{{- end }}
{{- end }}
