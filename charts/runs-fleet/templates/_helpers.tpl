{{/* Names */}}
{{- define "runs-fleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "runs-fleet.fullname" -}}
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

{{- define "runs-fleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "runs-fleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include with (list $ "server") */}}
{{- define "runs-fleet.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "runs-fleet.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "runs-fleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "runs-fleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "runs-fleet.runnerServiceAccountName" -}}
{{- default (printf "%s-runner" (include "runs-fleet.fullname" .)) .Values.runner.serviceAccount.name }}
{{- end }}

{{- define "runs-fleet.placeholderPriorityClass" -}}
{{- printf "%s-%s-placeholder" (include "runs-fleet.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "runs-fleet.image" -}}
{{- printf "%s:%s" .Values.orchestrator.image.repository (default .Chart.AppVersion .Values.orchestrator.image.tag) }}
{{- end }}

{{/* Where each secret comes from: a dict of name, key for the GitHub App files, Valkey
URL and admin token. */}}
{{- define "runs-fleet.githubSecretName" -}}
{{- default (printf "%s-github" (include "runs-fleet.fullname" .)) .Values.github.existingSecret }}
{{- end }}

{{- define "runs-fleet.valkeyEnabled" -}}
{{- if and (eq .Values.mode "k8s") .Values.valkey.enabled (not .Values.valkey.externalUrl) (not .Values.valkey.existingSecret) }}true{{ end }}
{{- end }}

{{- define "runs-fleet.usesValkey" -}}
{{- if and (eq .Values.mode "k8s") (or .Values.valkey.enabled .Values.valkey.externalUrl .Values.valkey.existingSecret) }}true{{ end }}
{{- end }}

{{- define "runs-fleet.valkeySecretName" -}}
{{- if .Values.valkey.existingSecret }}
{{- .Values.valkey.existingSecret }}
{{- else }}
{{- printf "%s-valkey" (include "runs-fleet.fullname" .) }}
{{- end }}
{{- end }}

{{- define "runs-fleet.valkeySecretKey" -}}
{{- if .Values.valkey.existingSecret }}{{ .Values.valkey.existingSecretKey }}{{ else }}valkey-url{{ end }}
{{- end }}

{{- define "runs-fleet.adminSecretName" -}}
{{- default (printf "%s-admin" (include "runs-fleet.fullname" .)) .Values.orchestrator.adminToken.existingSecret }}
{{- end }}

{{- define "runs-fleet.hasAdminToken" -}}
{{- if or .Values.orchestrator.adminToken.value .Values.orchestrator.adminToken.existingSecret }}true{{ end }}
{{- end }}

{{/* The Valkey password of the chart's own Valkey: given, else the one already stored, else
a new one. */}}
{{- define "runs-fleet.valkeyPassword" -}}
{{- if .Values.valkey.password }}
{{- .Values.valkey.password }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "runs-fleet.valkeySecretName" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "valkey-password") }}
{{- index $existing.data "valkey-password" | b64dec }}
{{- else }}
{{- randAlphaNum 40 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Runner node selector and tolerations: the user's, plus the Karpenter NodePool's
labels and taints when the chart renders it. */}}
{{- define "runs-fleet.runnerNodeSelector" -}}
{{- $sel := deepCopy (default dict .Values.runner.nodeSelector) }}
{{- if .Values.karpenter.enabled }}
{{- $sel = merge $sel (default dict .Values.karpenter.nodePool.labels) }}
{{- end }}
{{- toJson $sel }}
{{- end }}

{{- define "runs-fleet.runnerTolerations" -}}
{{- $tols := list }}
{{- range .Values.runner.tolerations }}
{{- $tols = append $tols . }}
{{- end }}
{{- if .Values.karpenter.enabled }}
{{- range .Values.karpenter.nodePool.taints }}
{{- $tols = append $tols (dict "key" .key "operator" "Equal" "value" (toString (default "" .value)) "effect" .effect) }}
{{- end }}
{{- end }}
{{- toJson $tols }}
{{- end }}

{{/* Non-secret settings: the ConfigMap the orchestrator's containers take as environment.
Only settings the code reads for the mode; unset optional values are left out so the
code's defaults apply. */}}
{{- define "runs-fleet.settings" -}}
{{- $v := .Values -}}
{{- $s := dict "RUNS_FLEET_MODE" $v.mode -}}
{{- $_ := set $s "RUNS_FLEET_PUBLIC_URL" (trimSuffix "/" $v.orchestrator.publicUrl) -}}
{{- $_ = set $s "RUNS_FLEET_LOG_LEVEL" $v.orchestrator.logLevel -}}
{{- $_ = set $s "RUNS_FLEET_SHUTDOWN_DELAY_S" (toString $v.orchestrator.shutdownDelaySeconds) -}}
{{- if $v.github.appId }}{{ $_ = set $s "RUNS_FLEET_GITHUB_APP_ID" (toString $v.github.appId) }}{{ end -}}
{{- if $v.github.apiUrl }}{{ $_ = set $s "RUNS_FLEET_GITHUB_API_URL" $v.github.apiUrl }}{{ end -}}
{{- if not (kindIs "invalid" $v.github.runnerGroupId) }}{{ $_ = set $s "RUNS_FLEET_GITHUB_RUNNER_GROUP_ID" (toString $v.github.runnerGroupId) }}{{ end -}}
{{- if not (kindIs "invalid" $v.orchestrator.workerConcurrency) }}{{ $_ = set $s "RUNS_FLEET_WORKER_CONCURRENCY" (toString $v.orchestrator.workerConcurrency) }}{{ end -}}
{{- if $v.orchestrator.presets }}{{ $_ = set $s "RUNS_FLEET_PRESETS" (toJson $v.orchestrator.presets) }}{{ end -}}
{{- if not (kindIs "invalid" $v.scheduler.intervalSeconds) }}{{ $_ = set $s "RUNS_FLEET_SCHEDULER_INTERVAL_S" (toString $v.scheduler.intervalSeconds) }}{{ end -}}
{{- if not (kindIs "invalid" $v.scheduler.leaseSeconds) }}{{ $_ = set $s "RUNS_FLEET_SCHEDULER_LEASE_S" (toString $v.scheduler.leaseSeconds) }}{{ end -}}
{{- if not (kindIs "invalid" $v.runner.maxRuntimeSeconds) }}{{ $_ = set $s "RUNS_FLEET_AGENT_MAX_RUNTIME_S" (toString $v.runner.maxRuntimeSeconds) }}{{ end -}}
{{- if not (kindIs "invalid" $v.runner.defaultDiskGib) }}{{ $_ = set $s "RUNS_FLEET_DEFAULT_DISK_GIB" (toString $v.runner.defaultDiskGib) }}{{ end -}}
{{- if eq $v.mode "ec2" -}}
{{- $a := $v.aws -}}
{{- $_ = set $s "AWS_REGION" $a.region -}}
{{- $_ = set $s "RUNS_FLEET_QUEUE_URL" $a.queueUrl -}}
{{- if $a.queueDlqUrl }}{{ $_ = set $s "RUNS_FLEET_QUEUE_DLQ_URL" $a.queueDlqUrl }}{{ end -}}
{{- if $a.eventsQueueUrl }}{{ $_ = set $s "RUNS_FLEET_EVENTS_QUEUE_URL" $a.eventsQueueUrl }}{{ end -}}
{{- if $a.terminationQueueUrl }}{{ $_ = set $s "RUNS_FLEET_TERMINATION_QUEUE_URL" $a.terminationQueueUrl }}{{ end -}}
{{- $_ = set $s "RUNS_FLEET_PRIVATE_SUBNET_IDS" (join "," $a.privateSubnetIds) -}}
{{- $_ = set $s "RUNS_FLEET_SECURITY_GROUP_ID" $a.securityGroupId -}}
{{- $_ = set $s "RUNS_FLEET_INSTANCE_PROFILE_ARN" $a.instanceProfileArn -}}
{{- if $a.launchTemplateName }}{{ $_ = set $s "RUNS_FLEET_LAUNCH_TEMPLATE_NAME" $a.launchTemplateName }}{{ end -}}
{{- if $a.launchTemplateVersion }}{{ $_ = set $s "RUNS_FLEET_LAUNCH_TEMPLATE_VERSION" (toString $a.launchTemplateVersion) }}{{ end -}}
{{- if $a.jobsTable }}{{ $_ = set $s "RUNS_FLEET_JOBS_TABLE" $a.jobsTable }}{{ end -}}
{{- if $a.poolsTable }}{{ $_ = set $s "RUNS_FLEET_POOLS_TABLE" $a.poolsTable }}{{ end -}}
{{- if $a.locksTable }}{{ $_ = set $s "RUNS_FLEET_LOCKS_TABLE" $a.locksTable }}{{ end -}}
{{- if $a.circuitBreakerTable }}{{ $_ = set $s "RUNS_FLEET_CIRCUIT_BREAKER_TABLE" $a.circuitBreakerTable }}{{ end -}}
{{- if not (kindIs "invalid" $a.jobRetentionDays) }}{{ $_ = set $s "RUNS_FLEET_JOB_RETENTION_DAYS" (toString $a.jobRetentionDays) }}{{ end -}}
{{- $_ = set $s "RUNS_FLEET_SPOT_ENABLED" (toString $a.spotEnabled) -}}
{{- if $a.onDemandStrategy }}{{ $_ = set $s "RUNS_FLEET_EC2_ON_DEMAND_STRATEGY" $a.onDemandStrategy }}{{ end -}}
{{- if $a.rootDeviceName }}{{ $_ = set $s "RUNS_FLEET_EC2_ROOT_DEVICE_NAME" $a.rootDeviceName }}{{ end -}}
{{- if $a.tags }}{{ $_ = set $s "RUNS_FLEET_EC2_TAGS" (toJson $a.tags) }}{{ end -}}
{{- if $a.ssmPrefix }}{{ $_ = set $s "RUNS_FLEET_SSM_PREFIX" $a.ssmPrefix }}{{ end -}}
{{- if $a.ssmKmsKeyId }}{{ $_ = set $s "RUNS_FLEET_SSM_KMS_KEY_ID" $a.ssmKmsKeyId }}{{ end -}}
{{- with $a.circuitBreaker -}}
{{- if not (kindIs "invalid" .threshold) }}{{ $_ = set $s "RUNS_FLEET_CIRCUIT_BREAKER_THRESHOLD" (toString .threshold) }}{{ end -}}
{{- if not (kindIs "invalid" .windowS) }}{{ $_ = set $s "RUNS_FLEET_CIRCUIT_BREAKER_WINDOW_S" (toString .windowS) }}{{ end -}}
{{- if not (kindIs "invalid" .cooldownS) }}{{ $_ = set $s "RUNS_FLEET_CIRCUIT_BREAKER_COOLDOWN_S" (toString .cooldownS) }}{{ end -}}
{{- end -}}
{{- $_ = set $s "RUNS_FLEET_CLOUDWATCH_ENABLED" (toString $a.cloudwatch.enabled) -}}
{{- if $a.cloudwatch.namespace }}{{ $_ = set $s "RUNS_FLEET_CLOUDWATCH_NAMESPACE" $a.cloudwatch.namespace }}{{ end -}}
{{- if not (kindIs "invalid" $a.cloudwatch.intervalS) }}{{ $_ = set $s "RUNS_FLEET_CLOUDWATCH_INTERVAL_S" (toString $a.cloudwatch.intervalS) }}{{ end -}}
{{- end -}}
{{- if eq $v.mode "k8s" -}}
{{- $r := $v.runner -}}
{{- $_ = set $s "RUNS_FLEET_KUBE_NAMESPACE" .Release.Namespace -}}
{{- $_ = set $s "RUNS_FLEET_STATE_BACKEND" $v.kubernetes.stateBackend -}}
{{- if not (kindIs "invalid" $v.kubernetes.jobRetentionDays) }}{{ $_ = set $s "RUNS_FLEET_KUBE_JOB_RETENTION_DAYS" (toString $v.kubernetes.jobRetentionDays) }}{{ end -}}
{{- if not (kindIs "invalid" $v.kubernetes.timeoutSeconds) }}{{ $_ = set $s "RUNS_FLEET_KUBE_TIMEOUT_S" (toString $v.kubernetes.timeoutSeconds) }}{{ end -}}
{{- $_ = set $s "RUNS_FLEET_KUBE_RUNNER_IMAGE" $r.image -}}
{{- $_ = set $s "RUNS_FLEET_KUBE_SERVICE_ACCOUNT" (include "runs-fleet.runnerServiceAccountName" .) -}}
{{- $_ = set $s "RUNS_FLEET_KUBE_NODE_SELECTOR" (include "runs-fleet.runnerNodeSelector" .) -}}
{{- $_ = set $s "RUNS_FLEET_KUBE_TOLERATIONS" (include "runs-fleet.runnerTolerations" .) -}}
{{- $_ = set $s "RUNS_FLEET_KUBE_SPOT_SCHEDULING" $r.spotScheduling -}}
{{- if $r.familyLabel }}{{ $_ = set $s "RUNS_FLEET_KUBE_FAMILY_LABEL" $r.familyLabel }}{{ end -}}
{{- if $r.generationLabel }}{{ $_ = set $s "RUNS_FLEET_KUBE_GENERATION_LABEL" $r.generationLabel }}{{ end -}}
{{- $_ = set $s "RUNS_FLEET_KUBE_DIND" (toString $r.dind.enabled) -}}
{{- if and $r.dind.enabled $r.dind.image }}{{ $_ = set $s "RUNS_FLEET_KUBE_DIND_IMAGE" $r.dind.image }}{{ end -}}
{{- $_ = set $s "RUNS_FLEET_KUBE_JOB_TTL_S" (toString $r.jobTtlSeconds) -}}
{{- if $r.imagePullSecrets }}{{ $_ = set $s "RUNS_FLEET_KUBE_IMAGE_PULL_SECRETS" (join "," $r.imagePullSecrets) }}{{ end -}}
{{- if not (kindIs "invalid" $r.uid) }}{{ $_ = set $s "RUNS_FLEET_KUBE_RUNNER_UID" (toString $r.uid) }}{{ end -}}
{{- $_ = set $s "RUNS_FLEET_KUBE_POOL_PLACEHOLDERS" (toString $v.warmPool.placeholders) -}}
{{- if $v.warmPool.placeholders }}{{ $_ = set $s "RUNS_FLEET_KUBE_PLACEHOLDER_PRIORITY_CLASS" (include "runs-fleet.placeholderPriorityClass" .) }}{{ end -}}
{{- if $v.warmPool.placeholderImage }}{{ $_ = set $s "RUNS_FLEET_KUBE_PLACEHOLDER_IMAGE" $v.warmPool.placeholderImage }}{{ end -}}
{{- if not (kindIs "invalid" $v.warmPool.poolWaitSeconds) }}{{ $_ = set $s "RUNS_FLEET_KUBE_POOL_WAIT_S" (toString $v.warmPool.poolWaitSeconds) }}{{ end -}}
{{- end -}}
{{- toYaml $s -}}
{{- end }}

{{/* Secret files of the orchestrator: a projected volume and the *_FILE variables. */}}
{{- define "runs-fleet.secretsDir" -}}/var/run/secrets/runs-fleet{{- end }}

{{- define "runs-fleet.secretVolume" -}}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      - secret:
          name: {{ include "runs-fleet.githubSecretName" . }}
          items:
            - key: {{ ternary .Values.github.existingSecretKeys.privateKey "github-private-key" (not (empty .Values.github.existingSecret)) }}
              path: github/private-key
            - key: {{ ternary .Values.github.existingSecretKeys.webhookSecret "github-webhook-secret" (not (empty .Values.github.existingSecret)) }}
              path: github/webhook-secret
      {{- if include "runs-fleet.usesValkey" . }}
      - secret:
          name: {{ include "runs-fleet.valkeySecretName" . }}
          items:
            - key: {{ include "runs-fleet.valkeySecretKey" . }}
              path: valkey/url
      {{- end }}
      {{- if include "runs-fleet.hasAdminToken" . }}
      - secret:
          name: {{ include "runs-fleet.adminSecretName" . }}
          items:
            - key: {{ ternary .Values.orchestrator.adminToken.existingSecretKey "admin-token" (not (empty .Values.orchestrator.adminToken.existingSecret)) }}
              path: admin/token
      {{- end }}
{{- end }}

{{- define "runs-fleet.secretEnv" -}}
- name: RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE
  value: {{ include "runs-fleet.secretsDir" . }}/github/private-key
- name: RUNS_FLEET_GITHUB_WEBHOOK_SECRET_FILE
  value: {{ include "runs-fleet.secretsDir" . }}/github/webhook-secret
{{- if include "runs-fleet.usesValkey" . }}
- name: RUNS_FLEET_VALKEY_URL_FILE
  value: {{ include "runs-fleet.secretsDir" . }}/valkey/url
{{- end }}
{{- if include "runs-fleet.hasAdminToken" . }}
- name: RUNS_FLEET_ADMIN_TOKEN_FILE
  value: {{ include "runs-fleet.secretsDir" . }}/admin/token
{{- end }}
{{- end }}

{{/* Pod-level annotations shared by the server and the scheduler: a restart whenever the
settings or the chart's Secrets change. */}}
{{- define "runs-fleet.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
